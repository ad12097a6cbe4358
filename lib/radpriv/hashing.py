"""sha256 of files, with a sidecar so a 1 GB file is re-hashed only when it changed.

One helper for the whole library: model files (:mod:`radpriv.models`), data manifests
(:mod:`radpriv.data.manifest`), run records (:mod:`radpriv.run`) and the DP run cache all hash files
with :func:`file_sha256`. A file of at least :data:`SIDECAR_MIN_BYTES` gets a sidecar
``<file>.sha256`` (JSON: sha256, size, mtime_ns) when it lies under the models dir, else one in
``$RADPRIV_CACHE/hashes``; the sidecar is trusted only while size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from radpriv import paths

CHUNK = 1 << 20
_SIDECAR_SUFFIX = ".sha256"
#: files smaller than this are simply re-hashed (no sidecar clutter next to tokenizer/config files)
SIDECAR_MIN_BYTES = 8 * CHUNK



def _sidecar_candidates(path: Path) -> list[Path]:
    path = Path(path).absolute()
    key = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    fallback = paths.cache_dir() / "hashes" / f"{key}-{path.name}{_SIDECAR_SUFFIX}"
    try:
        in_models = path.resolve().is_relative_to(paths.models_dir().resolve())
    except OSError:
        in_models = False
    return [path.with_name(path.name + _SIDECAR_SUFFIX), fallback] if in_models else [fallback]


def _stat_key(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_sidecar(path: Path, st: os.stat_result) -> str | None:
    for side in _sidecar_candidates(path):
        try:
            doc = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and {k: doc.get(k) for k in ("size", "mtime_ns")} == _stat_key(st) \
                and re.fullmatch(r"[0-9a-f]{64}", str(doc.get("sha256", ""))):
            return doc["sha256"]
    return None


def write_sidecar(path: Path, sha256: str, st: os.stat_result) -> None:
    if st.st_size < SIDECAR_MIN_BYTES:
        return
    doc = json.dumps({"sha256": sha256, **_stat_key(st), "file": Path(path).name}) + "\n"
    for side in _sidecar_candidates(path):
        try:
            side.parent.mkdir(parents=True, exist_ok=True)
            tmp = side.with_name(side.name + f".tmp{os.getpid()}")
            tmp.write_text(doc)
            os.replace(tmp, side)
            return
        except OSError:
            continue  # read-only location: try the next; the sidecar is only an optimisation


def hash_file(path: Path, progress: bool = False) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    bar = None
    if progress and size > 64 * CHUNK:
        from radpriv.progress import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"sha256 {path.name}", leave=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return h.hexdigest()


def file_sha256(path: str | Path, progress: bool = False, use_sidecar: bool = True) -> str:
    """sha256 of a file; served from its sidecar when size and mtime are unchanged (else hashed and
    the sidecar refreshed). ``use_sidecar=False`` always re-hashes."""
    path = Path(path)
    st = path.stat()
    use_sidecar = use_sidecar and st.st_size >= SIDECAR_MIN_BYTES
    if use_sidecar:
        cached = read_sidecar(path, st)
        if cached:
            return cached
    sha = hash_file(path, progress=progress)
    if st.st_size >= SIDECAR_MIN_BYTES and path.stat().st_mtime_ns == st.st_mtime_ns:  # unchanged while hashing
        write_sidecar(path, sha, st)
    return sha
