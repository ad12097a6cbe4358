"""The Study 3 grid: every (mode, ε, seed) trained, scored on the test split and cached.

A run is cached on the hash of everything that determines it (:func:`run_key_parts` lists them, and every
cached record keeps that list under ``key_parts``):

* the training config (every field but the stamped radpriv ``version`` and ``memory_budget_gb``: mode, ε, δ,
  seed, batch sizes, rates, windows, LoRA settings, …) and the device the run really uses (a ``cuda`` config on a machine without CUDA
  trains on the CPU, and CPU and GPU numerics differ);
* the encoder: :func:`encoder_fingerprint`, the sha256 of every file of the checkpoint directory (weights,
  config, tokenizer), not just names and sizes;
* the training code: :data:`TRAINING_CODE_VERSION`, the sha256 of the source of ``dp/train.py``, ``dp/grid.py``
  and ``dp/accounting.py`` (and :data:`SCORING_CODE_VERSION`, of the bootstrap the F1 CIs come from and the threshold choice), so that
  any edit to the code that trains or scores a run invalidates the cached results instead of silently
  reusing results the edited code might no longer produce;
* the versions of the numerical libraries (torch, transformers, peft, opacus, numpy, scikit-learn, scipy, …);
* the data: texts (in order: order decides the batches) and labels of the training, validation and test
  splits (:meth:`Split.digest`). The label policy (exclusive/inclusive) and the teacher are captured
  through the 0/1 labels they produce. Report ids are NOT part of the key: neither training nor scoring reads
  them (the result of a split depends only on its texts, in order, and labels), so renaming reports reuses
  the cache, while changing a report's text or label does not;
* the initial weights (``init_key``: the public pre-training run's key, or a digest of ``init_state``) and the
  bootstrap settings (``n_resamples``; the bootstrap seed is the config's seed).

So a re-run of the notebook costs nothing and changing any input retrains only what it touches (the two
baseline rows, :func:`run_baselines`, take seconds and are not cached). Records are
written atomically (temporary file, fsync, rename): a run killed at any point leaves either no result or a
complete one, never a half-written file that a later run would read; leftover temporary files are never read
and unreadable cache files count as misses. An interrupted grid therefore resumes where it stopped.

Scoring: per-label thresholds are chosen on the validation split (max F1), then weighted and macro F1
on the test split with percentile-bootstrap 95 % CIs (:func:`radpriv.evaluate.bootstrap_metric`). The summary
(:func:`summarize`) shows, over several seeds, the mean of the per-seed F1 with a Student t interval over seeds,
and with one seed that seed's bootstrap CI; its ``interval`` column says which. :func:`trend_table` runs the
Kendall trend test across ε only with at least three ε values.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radpriv import paths
from radpriv.device import effective_device
from radpriv.dp.train import (MODES, TrainConfig, dp_tfidf_linear, predict_proba, state_digest, tfidf_logreg, train,
                              world_size)
from radpriv.evaluate.scoring import F1_THRESHOLD_GRID, binarize, bootstrap_metric, choose_thresholds


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _code_version(*modules: str) -> str:
    """sha256 over the names and source bytes of files of this package (``dp/train.py`` …)."""
    root = Path(__file__).resolve().parent.parent  # lib/radpriv
    h = hashlib.sha256()
    for rel in modules:
        h.update(rel.encode() + b"\x00" + hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()


#: Version of the code that trains and scores a run: the sha256 of the source of dp/train.py, dp/grid.py and
#: dp/accounting.py, computed once at import. It is part of every cache key, so ANY edit to these files
#: (a new default, a fixed bug, a different noise draw — or a comment) invalidates the cached runs instead of
#: silently reusing results that the edited code might not reproduce. Over-invalidation costs a re-run;
#: under-invalidation would put numbers in the report that the code no longer produces.
TRAINING_CODE_VERSION = _code_version("dp/train.py", "dp/grid.py", "dp/accounting.py")
#: the scoring code outside those files that a cached record's numbers depend on: the bootstrap of the F1 CIs
#: and the validation-chosen decision thresholds
SCORING_CODE_VERSION = _sha(inspect.getsource(bootstrap_metric), inspect.getsource(choose_thresholds),
                            F1_THRESHOLD_GRID.tobytes())
#: libraries whose versions change the numbers of a run (kernels, LoRA init, noise calibration, bootstrap)
_KEY_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "peft", "opacus", "dp-accounting", "numpy",
                  "scipy", "scikit-learn")
_library_versions_cache: dict | None = None


def library_versions() -> dict:
    """Installed versions of the libraries in :data:`_KEY_LIBRARIES` (computed once per process)."""
    global _library_versions_cache
    if _library_versions_cache is None:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for lib in _KEY_LIBRARIES:
            try:
                out[lib] = version(lib)
            except PackageNotFoundError:
                out[lib] = None
        _library_versions_cache = out
    return dict(_library_versions_cache)


def _fingerprinted(f: Path) -> bool:
    """Files of a checkpoint directory that are part of its fingerprint: all but hash sidecars (``*.sha256``,
    their temporary ``*.sha256.tmp<pid>``), lock files and interrupted downloads (``*.partial``)."""
    name = f.name
    return not (name.endswith(".sha256") or ".sha256.tmp" in name or name.endswith(".lock")
                or name.endswith(".partial"))


def _checkpoint_files(path: Path) -> list[tuple[str, Path]]:
    """(relative posix name, path) of every fingerprinted file under ``path``, sorted by name; symlinked
    files and directories are followed (each real directory once, so a symlink loop cannot recurse)."""
    out, seen = [], set()
    for root, dirs, names in os.walk(path, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in names:
            f = Path(root) / name
            if f.is_file() and _fingerprinted(f):
                out.append((f.relative_to(path).as_posix(), f))
    return sorted(out)


_fingerprint_cache: dict[tuple, str] = {}


def encoder_fingerprint(path: str | Path) -> str:
    """sha256 of a checkpoint directory: the sorted relative names of all its files (symlinks followed; see
    :func:`_fingerprinted` for the few bookkeeping files left out), each with the sha256 of its bytes.

    File hashes come from :func:`radpriv.hashing.file_sha256` with its sidecar, which is trusted only while
    the file's size and mtime are those it recorded (a byte written into a weights file changes its mtime, so
    the file is re-hashed); the result is also cached in-process on (directory, names, sizes, mtimes). Like
    the sidecar, this assumes nobody rewrites a file and then restores its old mtime."""
    from radpriv.hashing import file_sha256

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"encoder checkpoint {path} is not a directory")
    files = _checkpoint_files(path)
    stats = []
    for rel, f in files:
        st = f.stat()
        stats.append((rel, st.st_size, st.st_mtime_ns))
    memo = (str(path.resolve()), tuple(stats))
    if memo in _fingerprint_cache:
        return _fingerprint_cache[memo]
    h = hashlib.sha256(b"encoder-fingerprint-v2\x00")
    for rel, f in files:
        h.update(f"{rel}\x00{file_sha256(f, use_sidecar=True)}\n".encode())
    fp = h.hexdigest()
    _fingerprint_cache[memo] = fp
    return fp


@dataclass
class Split:
    """Texts and 0/1 labels of one split."""

    texts: list[str]
    Y: np.ndarray
    ids: list[str] = field(default_factory=list)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, label_ids: list[str], policy: str = "exclusive") -> "Split":
        return cls(frame["text"].astype(str).tolist(), binarize(frame, label_ids, policy),
                   frame["report_id"].astype(str).tolist())

    def digest(self) -> str:
        """sha256 of the texts (in order, JSON-encoded: unambiguous whatever they contain) and the labels (values
        as float32, and shape): everything of a split that training and scoring read. ``ids`` are left out on purpose:
        nothing reads them, so they cannot change a result (see the module docstring)."""
        Y = np.asarray(self.Y)
        return _sha("split-v2", json.dumps(list(self.texts)), Y.shape,
                    np.ascontiguousarray(Y, dtype=np.float32).tobytes())


def f1_scores(Y: np.ndarray, P: np.ndarray, th: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Weighted and macro F1 (labels present in the reference) with bootstrap CIs; per-label F1."""
    from sklearn.metrics import f1_score

    pred = (P >= th).astype(int)
    cols = np.flatnonzero(Y.sum(0) > 0)
    out = {}
    for avg in ("weighted", "macro"):
        v, lo, hi = bootstrap_metric(lambda i: f1_score(Y[i][:, cols], pred[i][:, cols], average=avg, zero_division=0),
                                     len(Y), n_resamples=n_resamples, seed=seed)
        out[f"{avg}_f1"], out[f"{avg}_f1_lo"], out[f"{avg}_f1_hi"] = v, lo, hi
    out["per_label_f1"] = f1_score(Y, pred, average=None, zero_division=0).tolist()
    return out


#: config fields that do not change a run's result, left out of its key: the stamped radpriv ``version`` (the code
#: itself is keyed by :data:`TRAINING_CODE_VERSION`, which a version bump alone does not change) and
#: ``memory_budget_gb``, which only decides how many reports go through the encoder at once (DP: the physical
#: batches a Poisson batch is split into before its one noisy step; non-private: gradient-accumulation
#: micro-batches): the same model up to float rounding (tests/test_dp_memory.py), so a run cached on a machine
#: with another budget is reused. The record keeps the budget and the physical batch it used.
_NOT_IN_KEY = ("version", "memory_budget_gb")


def _config_dict(cfg: TrainConfig) -> dict:
    """The config as the key holds it: every field but those of :data:`_NOT_IN_KEY`."""
    cfgd = json.loads(cfg.to_json())
    for name in _NOT_IN_KEY:
        cfgd.pop(name, None)
    return cfgd


def _common_parts(cfg: TrainConfig, encoder_path: str) -> dict:
    return {"config": _config_dict(cfg), "device": effective_device(cfg.device), "world_size": world_size(),
            "encoder": encoder_fingerprint(encoder_path), "training_code": TRAINING_CODE_VERSION,
            "scoring_code": SCORING_CODE_VERSION, "libraries": library_versions()}


def run_key_parts(cfg: TrainConfig, encoder_path: str, train_split: Split, val: Split, test: Split,
                  init_key: str = "", n_resamples: int = 1000, init_state: dict | None = None) -> dict:
    """Everything that determines the result of :func:`run_encoder` (the cache key hashes this dict).

    The initial weights enter as ``init_key`` (the key of the public pre-training run that produced them);
    when ``init_state`` is given without one, as a digest of the tensors themselves."""
    if init_state is not None and not init_key:
        init_key = "state:" + state_digest(init_state)
    return {"kind": "encoder-run-v2", **_common_parts(cfg, encoder_path), "train": train_split.digest(),
            "validation": val.digest(), "test": test.digest(), "init": init_key, "n_resamples": int(n_resamples)}


def run_key(cfg: TrainConfig, encoder_path: str, train_split: Split, val: Split, test: Split,
            init_key: str = "", n_resamples: int = 1000, init_state: dict | None = None) -> str:
    """The cache key of one encoder run: sha256 of :func:`run_key_parts`."""
    return _sha(json.dumps(run_key_parts(cfg, encoder_path, train_split, val, test, init_key, n_resamples,
                                         init_state), sort_keys=True))


def public_key_parts(cfg: TrainConfig, encoder_path: str, public: Split, val: Split) -> dict:
    """Everything that determines :func:`public_pretrain`'s weights."""
    return {"kind": "public-v2", **_common_parts(cfg, encoder_path), "public": public.digest(),
            "validation": val.digest()}


def public_key(cfg: TrainConfig, encoder_path: str, public: Split, val: Split) -> str:
    """The cache key of a public pre-training run: sha256 of :func:`public_key_parts`."""
    return _sha(json.dumps(public_key_parts(cfg, encoder_path, public, val), sort_keys=True))


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync, then rename over ``path``: a reader sees the
    old state or the complete new file, never part of one. The temporary name is per process (two processes
    computing the same run do not write into each other's file); one left by a killed process is never read
    (readers open only the final name) and is removed by the next successful write of that key."""
    tmp = path.with_name(f"{path.name}.{_tmp_tag(os.getpid())}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{path.name}.*.tmp"):  # leftovers of killed writers of this key
        pid, _, host = stale.name[len(path.name) + 1:-len(".tmp")].partition("@")
        if host == _HOST and pid.isdigit() and not _pid_alive(int(pid)):  # (a shared cache: only our host's)
            stale.unlink(missing_ok=True)


_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"


def _tmp_tag(pid: int) -> str:
    """``<pid>@<host>``: the writer of a temporary cache file."""
    return f"{pid}@{_HOST}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM)
        return True
    return True


def _read_record(path: Path, key: str) -> dict | None:
    """A cached record, or None when there is none or it is unreadable / not this key's (a miss: recomputed)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("key") == key else None


def run_encoder(cfg: TrainConfig, encoder_path: str, train_split: Split, val: Split, test: Split,
                init_state: dict | None = None, init_key: str = "", n_resamples: int = 1000,
                progress: bool = False, use_cache: bool = True) -> dict:
    """Train (or load from cache) one encoder configuration and score it on ``test``; ``cache_hit`` says which."""
    parts = run_key_parts(cfg, encoder_path, train_split, val, test, init_key, n_resamples, init_state)
    key = _sha(json.dumps(parts, sort_keys=True))
    path = paths.dp_runs_dir() / f"{key}.json"
    if use_cache:
        rec = _read_record(path, key)
        if rec is not None:
            rec["cache_hit"] = True
            return rec
    res = train(cfg, encoder_path, train_split.texts, train_split.Y, val.texts, val.Y, init_state=init_state,
                progress=progress)
    pv, pt = predict_proba(res, val.texts), predict_proba(res, test.texts)
    th = choose_thresholds(val.Y, pv, rule="f1")
    from sklearn.metrics import f1_score

    vcols = np.flatnonzero(np.asarray(val.Y).sum(0) > 0)
    val_f1 = float(f1_score(np.asarray(val.Y)[:, vcols], (pv >= th)[:, vcols], average="weighted", zero_division=0))
    rec = {"key": key, "key_parts": parts, "config": {**parts["config"], "memory_budget_gb": cfg.memory_budget_gb},
           "mode": cfg.mode,
           "epsilon": cfg.epsilon if cfg.private else math.inf,
           "seed": cfg.seed, "achieved_epsilon": res.epsilon, "accounting": res.accounting, "history": res.history,
           "train_seconds": res.seconds, "samples_per_second": res.samples_per_second, "n_train": res.n_train,
           "trunk_seconds": res.trunk_seconds,
           # reports per forward/backward pass actually used (memory budget) and the estimate behind it
           "physical_batch": res.physical_batch, "memory": res.memory,
           # validation F1 at the thresholds chosen on validation: optimistic, used only to choose between settings
           "val_weighted_f1": val_f1,
           "truncated": res.truncated, "thresholds": th.tolist(), "test_proba": pt.tolist(), "cache_hit": False,
           **f1_scores(test.Y, pt, th, n_resamples, cfg.seed)}
    if use_cache:
        text = json.dumps(rec, default=float)
        _atomic_write(path, lambda tmp: tmp.write_text(text))
    return rec


def public_pretrain(cfg: TrainConfig, encoder_path: str, public: Split, val: Split, progress: bool = False,
                    use_cache: bool = True) -> tuple[dict, str]:
    """Non-private fine-tuning on the PUBLIC corpus; returns merged weights and their cache key."""
    import torch

    if cfg.private:
        raise ValueError("the public stage is non-private by definition; use mode 'full' or 'lora'")
    key = public_key(cfg, encoder_path, public, val)
    path = paths.dp_runs_dir() / f"public-{key}.pt"
    if use_cache and path.exists():
        try:
            return torch.load(path, weights_only=True), key
        except Exception:  # unreadable (e.g. truncated by a crash of the storage): recompute and overwrite
            pass
    res = train(cfg, encoder_path, public.texts, public.Y, val.texts, val.Y, progress=progress)
    state = res.state_dict()
    if use_cache:
        _atomic_write(path, lambda tmp: torch.save(state, tmp))
    return state, key


def run_baselines(train_split: Split, val: Split, test: Split, public_texts: list[str], epsilons, seeds,
                  n_resamples: int = 1000) -> list[dict]:
    """The two cheap rows: TF-IDF + logistic regression (non-private), DP linear over public TF-IDF (each ε)."""
    rows = []
    t = time.time()
    proba, th = tfidf_logreg(train_split.texts, train_split.Y, val.texts, val.Y)
    rows.append({"mode": "tfidf-logreg", "epsilon": math.inf, "seed": 0, "train_seconds": time.time() - t,
                 "achieved_epsilon": math.inf, **f1_scores(test.Y, proba(test.texts), th, n_resamples)})
    for eps in epsilons:
        for seed in seeds:
            t = time.time()
            proba, th, got, acc = dp_tfidf_linear(public_texts, train_split.texts, train_split.Y, val.texts, val.Y,
                                                  epsilon=eps, seed=seed)
            rows.append({"mode": "dp-tfidf-linear", "epsilon": eps, "seed": seed, "train_seconds": time.time() - t,
                         "achieved_epsilon": got, "accounting": acc,
                         **f1_scores(test.Y, proba(test.texts), th, n_resamples, seed)})
    return rows


def mode_config(base: dict | None, by_mode: dict | None, mode: str, **fixed) -> TrainConfig:
    """The training config of one mode: ``base`` settings, then that mode's overrides from ``by_mode``
    (e.g. ``{"full": {"batch_size": 8}}``: more, smaller steps for non-private fine-tuning while DP
    keeps the large batches its noise needs), then ``fixed`` (mode, ε, seed)."""
    by_mode = dict(by_mode or {})
    unknown = set(by_mode) - set(MODES)
    if unknown:
        raise ValueError(f"train_by_mode names unknown modes {sorted(unknown)} (modes: {', '.join(MODES)})")
    return TrainConfig(**{**(base or {}), **by_mode.get(mode, {}), "mode": mode, **fixed})


def public_config(base: dict | None, by_mode: dict | None = None, public_mode: str = "full",
                  public_train: dict | None = None, public_epochs: int | None = None) -> TrainConfig:
    """The public stage's training config as :func:`run_grid` builds it: ``base`` without the learning rates and
    ``top_layers`` (the public mode's own), ``by_mode``'s overrides of ``public_mode``, then ``public_train``."""
    pbase = {k: v for k, v in (base or {}).items() if k not in ("lr", "head_lr", "top_layers")}
    return mode_config(pbase, by_mode, public_mode, epsilon=math.inf,
                       **{**(public_train or {}), **({"epochs": public_epochs} if public_epochs else {})})


def resolved_configs(runs: pd.DataFrame) -> dict:
    """Each mode's training settings as the runs used them (defaults filled in: learning rates, LoRA rank,
    physical batch size, …), ε and seed left out since they vary per row."""
    out = {}
    for mode, cfg in zip(runs["mode"], runs["config"] if "config" in runs else []):
        if isinstance(cfg, dict):
            out.setdefault(mode, {k: v for k, v in sorted(cfg.items()) if k not in ("epsilon", "seed")})
    return out


def run_grid(train_split: Split, val: Split, test: Split, encoder_path: str, modes, epsilons, seeds,
             base: dict | None = None, public: Split | None = None, public_mode: str = "full",
             public_epochs: int | None = None, n_resamples: int = 1000, progress: bool = True,
             by_mode: dict | None = None, public_train: dict | None = None,
             search: dict | None = None, random_init_modes=None) -> pd.DataFrame:
    """Every mode × ε × seed (non-private modes once per seed). With ``public``, DP modes are also run from
    weights first fine-tuned non-privately on the public corpus (rows tagged ``init='public'``).
    ``by_mode`` overrides ``base`` per mode (see :func:`mode_config`); ``public_train`` overrides the public
    stage's settings (e.g. ``{"top_layers": 2, "epochs": 3}``). ``random_init_modes``: with ``public``, the DP
    modes that are also run from the random init (the pretrained encoder without the public stage); None: all. Names
    of DP modes this grid does not run are allowed and have no effect.
    Non-private modes and runs without ``public`` always start from the random init.

    ``search``: per mode a list of candidate overrides (e.g. ``{"dp-head": [{"lr": 0.05}, {"lr": 0.2}]}``). Each
    candidate is trained and the one with the best **validation** weighted F1 is kept for that (mode, ε, init,
    seed); the test split never takes part in the choice. The row records ``candidates`` (how many were tried)
    and ``search`` (each candidate with its validation F1). The search itself is NOT covered by the run's ε: a
    reader must count it (see :func:`search_note`)."""
    from radpriv.progress import tqdm

    base = dict(base or {})
    search = dict(search or {})
    dp_modes = [m for m in MODES if m.startswith("dp")]
    if random_init_modes is not None and set(random_init_modes) - set(dp_modes):
        # a known DP mode that this grid does not run is fine (a profile's list outlives a user's own `modes`)
        raise ValueError(f"random_init_modes names unknown DP modes {sorted(set(random_init_modes) - set(dp_modes))}; "
                         f"use some of {', '.join(dp_modes)}, or null for all")
    unknown = set(search) - set(MODES)
    if unknown:
        raise ValueError(f"search names unknown modes {sorted(unknown)} (modes: {', '.join(MODES)})")
    jobs = []
    for seed in seeds:
        for mode in modes:
            for eps in (epsilons if mode.startswith("dp") else [math.inf]):
                if (public is None or not mode.startswith("dp") or random_init_modes is None
                        or mode in random_init_modes):
                    jobs.append((mode, eps, seed, "none"))
                if public is not None and mode.startswith("dp"):
                    jobs.append((mode, eps, seed, "public"))
    init_state, init_key = None, ""
    if public is not None:
        pcfg = public_config(base, by_mode, public_mode, public_train, public_epochs)
        init_state, init_key = public_pretrain(pcfg, encoder_path, public, val, progress=False)
    rows = []
    for mode, eps, seed, init in tqdm(jobs, desc="grid", disable=not progress):
        tried = []
        for extra in (search.get(mode) or [{}]):
            cfg = mode_config(base, by_mode, mode, epsilon=eps, seed=seed, **extra)
            rec = run_encoder(cfg, encoder_path, train_split, val, test,
                              init_state=init_state if init == "public" else None,
                              init_key=init_key if init == "public" else "", n_resamples=n_resamples)
            tried.append((extra, rec))
        best_extra, best = max(tried, key=lambda t: t[1].get("val_weighted_f1", -1.0))  # first best on ties
        rows.append({**best, "init": init, "candidates": len(tried), "chosen": best_extra,
                     "search": [{"settings": e, "val_weighted_f1": r.get("val_weighted_f1")} for e, r in tried]})
    return pd.DataFrame(rows)


def search_note(runs: pd.DataFrame) -> str:
    """A sentence on the hyper-parameter search behind the DP rows ("" when none was searched)."""
    if "candidates" not in runs:
        return ""
    dp = runs[runs["mode"].astype(str).str.startswith("dp") & (runs["candidates"].fillna(1) > 1)]
    if not len(dp):
        return ""
    counts = sorted({int(c) for c in dp["candidates"]})
    return (f"DP settings were chosen per (mode, ε, init, seed) among {' or '.join(map(str, counts))} candidates by "
            f"weighted F1 on the validation split; test reports took no part. The choice itself is not covered by "
            f"the ε shown: each candidate was trained on the same private reports, so by basic composition the "
            f"release of the chosen model is ({max(counts)}·ε, {max(counts)}·δ)-DP at worst, or ε plus a few units with "
            f"the random-search bound of Papernot & Steinke (2022), which needs a randomized number of candidates "
            f"that this fixed grid does not draw.")


#: confidence level of the interval over seeds in :func:`summarize`
SEED_CONFIDENCE = 0.95


def seed_interval(values, confidence: float = SEED_CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean of per-seed point estimates with its Student t interval over seeds:
    ``mean ± t_{(1+confidence)/2, n-1} · s / √n`` (``s`` the sample SD, ``n - 1`` degrees of freedom;
    ``scipy.stats.t``), clipped to [0, 1] since the values are F1 scores. Returns (mean, low, high, s);
    needs at least two seeds (one seed has no spread to estimate)."""
    from scipy import stats as sps

    v = np.asarray(values, float)
    if v.ndim != 1 or len(v) < 2 or not np.isfinite(v).all():
        raise ValueError(f"an interval over seeds needs at least two finite per-seed values, got {v.tolist()}")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, len(v) - 1)) * sd / math.sqrt(len(v))
    return mean, max(0.0, mean - half), min(1.0, mean + half), sd


def summarize(runs: pd.DataFrame, confidence: float = SEED_CONFIDENCE) -> pd.DataFrame:
    """One row per (mode, init, ε): weighted and macro F1 with an interval, the largest achieved ε, mean seconds.

    * Several seeds: the mean of the per-seed point estimates with a Student t interval over seeds
      (:func:`seed_interval`). The seed drives everything that varies between runs of one configuration (DP
      noise, Poisson batches, LoRA/head initialisation, shuffling), and the question the table answers is
      where that configuration's mean F1 lies; a pooled bootstrap of the test reports would hold the trained
      models fixed and so leave exactly that training variability out. The interval is conditional on the
      one test split all seeds share (each run's own bootstrap CI over test reports is in the per-run table).
    * One seed: that seed's percentile bootstrap CI over the test reports (``*_lo``/``*_hi`` of the run).

    The ``interval`` column says which, per row. A (mode, init, ε, seed) that occurs twice is refused."""
    g = runs.copy()
    g["init"] = g["init"].fillna("none") if "init" in g else "none"
    dup = g.duplicated(["mode", "init", "epsilon", "seed"], keep=False)
    if dup.any():
        first = g[dup].iloc[0]
        raise ValueError(f"summarize: {int(dup.sum())} runs share (mode, init, ε, seed), e.g. ({first['mode']}, "
                         f"{first['init']}, {first['epsilon']}, {first['seed']}); give each dataset its own mode name")
    level = f"{confidence:.0%}"
    rows = []
    for (mode, init, eps), grp in g.groupby(["mode", "init", "epsilon"], sort=False):
        n = len(grp)
        row = {"mode": mode, "init": init, "epsilon": eps, "seeds": n}
        for metric in ("weighted_f1", "macro_f1"):
            if n >= 2:
                mean, lo, hi, sd = seed_interval(grp[metric], confidence)
            else:
                r = grp.iloc[0]
                mean, lo, hi, sd = (float(r[metric]), float(r.get(f"{metric}_lo", np.nan)),
                                    float(r.get(f"{metric}_hi", np.nan)), float("nan"))
            row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi, f"{metric}_sd": sd})
        row["interval"] = (f"t {level} over {n} seeds" if n >= 2 else  # (short: tables show 50 characters)
                           f"bootstrap {level} CI of seed {grp['seed'].iloc[0]} (one seed)")
        row["achieved_epsilon"] = float(grp["achieved_epsilon"].max())
        row["train_seconds"] = float(grp["train_seconds"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def run_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run as one flat row (no arrays): its grid cell, F1 with its bootstrap CIs, the ε it achieved and
    the accountant's inputs (σ, q, steps, δ; DP encoder runs), the numbers :func:`summarize` and
    :func:`accounting_table` are computed from."""
    cols = ["dataset", "mode", "init", "epsilon", "seed", "weighted_f1", "weighted_f1_lo", "weighted_f1_hi",
            "macro_f1", "macro_f1_lo", "macro_f1_hi", "achieved_epsilon", "n_train", "train_seconds"]
    out = runs[[c for c in cols if c in runs]].copy()
    if "init" in out:
        out["init"] = out["init"].fillna("none")
    acc = runs["accounting"] if "accounting" in runs else pd.Series([None] * len(runs), index=runs.index)
    for key, name in (("target_epsilon", "target_epsilon"), ("noise_multiplier", "sigma"), ("sample_rate", "q"),
                      ("steps", "steps"), ("delta", "delta")):
        out[name] = [a.get(key) if isinstance(a, dict) else None for a in acc]
    return out.reset_index(drop=True)


def trend_table(runs: pd.DataFrame, y: str = "weighted_f1", by=("dataset", "mode", "init")) -> tuple[pd.DataFrame, str]:
    """Kendall trend of ``y`` across ε for each DP mode (rows whose mode starts with ``dp``; every seed's run
    is one point), run only where there are at least :data:`radpriv.evaluate.stats.TREND_MIN_LEVELS` distinct ε values. Returns the
    table and a sentence naming the groups left out and why ("" when none was)."""
    from radpriv.evaluate.stats import TREND_MIN_LEVELS, trend_test

    by = [c for c in by if c in runs]
    dp = runs[runs["mode"].astype(str).str.startswith("dp")].copy()
    if "init" in dp:
        dp["init"] = dp["init"].fillna("none")
    rows, skipped = [], []
    for key, g in (dp.groupby(by, sort=False) if len(dp) else []):
        key = key if isinstance(key, tuple) else (key,)
        levels = sorted(set(float(e) for e in g["epsilon"]))
        if len(levels) < TREND_MIN_LEVELS:
            skipped.append((" · ".join(str(k) for k in key), levels))
            continue
        res = trend_test(g["epsilon"], g[y])
        rows.append({**dict(zip(by, key)), "ε levels": res.pop("levels"), "runs": res.pop("n"), **res})
    note = ""
    if skipped:
        counts = sorted({len(lv) for _, lv in skipped})
        shown = ", ".join(f"{name} (ε = {', '.join(f'{e:g}' for e in lv)})" for name, lv in skipped)
        note = (f"No trend test is shown for {shown}: Kendall's τ across ε needs at least {TREND_MIN_LEVELS} "
                f"distinct ε values and {'these have' if len(skipped) > 1 else 'this has'} "
                f"{' or '.join(map(str, counts))}. With two levels and one run each, τ is ±1 and p = 1 whatever "
                f"the F1 values, so the test would say nothing; add ε values (the `full` profile has four) for a trend.")
    return pd.DataFrame(rows), note


def headline_run(runs: pd.DataFrame) -> dict:
    """The run whose inputs a notebook saves so a reader can recompute its F1: the first DP encoder run at the
    largest ε with random init and the smallest seed (the first run when no DP mode was trained)."""
    r = runs.copy()
    r["init"] = r["init"].fillna("none") if "init" in r else "none"
    dp = r[r["mode"].astype(str).str.startswith("dp") & (r["init"] == "none")]
    if len(dp):
        dp = dp[dp["epsilon"] == dp["epsilon"].max()]
        r = dp[dp["seed"] == dp["seed"].min()]
    return r.iloc[0].to_dict()


def accounting_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each DP run's ε from opacus beside the independent dp_accounting figures."""
    rows = []
    for _, r in runs.iterrows():
        acc = r.get("accounting")
        if not isinstance(acc, dict) or not acc:
            continue
        rows.append({"mode": r["mode"], "init": r.get("init", "none"), "seed": r["seed"],
                     "target ε": acc.get("target_epsilon", r["epsilon"]), "σ": acc.get("noise_multiplier"),
                     "q": acc.get("sample_rate"), "steps": acc.get("steps"), "δ": acc.get("delta"),
                     "opacus PRV": acc["opacus_prv"], "dp_accounting PLD": acc["dp_accounting_pld"],
                     "opacus RDP": acc["opacus_rdp"], "dp_accounting RDP": acc["dp_accounting_rdp"],
                     "PRV vs PLD": acc["prv_vs_pld"], "RDP vs RDP": acc["rdp_vs_rdp"], "ok": acc["ok"]})
    return pd.DataFrame(rows)


def prepare(ds, limit: int | None = None, policy: str = "exclusive") -> dict[str, Split]:
    """train/validation/test Splits of a multi-label dataset; ``limit`` caps each split (smoke runs)."""
    if ds.schema.task != "multilabel":
        raise ValueError(f"{ds.name}: Study 3 trains multi-label classifiers; schema {ds.schema.name} is single-label")
    out = {}
    for name in ("train", "validation", "test"):
        frame = ds.split(name)
        if len(frame) == 0:
            raise ValueError(f"{ds.name}: split {name!r} is empty; the manifest must assign train/validation/test")
        out[name] = Split.from_frame(frame.head(limit) if limit else frame, list(ds.schema.ids), policy)
    return out


def public_frame(schema, n: int = 300, seed: int = 1) -> pd.DataFrame | None:
    """The labelled public corpus as a frame (text and one state column per finding; the generator's split column
    kept), or None when no synthetic generator writes ``schema``. See :func:`public_corpus`."""
    from radpriv.data.synthetic import CORPORA, generate

    corpus = next((c for c, spec in CORPORA.items() if spec["schema"] == schema.name), None)
    return None if corpus is None else generate(corpus, n=n, seed=seed, canaries=False)


def public_corpus(schema, n: int = 300, seed: int = 1, labelled: bool = True) -> Split:
    """A PUBLIC corpus for the public-then-private option and the DP TF-IDF vocabulary: an independent synthetic
    draw (seed 1, not the embedded corpora's seed 0; no canaries) of the same schema, all splits pooled.

    A schema no generator writes (a user's own) has no labelled public corpus; with ``labelled=False`` (the
    TF-IDF vocabulary needs text only) the texts are an even draw from every synthetic corpus, labels all 0."""
    from radpriv.data.synthetic import CORPORA, generate

    frame = public_frame(schema, n=n, seed=seed)
    if frame is not None:
        return Split.from_frame(frame, list(schema.ids))
    if labelled:
        raise ValueError(f"no synthetic generator writes schema {schema.name!r} (available: "
                         f"{sorted({s['schema'] for s in CORPORA.values()})}); set public_then_private: false")
    per = max(10, n // len(CORPORA))  # (a generator needs at least 10 reports for its splits)
    texts = [t for c in CORPORA for t in generate(c, n=per, seed=seed, canaries=False)["text"].astype(str)]
    return Split(texts, np.zeros((len(texts), len(schema.ids)), dtype=np.int8), [])


def teacher_student(cfg: TrainConfig, encoder_path: str, reports: Split, teacher_Y: np.ndarray, val: Split,
                    test: Split, n_resamples: int = 1000) -> tuple[dict, dict]:
    """A student trained on a teacher's labels beside the same student trained on gold labels.

    ``teacher_Y``: the teacher's 0/1 label matrix, one row per report of ``reports`` (whose ``Y`` are the gold
    labels); the labels come in as data (Study 3 has them from a local LLM). Both runs are cached like any
    other (:func:`run_encoder`) and scored against the gold ``test`` labels. Returns (student, gold) records."""
    teacher_Y = np.asarray(teacher_Y)
    if teacher_Y.shape != np.asarray(reports.Y).shape:
        raise ValueError(f"teacher labels have shape {teacher_Y.shape}, the reports' gold labels "
                         f"{np.asarray(reports.Y).shape}")
    student = run_encoder(cfg, encoder_path, Split(reports.texts, teacher_Y, reports.ids), val, test,
                          n_resamples=n_resamples)
    return student, run_encoder(cfg, encoder_path, reports, val, test, n_resamples=n_resamples)
