"""The Study 3 grid: every (mode, ε, seed) trained, scored on the test split and cached.

A run is cached on the hash of everything that determines it — the training config, the encoder's
files, the training texts and labels, the validation/test texts and the initial weights — so a re-run
of the notebook costs nothing and changing any input retrains only what it touches.

Scoring: per-label thresholds are chosen on the validation split (max F1), then weighted and macro F1
on the test split with percentile-bootstrap 95 % CIs (:func:`radpriv.evaluate.bootstrap_metric`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radpriv.dp.train import MODES, TrainConfig, predict_proba, tfidf_logreg, dp_tfidf_linear, train, tune_thresholds
from radpriv.evaluate.scoring import binarize, bootstrap_metric


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def encoder_fingerprint(path: str | Path) -> str:
    """Hash of a checkpoint directory's files (names, sizes, and the bytes of the small ones)."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}".encode())
        if st.st_size < (1 << 20):
            h.update(f.read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    root = Path(os.environ.get("RADPRIV_CACHE", Path.home() / ".cache" / "radpriv"))
    d = root / "dp-runs"
    d.mkdir(parents=True, exist_ok=True)
    return d


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
        return _sha("\x1e".join(self.texts), np.ascontiguousarray(self.Y, dtype=np.int8).tobytes())


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


def run_encoder(cfg: TrainConfig, encoder_path: str, train_split: Split, val: Split, test: Split,
                init_state: dict | None = None, init_key: str = "", n_resamples: int = 1000,
                progress: bool = False, use_cache: bool = True) -> dict:
    """Train (or load from cache) one encoder configuration and score it on ``test``."""
    cfgd = json.loads(cfg.to_json())
    cfgd.pop("version", None)
    key = _sha("encoder-run-v1", json.dumps(cfgd, sort_keys=True), encoder_fingerprint(encoder_path),
               train_split.digest(), val.digest(), test.digest(), init_key, n_resamples)
    path = cache_dir() / f"{key}.json"
    if use_cache and path.exists():
        rec = json.loads(path.read_text())
        rec["cache_hit"] = True
        return rec
    res = train(cfg, encoder_path, train_split.texts, train_split.Y, val.texts, val.Y, init_state=init_state,
                progress=progress)
    pv, pt = predict_proba(res, val.texts), predict_proba(res, test.texts)
    th = tune_thresholds(val.Y, pv)
    rec = {"key": key, "config": cfgd, "mode": cfg.mode, "epsilon": cfg.epsilon if cfg.private else math.inf,
           "seed": cfg.seed, "achieved_epsilon": res.epsilon, "accounting": res.accounting, "history": res.history,
           "train_seconds": res.seconds, "samples_per_second": res.samples_per_second, "n_train": res.n_train,
           "truncated": res.truncated, "thresholds": th.tolist(), "test_proba": pt.tolist(), "cache_hit": False,
           **f1_scores(test.Y, pt, th, n_resamples, cfg.seed)}
    if use_cache:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, default=float))
        tmp.replace(path)  # atomic: an interrupted run never leaves a half-written result
    return rec


def public_pretrain(cfg: TrainConfig, encoder_path: str, public: Split, val: Split, progress: bool = False,
                    use_cache: bool = True) -> tuple[dict, str]:
    """Non-private fine-tuning on the PUBLIC corpus; returns merged weights and their cache key."""
    import torch

    if cfg.private:
        raise ValueError("the public stage is non-private by definition; use mode 'full' or 'lora'")
    cfgd = json.loads(cfg.to_json())
    cfgd.pop("version", None)
    key = _sha("public-v1", json.dumps(cfgd, sort_keys=True), encoder_fingerprint(encoder_path), public.digest(),
               val.digest())
    path = cache_dir() / f"public-{key}.pt"
    if use_cache and path.exists():
        return torch.load(path, weights_only=True), key
    res = train(cfg, encoder_path, public.texts, public.Y, val.texts, val.Y, progress=progress)
    state = res.state_dict()
    if use_cache:
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
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
             by_mode: dict | None = None) -> pd.DataFrame:
    """Every mode × ε × seed (non-private modes once per seed). With ``public``, DP modes are also run from
    weights first fine-tuned non-privately on the public corpus (rows tagged ``init='public'``).
    ``by_mode`` overrides ``base`` per mode (see :func:`mode_config`)."""
    from tqdm.auto import tqdm

    base = dict(base or {})
    jobs = []
    for seed in seeds:
        for mode in modes:
            for eps in (epsilons if mode.startswith("dp") else [math.inf]):
                jobs.append((mode, eps, seed, "none"))
                if public is not None and mode.startswith("dp"):
                    jobs.append((mode, eps, seed, "public"))
    init_state, init_key = None, ""
    if public is not None:
        pbase = {k: v for k, v in base.items() if k not in ("lr", "head_lr")}  # the public mode's own rates
        pcfg = mode_config(pbase, by_mode, public_mode, epsilon=math.inf,
                           **({"epochs": public_epochs} if public_epochs else {}))
        init_state, init_key = public_pretrain(pcfg, encoder_path, public, val, progress=False)
    rows = []
    for mode, eps, seed, init in tqdm(jobs, desc="grid", disable=not progress):
        cfg = mode_config(base, by_mode, mode, epsilon=eps, seed=seed)
        rec = run_encoder(cfg, encoder_path, train_split, val, test,
                          init_state=init_state if init == "public" else None,
                          init_key=init_key if init == "public" else "", n_resamples=n_resamples)
        rows.append({**rec, "init": init})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (mode, init, ε): weighted/macro F1 (mean of the per-seed point estimates, with the
    CI of the first seed), achieved ε, seconds."""
    g = runs.copy()
    g["init"] = g.get("init", "none")
    g["init"] = g["init"].fillna("none")
    agg = g.groupby(["mode", "init", "epsilon"], sort=False).agg(
        seeds=("seed", "nunique"), weighted_f1=("weighted_f1", "mean"), weighted_f1_sd=("weighted_f1", "std"),
        weighted_f1_lo=("weighted_f1_lo", "first"), weighted_f1_hi=("weighted_f1_hi", "first"),
        macro_f1=("macro_f1", "mean"), achieved_epsilon=("achieved_epsilon", "max"),
        train_seconds=("train_seconds", "mean")).reset_index()
    return agg


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


def public_corpus(schema, n: int = 300, seed: int = 1) -> Split:
    """A PUBLIC corpus for the public-then-private option and the DP TF-IDF vocabulary: an independent synthetic
    draw (seed 1, not the embedded corpora's seed 0; no canaries) of the same schema, all splits pooled."""
    from radpriv.data.synthetic import CORPORA, generate

    corpus = next((c for c, spec in CORPORA.items() if spec["schema"] == schema.name), None)
    if corpus is None:
        raise ValueError(f"no synthetic generator writes schema {schema.name!r} (available: "
                         f"{sorted({s['schema'] for s in CORPORA.values()})}); set public_then_private: false")
    return Split.from_frame(generate(corpus, n=n, seed=seed, canaries=False), list(schema.ids))


def teacher_labels(frame: pd.DataFrame, schema, model: str, mode: str = "scoring", progress: bool = True,
                   policy: str = "exclusive") -> tuple[np.ndarray, dict]:
    """0/1 training labels produced by a local LLM through the engine (cached); failed reports are
    labelled all-absent and counted, never dropped."""
    from radpriv.evaluate.scoring import fill_failures
    from radpriv.llm import engine

    run = engine.label_frame(frame, schema, model, mode=mode, progress=progress)
    pred = fill_failures(frame, run.answers, run.failures, schema)
    return binarize(pred, list(schema.ids), policy), dict(run.stats)
