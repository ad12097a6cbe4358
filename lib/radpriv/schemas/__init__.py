"""Label schemas as data files, and the one enum of label states used across the project.

A schema is a YAML file in this folder (or anywhere, loaded by path)::

    name: chexpert14
    title: CheXpert 14 observations (MIMIC-CXR)
    task: multilabel          # multilabel: a State per finding; single: one category per report
    citation: "..."
    findings:                 # for task: single these are the categories
      - id: cardiomegaly      # snake_case identifier used in columns and JSON answers
        label: Cardiomegaly   # the published name
        description: "..."    # one line shown to LLMs and in reports
        parent: null          # optional: id of the parent finding (sub-findings propagate up)
        aliases: [heart enlargement]   # optional: other dataset names for this label

Add a schema by dropping a YAML file here or passing its path; map a dataset's label names onto a
schema in the dataset's manifest (``label_map``) -- no code changes either way.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from radpriv import paths


class State(str, Enum):
    """The label state of one finding in one report. One enum across the whole project."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not_mentioned"

    @classmethod
    def parse(cls, value: object) -> "State":
        """Accept a State, its value, or common spellings (true/false/1/0/-1/blank)."""
        if isinstance(value, State):
            return value
        key = str(value).strip().lower()
        if key not in _STATE_SPELLINGS:
            key = key.replace(" ", "_").replace("-", "_")
        try:
            return _STATE_SPELLINGS[key]
        except KeyError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"{value!r} is not a label state (allowed: {allowed}, or true/false/uncertain/1/0/-1)") from None


_STATE_SPELLINGS = {
    **{s.value: s for s in State},
    "true": State.PRESENT, "yes": State.PRESENT, "1": State.PRESENT, "1.0": State.PRESENT, "positive": State.PRESENT,
    "false": State.ABSENT, "no": State.ABSENT, "0": State.ABSENT, "0.0": State.ABSENT, "negative": State.ABSENT,
    "negated": State.ABSENT,
    "-1": State.UNCERTAIN, "-1.0": State.UNCERTAIN, "possible": State.UNCERTAIN, "uncertain": State.UNCERTAIN,
    "": State.NOT_MENTIONED, "nan": State.NOT_MENTIONED, "none": State.NOT_MENTIONED,
    "not_mentioned": State.NOT_MENTIONED, "notmentioned": State.NOT_MENTIONED, "blank": State.NOT_MENTIONED,
}

#: Precedence when several states compete (e.g. a parent and its sub-findings).
STATE_PRECEDENCE = {State.PRESENT: 3, State.UNCERTAIN: 2, State.ABSENT: 1, State.NOT_MENTIONED: 0}

UNCERTAINTY_POLICIES = ("inclusive", "exclusive")


def to_binary(state: State | str, policy: str = "exclusive") -> int:
    """Map a state to 0/1. ``inclusive``: uncertain -> 1; ``exclusive``: uncertain -> 0."""
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty policy {policy!r} is not one of {UNCERTAINTY_POLICIES}")
    s = State.parse(state)
    if s is State.PRESENT:
        return 1
    if s is State.UNCERTAIN:
        return 1 if policy == "inclusive" else 0
    return 0


@dataclass(frozen=True)
class Finding:
    id: str
    label: str
    description: str = ""
    parent: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    name: str
    title: str
    task: str  # "multilabel" or "single"
    findings: tuple[Finding, ...]
    citation: str = ""
    path: Path | None = field(default=None, compare=False)
    #: who reads the reports, for the LLM prompt ("a cardiologist reading cardiac MRI reports")
    role: str = ""
    #: what to do with each report, for the LLM prompt (single-label: before the list of categories)
    instruction: str = ""

    # ---- lookups -------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    @property
    def labels(self) -> list[str]:
        return [f.label for f in self.findings]

    def finding(self, id_or_name: str) -> Finding:
        return self._by_id()[self.resolve(id_or_name)]

    def _by_id(self) -> dict[str, Finding]:
        return {f.id: f for f in self.findings}

    def resolve(self, name: str, label_map: Mapping[str, str] | None = None) -> str:
        """Map an id, published label, alias or manifest ``label_map`` key to the finding id."""
        if label_map and name in label_map:
            name = label_map[name]
        if name in self._by_id():
            return name
        key = _norm(name)
        for f in self.findings:
            if key in {_norm(f.id), _norm(f.label), *(_norm(a) for a in f.aliases)}:
                return f.id
        raise KeyError(f"{name!r} is not a finding of schema {self.name!r} (known: {', '.join(self.ids)})")

    def children(self, fid: str) -> list[str]:
        return [f.id for f in self.findings if f.parent == fid]

    def ancestors(self, fid: str) -> list[str]:
        out, cur = [], self._by_id()[fid].parent
        while cur:
            out.append(cur)
            cur = self._by_id()[cur].parent
        return out

    # ---- label logic ---------------------------------------------------------------------
    def propagate(self, labels: Mapping[str, State | str]) -> dict[str, State]:
        """A present or uncertain sub-finding makes its parent (and their parents) at least as strong.

        Absent / not-mentioned sub-findings never change the parent.
        """
        out = {k: State.parse(v) for k, v in labels.items()}
        for f in self.findings:
            s = out.get(f.id, State.NOT_MENTIONED)
            if s not in (State.PRESENT, State.UNCERTAIN):
                continue
            for anc in self.ancestors(f.id):
                cur = out.get(anc, State.NOT_MENTIONED)
                if STATE_PRECEDENCE[s] > STATE_PRECEDENCE[cur]:
                    out[anc] = s
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name, "title": self.title, "task": self.task, "citation": self.citation,
            **({"role": self.role} if self.role else {}), **({"instruction": self.instruction} if self.instruction else {}),
            "findings": [
                {k: v for k, v in {"id": f.id, "label": f.label, "description": f.description,
                                   "parent": f.parent, "aliases": list(f.aliases)}.items() if v}
                for f in self.findings
            ],
        }


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", str(s).lower())


_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class SchemaError(ValueError):
    """A schema file that cannot be used, with the file and the finding it concerns."""


def _close(name: object, options: list[str]) -> str:
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _parse(doc: dict, source: Path | None) -> Schema:
    where = str(source) if source else "<schema>"
    for key in ("name", "task", "findings"):
        if key not in doc:
            raise SchemaError(f"{where}: missing field {key!r}; see radpriv/schemas/__init__.py for the format")
    if doc["task"] not in ("multilabel", "single"):
        raise SchemaError(f"{where}: field 'task' must be 'multilabel' or 'single', got {doc['task']!r}")
    items = doc["findings"]
    if not isinstance(items, list) or not items:
        raise SchemaError(f"{where}: field 'findings' must be a non-empty list of findings "
                          "(- id: snake_case_id, label: Published name); see radpriv/schemas/__init__.py")
    findings, first_at = [], {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SchemaError(f"{where}: findings[{i}] must be a mapping with at least an id, got {item!r}")
        fid = item.get("id")
        if not fid or not _ID_RE.match(str(fid)):
            raise SchemaError(f"{where}: findings[{i}] field 'id' must be snake_case, got {fid!r}")
        if fid in first_at:
            raise SchemaError(f"{where}: findings[{i}] duplicate id {fid!r} (already used by findings[{first_at[fid]}]); "
                              "every finding needs its own id: rename one of them or merge the two entries")
        first_at[fid] = i
        findings.append(Finding(id=fid, label=item.get("label", fid), description=item.get("description", ""),
                                parent=item.get("parent"), aliases=tuple(item.get("aliases") or ())))
    ids = list(first_at)
    for i, f in enumerate(findings):
        if f.parent is not None and f.parent not in first_at:
            raise SchemaError(f"{where}: findings[{i}] ({f.id}) names unknown parent {f.parent!r}; a parent must be "
                              f"the id of another finding of this schema: {_close(f.parent, ids)}"
                              f"fix it, add finding {f.parent!r}, or remove the parent line")
    by_id = {f.id: f for f in findings}
    for i, f in enumerate(findings):  # cycle check (walk with a visited set: a cycle must not loop forever)
        seen, cur = [f.id], f.parent
        while cur is not None:
            if cur in seen:
                chain = " -> ".join([*seen, cur])
                raise SchemaError(f"{where}: findings[{i}] ({f.id}) parent cycle through {cur!r} ({chain}); "
                                  "parents must form a tree: remove one of the parent lines")
            seen.append(cur)
            cur = by_id[cur].parent
    return Schema(name=doc["name"], title=doc.get("title", doc["name"]), task=doc["task"],
                  findings=tuple(findings), citation=doc.get("citation", ""), path=source,
                  role=str(doc.get("role") or ""), instruction=str(doc.get("instruction") or ""))


def available_schemas() -> list[str]:
    return sorted(p.stem for p in paths.SCHEMAS.glob("*.yaml"))


def load_schema(name_or_path: str | Path) -> Schema:
    """Load a bundled schema by name (``chexpert14``) or any schema YAML by path."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = paths.SCHEMAS / f"{name_or_path}.yaml"
        if not p.exists():
            raise FileNotFoundError(
                f"no schema named {name_or_path!r}; bundled: {', '.join(available_schemas())}; "
                "or pass the path of your own schema YAML")
    elif not p.exists():
        raise FileNotFoundError(f"schema file {p} does not exist")
    try:
        with open(p, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise SchemaError(f"{p}: not valid YAML ({exc}); fix the file or see radpriv/schemas/__init__.py") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{p}: a schema file must be a mapping with name, task and findings")
    return _parse(doc, p)


def iter_states() -> Iterable[State]:
    return iter(State)
