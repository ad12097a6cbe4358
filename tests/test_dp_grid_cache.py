"""Study 3's run cache: every ingredient of a run is in its key, an identical call hits, a killed grid
resumes from its finished runs and gives the numbers of an uninterrupted one."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from radpriv import paths
from radpriv.dp import grid
from radpriv.dp.grid import Split, run_key
from radpriv.dp.train import TrainConfig
from radpriv.models import registry

ENC = registry.get_model("minilm-l6").local_path
TEXTS = ["No pleural effusion. Heart size normal.", "Large right pleural effusion with adjacent atelectasis.",
         "Cardiomegaly. Small left effusion.", "Lungs are clear.", "Moderate left pleural effusion.",
         "No acute cardiopulmonary process."]
Y = np.array([[0, 0], [1, 1], [1, 0], [0, 0], [1, 0], [0, 0]])


def _needs_encoder():
    if not ENC.is_dir():
        pytest.skip("minilm-l6 not fetched (make models-test)")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own run cache and hash-sidecar store (the model store stays where conftest put it)."""
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def enc_copy(tmp_path_factory):
    """A private copy of the MiniLM checkpoint (mtimes kept) whose bytes a test may change."""
    _needs_encoder()
    d = tmp_path_factory.mktemp("enc") / "minilm"
    shutil.copytree(ENC, d, copy_function=shutil.copy2,
                    ignore=shutil.ignore_patterns("*.sha256", "*.lock"))
    return d


def _splits():
    tr = Split(list(TEXTS), Y.copy(), [f"r{i}" for i in range(6)])
    va = Split(list(TEXTS[:4]), Y[:4].copy(), [f"v{i}" for i in range(4)])
    te = Split(list(TEXTS[2:]), Y[2:].copy(), [f"t{i}" for i in range(4)])
    return tr, va, te


def _cfg(**kw):
    return TrainConfig(**{"mode": "lora", "epochs": 1, "batch_size": 4, "max_length": 32, "stride": 8,
                          "max_chunks": 2, **kw})


def _key(enc, cfg=None, splits=None, **kw):
    tr, va, te = splits or _splits()
    return run_key(cfg or _cfg(), str(enc), tr, va, te, **kw)


# ------------------------------------------------------------------------------------ encoder fingerprint


def _flip_middle_byte(f: Path) -> None:
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert f.stat().st_size == size


def test_fingerprint_sees_a_flipped_weight_byte(enc_copy, monkeypatch):
    from radpriv.hashing import SIDECAR_MIN_BYTES, read_sidecar

    monkeypatch.setattr(grid, "_fingerprint_cache", {})  # hash through file_sha256 (and its sidecar) here
    weights = registry.hf_weight_files(enc_copy)[0]
    assert weights.stat().st_size >= SIDECAR_MIN_BYTES  # big enough for fetch to keep a sidecar
    before = grid.encoder_fingerprint(enc_copy)
    key_before = _key(enc_copy)
    assert read_sidecar(weights, weights.stat())  # the sidecar was written: it must not hide the change
    _flip_middle_byte(weights)
    try:
        after = grid.encoder_fingerprint(enc_copy)
        assert after != before
        assert _key(enc_copy) != key_before
    finally:
        _flip_middle_byte(weights)  # flip back: same bytes, same fingerprint (content, not mtime)
    assert grid.encoder_fingerprint(enc_copy) == before
    assert _key(enc_copy) == key_before


def test_fingerprint_is_every_files_sha256_and_ignores_bookkeeping(enc_copy, tmp_path):
    import hashlib

    from radpriv.hashing import file_sha256

    d = tmp_path / "enc"
    d.mkdir()
    for f in enc_copy.iterdir():
        (d / f.name).symlink_to(f)
    fp = grid.encoder_fingerprint(d)
    assert fp == grid.encoder_fingerprint(enc_copy)  # symlinked files and directories are followed
    files = sorted((f.relative_to(enc_copy).as_posix(), f) for f in enc_copy.rglob("*") if f.is_file())
    assert any("/" in rel for rel, _ in files)  # 1_Pooling/config.json: subdirectories count too
    h = hashlib.sha256(b"encoder-fingerprint-v2\x00")
    for rel, f in files:
        h.update(f"{rel}\x00{file_sha256(f, use_sidecar=False)}\n".encode())
    assert fp == h.hexdigest()
    # sidecars, their temporaries, lock files and partial downloads are not part of the checkpoint
    for name in ("model.safetensors.sha256", "model.safetensors.sha256.tmp123", ".minilm.lock", "x.partial"):
        (d / name).write_text("{}")
    assert grid.encoder_fingerprint(d) == fp
    (d / "tokenizer_config.json").unlink()  # a changed small file (the old fingerprint hashed those too)
    (d / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert grid.encoder_fingerprint(d) != fp
    (d / "tokenizer_config.json").unlink()
    (d / "tokenizer_config.json").symlink_to(enc_copy / "tokenizer_config.json")
    assert grid.encoder_fingerprint(d) == fp
    (d / "extra.txt").write_text("x")  # any other file is
    assert grid.encoder_fingerprint(d) != fp


def test_fingerprint_is_cached_in_process(enc_copy, monkeypatch):
    from radpriv import hashing

    grid.encoder_fingerprint(enc_copy)
    calls = []
    real = hashing.file_sha256
    monkeypatch.setattr(hashing, "file_sha256", lambda p, **kw: (calls.append(p), real(p, **kw))[1])
    grid.encoder_fingerprint(enc_copy)
    assert calls == []  # unchanged names, sizes, mtimes: not even the sidecars are read
    cfg = enc_copy / "config.json"
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    grid.encoder_fingerprint(enc_copy)
    assert len(calls) == len([f for f in enc_copy.rglob("*") if f.is_file()])  # a changed mtime: re-hashed


# ------------------------------------------------------------------------------------ the other ingredients


def _replace_split(which: int, **kw):
    s = list(_splits())
    s[which] = dataclasses.replace(s[which], **kw)
    return tuple(s)


CHANGES = {
    "config lr": lambda: {"cfg": _cfg(lr=1e-3)},
    "config max_length": lambda: {"cfg": _cfg(max_length=64)},
    "config device": lambda: {"cfg": _cfg(device="cuda")},
    "mode": lambda: {"cfg": _cfg(mode="dp-lora", epsilon=1.0)},
    "epsilon": lambda: {"cfg": _cfg(mode="dp-lora", epsilon=2.0), "_base": {"cfg": _cfg(mode="dp-lora", epsilon=1.0)}},
    "delta": lambda: {"cfg": _cfg(mode="dp-lora", epsilon=1.0, delta=1e-3),
                      "_base": {"cfg": _cfg(mode="dp-lora", epsilon=1.0)}},
    "seed": lambda: {"cfg": _cfg(seed=1)},
    "train text": lambda: {"splits": _replace_split(0, texts=TEXTS[:-1] + ["Lungs are clear!"])},
    "train order": lambda: {"splits": _replace_split(0, texts=TEXTS[::-1], Y=Y[::-1].copy())},
    "train label": lambda: {"splits": _replace_split(0, Y=np.where(np.arange(12).reshape(6, 2) == 5, 1 - Y, Y))},
    "validation text": lambda: {"splits": _replace_split(1, texts=TEXTS[1:5])},
    "validation label": lambda: {"splits": _replace_split(1, Y=1 - Y[:4])},
    "test text": lambda: {"splits": _replace_split(2, texts=TEXTS[:4])},
    "test label": lambda: {"splits": _replace_split(2, Y=1 - Y[2:])},
    "init key": lambda: {"init_key": "public-run-abc"},
    "init state": lambda: {"init_state": {"head.weight": __import__("torch").zeros(2, 384)}},
    "n_resamples": lambda: {"n_resamples": 999},
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_each_ingredient_changes_the_key(what):
    _needs_encoder()
    change = CHANGES[what]()
    base = change.pop("_base", {})
    k0 = _key(ENC, **base)
    assert _key(ENC, **base) == k0  # an identical call (fresh, equal objects) gives the same key: a hit
    assert _key(ENC, **{**base, **change}) != k0, what


def test_init_state_digest_sees_values():
    import torch

    _needs_encoder()
    a = _key(ENC, init_state={"head.weight": torch.zeros(2, 384)})
    assert _key(ENC, init_state={"head.weight": torch.zeros(2, 384)}) == a
    w = torch.zeros(2, 384)
    w[1, 7] = 1e-6
    assert _key(ENC, init_state={"head.weight": w}) != a
    assert _key(ENC, init_state={"head.weight": torch.zeros(2, 384)}, init_key="explicit") != a


def test_code_version_library_versions_and_device_are_in_the_key(monkeypatch):
    _needs_encoder()
    k0 = _key(ENC)
    monkeypatch.setattr(grid, "TRAINING_CODE_VERSION", "0" * 64)
    k1 = _key(ENC)
    assert k1 != k0
    monkeypatch.setattr(grid, "SCORING_CODE_VERSION", "1" * 64)
    k2 = _key(ENC)
    assert k2 != k1
    monkeypatch.setattr(grid, "_library_versions_cache", {**grid.library_versions(), "torch": "0.0.0"})
    k3 = _key(ENC)
    assert k3 != k2
    monkeypatch.setattr(grid, "effective_device", lambda name: "cuda:Some GPU")
    assert _key(ENC) != k3


def test_training_code_version_hashes_the_training_sources():
    import hashlib

    root = Path(grid.__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in ("dp/train.py", "dp/grid.py", "dp/accounting.py"):
        h.update(rel.encode() + b"\x00" + hashlib.sha256((root / rel).read_bytes()).digest())
    assert grid.TRAINING_CODE_VERSION == h.hexdigest()


def test_effective_device_is_what_training_uses():
    import torch

    assert grid.effective_device("cpu") == "cpu"
    if not torch.cuda.is_available():  # resolve_device falls back to the CPU, and so does the key
        assert grid.effective_device("cuda") == "cpu"


def test_what_does_not_change_a_result_keeps_the_key():
    """Report ids are read by neither training nor scoring, and the stamped radpriv version is covered by the
    code hash: changing them reuses the cache."""
    _needs_encoder()
    k0 = _key(ENC)
    tr, va, te = _splits()
    renamed = tuple(dataclasses.replace(s, ids=[i + "-renamed" for i in s.ids]) for s in (tr, va, te))
    assert _key(ENC, splits=renamed) == k0
    assert _key(ENC, cfg=_cfg(version="0.0.0-other")) == k0
    assert _key(ENC, splits=_replace_split(0, Y=Y.astype(bool))) == k0  # same labels, another dtype


def test_public_key_has_the_same_ingredients(monkeypatch):
    _needs_encoder()
    tr, va, _ = _splits()
    cfg = _cfg(mode="full")
    k0 = grid.public_key(cfg, str(ENC), tr, va)
    assert grid.public_key(cfg, str(ENC), *_splits()[:2]) == k0
    assert grid.public_key(_cfg(mode="full", seed=3), str(ENC), tr, va) != k0
    assert grid.public_key(cfg, str(ENC), _replace_split(0, Y=1 - Y)[0], va) != k0
    assert grid.public_key(cfg, str(ENC), tr, _replace_split(1, texts=TEXTS[1:5])[1]) != k0
    monkeypatch.setattr(grid, "TRAINING_CODE_VERSION", "0" * 64)
    assert grid.public_key(cfg, str(ENC), tr, va) != k0


# ------------------------------------------------------------------------------------ end to end


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "k.json"

    def half(tmp):
        tmp.write_text('{"key": "k", "weighted')
        raise KeyboardInterrupt  # interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        grid._atomic_write(target, half)
    assert list(tmp_path.iterdir()) == []
    dead = tmp_path / f"k.json.{grid._tmp_tag(_dead_pid())}.tmp"  # a killed writer's leftover: swept
    live = tmp_path / f"k.json.{grid._tmp_tag(os.getppid())}.tmp"  # a live writer's file is not
    other_host = tmp_path / f"k.json.{_dead_pid()}@some-other-host.tmp"  # nor one of another host (shared cache)
    for f in (dead, live, other_host):
        f.write_text("x")
    grid._atomic_write(target, lambda tmp: tmp.write_text('{"key": "k"}'))
    assert json.loads(target.read_text()) == {"key": "k"}
    assert not dead.exists() and live.exists() and other_host.exists()
    assert grid._read_record(target, "k") == {"key": "k"} and grid._read_record(target, "other") is None


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: one thread is much faster
    yield
    torch.set_num_threads(n)


def test_tiny_training_misses_then_hits_and_ignores_half_written_files(enc_copy, one_thread):
    """A real (tiny) run: a leftover temporary file of a killed writer and a truncated result file are never
    read; the run is computed, then an identical call is a cache hit with the same numbers."""
    tr, va, te = _splits()
    cfg = _cfg()
    key = run_key(cfg, str(enc_copy), tr, va, te, n_resamples=20)
    cache = paths.dp_runs_dir()
    stale = cache / f"{key}.json.{grid._tmp_tag(_dead_pid())}.tmp"
    stale.write_text('{"key": "' + key + '", "weighted_f1": 99')  # what a kill during the write leaves
    (cache / f"{key}.json").write_text(json.dumps({"key": key, "weighted_f1": 99.0})[:20])  # truncated
    t = time.time()
    first = grid.run_encoder(cfg, str(enc_copy), tr, va, te, n_resamples=20)
    print(f"\ntiny run: {time.time() - t:.1f} s, weighted F1 {first['weighted_f1']:.3f}")
    assert first["cache_hit"] is False and first["key"] == key and first["weighted_f1"] <= 1
    assert first["key_parts"]["training_code"] == grid.TRAINING_CODE_VERSION
    assert not stale.exists()  # the dead writer's leftover is cleaned up by the next write of the key
    again = grid.run_encoder(cfg, str(enc_copy), *_splits(), n_resamples=20)
    assert again["cache_hit"] is True
    for f in ("weighted_f1", "macro_f1", "thresholds", "test_proba", "key"):
        assert again[f] == first[f]
    assert [p.name for p in cache.iterdir()] == [f"{key}.json"]  # no temporary file left


# ------------------------------------------------------------------------------------ kill -9 and resume

GRID_SCRIPT = textwrap.dedent('''
    import json, math, sys, time
    import numpy as np
    from radpriv.data.synthetic import generate
    from radpriv.dp import grid
    from radpriv.schemas import load_schema

    enc, out = sys.argv[1], sys.argv[2]
    df = generate("cxr", n=80, seed=0, canaries=False)
    ids = list(load_schema("chexpert14").ids)
    tr, va, te = (grid.Split.from_frame(df[df["split"] == s].head(k), ids)
                  for s, k in (("train", 32), ("validation", 12), ("test", 12)))
    # tiny and cheap: 1 epoch of 4 Poisson batches; ε 0.1 and 0.5 keep opacus's noise search and the
    # accounting audit short (larger ε at q = 0.25 take 10-20 s of accounting alone)
    base = {"epochs": 1, "batch_size": 8, "max_length": 32, "stride": 8, "max_chunks": 1}
    modes, epsilons, seeds, n_resamples = ["lora", "dp-lora"], [0.1, 0.5], [0], 10
    keys = [grid.run_key(grid.mode_config(base, None, m, epsilon=e, seed=0), enc, tr, va, te, n_resamples=n_resamples)
            for m, e in (("lora", math.inf), ("dp-lora", 0.1), ("dp-lora", 0.5))]
    open(out + ".keys", "w").write(json.dumps(keys))
    t = time.time()
    runs = grid.run_grid(tr, va, te, enc, modes, epsilons, seeds, base=base, n_resamples=n_resamples, progress=False)
    cols = ["key", "mode", "epsilon", "cache_hit", "weighted_f1", "macro_f1", "thresholds", "test_proba",
            "achieved_epsilon", "per_label_f1"]
    rows = [{c: r[c] for c in cols} for r in runs.to_dict("records")]
    json.dump({"seconds": time.time() - t, "rows": rows}, open(out, "w"), default=float)
''')


def _grid_process(script: Path, cache: Path, out: Path) -> subprocess.Popen:
    # one thread: with other jobs on the 2 cores, 2 spinning OpenMP threads made training 10x slower. The same
    # for all three processes, so their float arithmetic is the same too
    env = {**os.environ, "RADPRIV_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(f"{out}.log", "w")  # a file, not a pipe: nobody reads while we wait, a full pipe would block it
    return subprocess.Popen([sys.executable, str(script), str(ENC), str(out)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _log(out: Path) -> str:
    return Path(f"{out}.log").read_text()[-3000:]


def _finish(proc: subprocess.Popen, out: Path) -> None:
    proc.wait(timeout=900)
    assert proc.returncode == 0, _log(out)


@pytest.mark.slow
def test_killed_grid_resumes_and_matches_an_uninterrupted_one(tmp_path):
    _needs_encoder()
    script = tmp_path / "grid_run.py"
    script.write_text(GRID_SCRIPT)
    killed_cache, fresh_cache = tmp_path / "killed", tmp_path / "fresh"
    runs_dir = killed_cache / "dp-runs"

    # 1. start the grid, SIGKILL it as soon as its first run is cached
    t0 = time.time()
    never = tmp_path / "never.json"
    proc = _grid_process(script, killed_cache, never)
    while not list(runs_dir.glob("*.json")):
        assert proc.poll() is None, _log(never)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t_kill = time.time() - t0
    keys = json.loads(Path(f"{never}.keys").read_text())
    done = sorted(p.stem for p in runs_dir.glob("*.json"))
    assert proc.returncode == -signal.SIGKILL and 1 <= len(done) < len(keys), done
    assert not never.exists()
    left_by_kill = sorted(p.name for p in runs_dir.glob("*.tmp"))
    # what a kill during a write leaves: a temporary file of the dead process (planted for each unfinished run)
    stale = [runs_dir / f"{k}.json.{grid._tmp_tag(proc.pid)}.tmp" for k in keys if k not in done]
    for p in stale:
        p.write_text('{"key": "truncated')

    # 2. the same grid again: finished runs are cache hits, the others are computed
    t = time.time()
    _finish(_grid_process(script, killed_cache, tmp_path / "resumed.json"), tmp_path / "resumed.json")
    t_resume = time.time() - t
    resumed = json.loads((tmp_path / "resumed.json").read_text())["rows"]
    assert [r["key"] for r in resumed] == keys
    assert [r["cache_hit"] for r in resumed] == [k in done for k in keys]
    assert not any(p.exists() for p in stale)

    # 3. an uninterrupted run in a fresh cache
    t = time.time()
    _finish(_grid_process(script, fresh_cache, tmp_path / "fresh.json"), tmp_path / "fresh.json")
    t_fresh = time.time() - t
    fresh = json.loads((tmp_path / "fresh.json").read_text())["rows"]
    assert not any(r["cache_hit"] for r in fresh)

    print(f"\nkill -9 after {t_kill:.1f} s with {len(done)}/{len(keys)} runs cached; resumed grid {t_resume:.1f} s "
          f"({sum(r['cache_hit'] for r in resumed)} cache hits, {sum(not r['cache_hit'] for r in resumed)} recomputed); "
          f"uninterrupted grid {t_fresh:.1f} s; temporary files the kill itself left: {left_by_kill or 'none'}")
    for a, b in zip(resumed, fresh):
        print(f"  {a['mode']:8s} eps={a['epsilon']:<5g} hit={a['cache_hit']!s:5s} weighted F1 resumed "
              f"{a['weighted_f1']:.6f} / uninterrupted {b['weighted_f1']:.6f}; macro {a['macro_f1']:.6f} / "
              f"{b['macro_f1']:.6f}; achieved eps {a['achieved_epsilon']:.4g}")
    for a, b in zip(resumed, fresh):
        assert a["key"] == b["key"]
        for f in ("weighted_f1", "macro_f1", "per_label_f1", "thresholds", "test_proba", "achieved_epsilon"):
            assert a[f] == b[f], (a["mode"], a["epsilon"], f)


def test_random_init_modes_choose_which_dp_modes_also_start_from_the_random_init(monkeypatch):
    """With a public corpus every DP mode runs from the public init; only ``random_init_modes`` also from the
    random one (None: all); non-private modes always once from the random init; a DP mode outside the grid has no effect; an unknown
    or non-private mode is refused."""
    seen = []

    def fake_run(cfg, encoder_path, train_split, val, test, init_state=None, init_key="", n_resamples=0):
        seen.append((cfg.mode, cfg.epsilon, "public" if init_state is not None else "none"))
        return {"mode": cfg.mode, "epsilon": cfg.epsilon, "val_weighted_f1": 0.5}

    monkeypatch.setattr(grid, "run_encoder", fake_run)
    monkeypatch.setattr(grid, "public_pretrain", lambda *a, **k: ({"w": 1}, "pub"))
    s = Split(["a", "b"], np.zeros((2, 1)), ["1", "2"])
    rows = grid.run_grid(s, s, s, "enc", ["full", "dp-lora", "dp-head"], [1.0, 10.0], [0], public=s,
                         random_init_modes=["dp-head"], progress=False)
    assert sorted(seen) == sorted([("full", math.inf, "none")]
                                  + [(m, e, "public") for m in ("dp-lora", "dp-head") for e in (1.0, 10.0)]
                                  + [("dp-head", e, "none") for e in (1.0, 10.0)])
    assert len(rows) == len(seen) and set(rows["init"]) == {"none", "public"}
    seen.clear()
    grid.run_grid(s, s, s, "enc", ["dp-lora"], [1.0], [0], public=s, progress=False)
    assert sorted(seen) == [("dp-lora", 1.0, "none"), ("dp-lora", 1.0, "public")]
    # a profile's random_init_modes naming a DP mode the user's own `modes` dropped (README worked example)
    seen.clear()
    grid.run_grid(s, s, s, "enc", ["lora", "dp-lora"], [1.0], [0], public=s, random_init_modes=["dp-head"],
                  progress=False)
    assert sorted(seen) == [("dp-lora", 1.0, "public"), ("lora", math.inf, "none")]
    with pytest.raises(ValueError, match=r"random_init_modes names unknown DP modes \['dp-ful', 'lora'\]; use some of "
                                         r"dp-lora, dp-full, dp-head, or null for all"):
        grid.run_grid(s, s, s, "enc", ["dp-lora"], [1.0], [0], public=s, random_init_modes=["dp-ful", "lora"])
