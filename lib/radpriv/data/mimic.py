"""MIMIC-CXR free-text reports: find the FINDINGS and IMPRESSION sections.

The reports tree is ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt``. Section headers vary (``FINDINGS:``,
``FINDINGS AND IMPRESSION:``, ``IMPRESSION:``, upper or mixed case, wrapped lines); when neither
section exists the last paragraph is used, as in the MIMIC-CXR section-parsing reference code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from radpriv.data.errors import DataError

_HEADER = re.compile(r"^\s*([A-Z][A-Z /&]+?)\s*:", re.MULTILINE)


def sections(text: str) -> dict[str, str]:
    """Split a report into {normalised header: body}; text before the first header goes to 'preamble'."""
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    if not matches:
        return {"preamble": " ".join(text.split())}
    out["preamble"] = " ".join(text[: matches[0].start()].split())
    for m, nxt in zip(matches, matches[1:] + [None]):
        name = " ".join(m.group(1).lower().split())
        body = text[m.end(): nxt.start() if nxt else len(text)]
        out[name] = (out.get(name, "") + " " + " ".join(body.split())).strip()
    return out


def findings_impression(text: str) -> str:
    s = sections(text)
    parts = []
    for key in ("findings", "findings and impression", "impression", "conclusion"):
        if s.get(key):
            parts.append(f"{key.upper()}: {s[key]}")
    if parts:
        return "\n".join(parts)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return " ".join(paragraphs[-1].split()) if paragraphs else ""


def read_reports(root: Path) -> pd.DataFrame:
    """Read every sXXXXXXXX.txt below ``root`` into (study_id, subject_id, text)."""
    rows = []
    for p in sorted(Path(root).rglob("s*.txt")):
        subject = p.parent.name.lstrip("p")
        raw = p.read_bytes()
        try:
            txt = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(p, f"bytes that are not valid UTF-8 at byte offset {exc.start}", row=1, field="text") from None
        rows.append({"study_id": p.stem.lstrip("s"), "subject_id": subject, "text": findings_impression(txt)})
    if not rows:
        raise DataError(root, "no report files (s*.txt) found below this folder", field="files[0].path",
                        hint="point MIMIC_CXR_ROOT at the folder holding files/p10 ... p19")
    return pd.DataFrame(rows)
