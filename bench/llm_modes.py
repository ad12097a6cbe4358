"""Template vs scoring mode, zero-shot vs fixed vs retrieved examples: F1 / accuracy, AUC and seconds per report.

For one model and each dataset (default: the synthetic CT-RATE-18 test split and a sample of the real
CT-RATE manually annotated reports, ``ct_rate_annotated_dev``), label ``--n-test`` test reports in
template mode and in scoring mode, and ``--n-val`` validation reports in scoring mode (to choose the
decision threshold). Reported per mode:

- template: weighted / macro F1 of ``present`` (exclusive policy: uncertain counts as not present);
- scoring, argmax: the state with the highest next-token probability (no threshold);
- scoring, threshold: ``present`` when p(present) >= t, with one global t chosen on the validation
  reports (maximising weighted F1 there), then applied unchanged to the test reports;
- scoring, per-finding thresholds: one threshold per finding chosen on the validation reports
  (``evaluate.scoring.choose_thresholds``, F1 grid), with the macro AUC's case-level DeLong 95 % CI;
- scoring AUC: per-finding ROC AUC of p(present) (findings with both classes among the test reports),
  macro-averaged, and the pooled (micro) AUC;
- single-label schemas (CMR): accuracy and macro F1 per mode; in scoring mode also ``scoring/calibrated``: a
  per-category bias on the letters' log-probabilities fitted on the ``--n-val`` validation reports
  (:func:`radpriv.evaluate.calibrated_categories`), applied unchanged to the test reports;
- ``--orders N`` (single-label): also ``scoring/N orders``, the categories' probabilities averaged over N orders
  of the options (:func:`radpriv.llm.engine.label_frame_orders`), and that average calibrated on validation;
- ``--shots``: each prompt variant (``zero-shot``, ``few-shot``, ``knn:K``; examples from the training split,
  retrieved by ``--retriever``) is run for each mode, side by side;
- multi-label datasets with a training split: TF-IDF + logistic regression (``radpriv.dp.train.tfidf_logreg``,
  trained on the training split, per-finding thresholds on the whole validation split) on the same test reports;
- seconds per report as measured by the engine (``stats['seconds_per_report']``, which keeps the
  original timing of answers served from the answer cache).

Answers go through the persistent answer cache (``--cache``; default the user cache) so an interrupted
run resumes. Samples are the first reports of each split in file order (fixed, reproducible).

    python bench/llm_modes.py --model qwen2.5-coder-0.5b --n-test 40 --n-val 40
    python bench/llm_modes.py --model qwen2.5-coder-1.5b --modes scoring --datasets ct_rate_annotated_dev
    python bench/llm_modes.py --model qwen2.5-coder-1.5b --modes template --datasets synthetic_cmr \
        --shots zero-shot,few-shot,knn:4 --n-test 30 --n-val 0
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import f1_score, roc_auc_score  # noqa: E402

from radpriv.data import DataError, load_dataset  # noqa: E402
from radpriv.dp.train import tfidf_logreg  # noqa: E402
from radpriv.evaluate import (binarize, calibrated_categories, fill_failures, macro_auc_delong,  # noqa: E402
                              score_labels)
from radpriv.evaluate.scoring import choose_thresholds  # noqa: E402
from radpriv.llm import AnswerCache  # noqa: E402
from radpriv.llm.engine import label_frame, label_frame_orders  # noqa: E402
from radpriv.llm.retrieval import examples_for_design, parse_shots  # noqa: E402


def f1s(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(weighted F1, macro F1 over findings present in the reference), as radpriv.evaluate.score_labels."""
    keep = y.sum(axis=0) > 0
    return (float(f1_score(y, p, average="weighted", zero_division=0)),
            float(f1_score(y, p, average=None, zero_division=0)[keep].mean()))


def p_present(answers: pd.DataFrame, truth: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """p(present) per report and finding; failed reports get 0 (scored as 'not present')."""
    a = answers.set_index("report_id").reindex(truth["report_id"])
    return np.nan_to_num(a[[f"p_present__{f}" for f in ids]].to_numpy(dtype=float), nan=0.0)


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    grid = np.unique(np.concatenate([np.linspace(0.01, 0.99, 99), np.quantile(p, np.linspace(0, 1, 101))]))
    best = max(grid, key=lambda t: (f1s(y, (p >= t).astype(int))[0], -abs(t - 0.5)))
    return float(best)


def aucs(y: np.ndarray, p: np.ndarray) -> tuple[float, float, int]:
    per = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    micro = roc_auc_score(y.ravel(), p.ravel()) if 0 < y.sum() < y.size else float("nan")
    return (float(np.mean(per)) if per else float("nan")), float(micro), len(per)


def single_label_rows(test: pd.DataFrame, val: pd.DataFrame, schema, base: dict, run, val_run,
                      modes: tuple[str, str]) -> list[dict]:
    """Accuracy and F1 of a single-label run's answers on ``test`` (row ``modes[0]``) and, given its validation
    run, of the same answers after the letter prior is corrected on ``val`` (row ``modes[1]``)."""
    base = {**base, "failures": int(run.stats["n_failures"]), "s_per_report": run.stats["seconds_per_report"]}

    def row(mode: str, answers: pd.DataFrame, **extra) -> dict:
        s = score_labels(test, fill_failures(test, answers, run.failures, schema), schema,
                         n_resamples=0).set_index("metric")["value"]
        return {**base, "mode": mode, **extra, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
                "weighted_f1": s["weighted_f1"]}

    out = [row(modes[0], run.answers)]
    if val_run is not None:
        out.append(row(modes[1], calibrated_categories(val_run.answers, val, run.answers, list(schema.ids)),
                       n_val=len(val)))
    return out


def run_dataset(name: str, model: str, modes: list[str], n_test: int, n_val: int, cache, opts, timeout,
                shots_list: list[str] = ("zero-shot",), retriever: str = "tfidf", orders: int = 1) -> list[dict]:
    ds = load_dataset(name)
    schema, ids = ds.schema, list(ds.schema.ids)
    test, val = ds.split("test").head(n_test), ds.split("validation").head(n_val)
    single = schema.task == "single"
    yt = None if single else binarize(test, ids)
    rows = []
    embed = None
    if retriever == "minilm" and any(parse_shots(s).kind == "knn" for s in shots_list):
        from radpriv.downstream.text import MiniLMEncoder

        embed = MiniLMEncoder().encode
    if not single and not ds.evaluation_only:  # the bar to beat, on the same test reports
        proba, th = tfidf_logreg(ds.split("train")["text"].tolist(), binarize(ds.split("train"), ids),
                                 ds.split("validation")["text"].tolist(), binarize(ds.split("validation"), ids))
        w, m = f1s(yt, (proba(test["text"].tolist()) >= th).astype(int))
        rows.append({"dataset": name, "model": "TF-IDF + logistic regression", "shots": "train split",
                     "mode": "per-finding thresholds (whole validation split)", "n_test": len(test),
                     "weighted_f1": w, "macro_f1": m, "present_true": int(yt.sum())})
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    for shots, mode in [(s, m) for s in shots_list for m in modes]:
        few = (examples_for_design(shots, ds.split("train"), schema, retriever, embed)
               if not ds.evaluation_only else None)
        kw = dict(cache=cache, timeout=timeout, backend_opts=opts, few_shot=few, progress=True)
        run = label_frame(test, schema, model, mode=mode, **kw)
        base = {"dataset": name, "model": model, "shots": parse_shots(shots).label(retriever), "n_test": len(test),
                "failures": int(run.stats["n_failures"]), "s_per_report": run.stats["seconds_per_report"],
                "prompt_tokens": run.stats["prompt_tokens_per_report"],
                "completion_tokens": run.stats["completion_tokens_per_report"]}
        label = "template" if mode == "template" else "scoring/argmax"
        if single:  # in scoring mode also the letter prior corrected on validation reports, and option orders
            scoring_val = mode == "scoring" and len(val)
            new = single_label_rows(test, val, schema, base, run,
                                    label_frame(val, schema, model, mode=mode, **kw) if scoring_val else None,
                                    (label, "scoring/calibrated"))
            if mode == "scoring" and orders > 1:
                orun = label_frame_orders(test, schema, model, orders=orders, **kw)
                new += single_label_rows(test, val, schema, base, orun,
                                         label_frame_orders(val, schema, model, orders=orders, **kw) if len(val)
                                         else None, (f"scoring/{orders} orders", f"scoring/{orders} orders calibrated"))
            rows += new
            print(pd.DataFrame(new).to_string(index=False), flush=True)
            continue
        pred = fill_failures(test, run.answers, run.failures, schema)
        sc = score_labels(test, pred, schema, n_resamples=0).set_index("metric")["value"]
        base.update({"present_calls": int(binarize(pred, ids).sum()), "present_true": int(yt.sum())})
        rows.append({**base, "mode": label, "weighted_f1": sc["weighted_f1"], "macro_f1": sc["macro_f1"]})
        if mode == "scoring":
            pt = p_present(run.answers, test, ids)
            auc_macro, auc_micro, n_auc = aucs(yt, pt)
            rows[-1].update({"auc_macro": auc_macro, "auc_micro": auc_micro, "auc_findings": n_auc})
        if mode == "scoring" and len(val):
            vrun = label_frame(val, schema, model, mode=mode, **kw)
            yv, pv = binarize(val, ids), p_present(vrun.answers, val, ids)
            t = choose_threshold(yv, pv)
            yp = (pt >= t).astype(int)
            w, m = f1s(yt, yp)
            auc_macro, auc_micro, n_auc = aucs(yt, pt)
            rows.append({**base, "mode": "scoring/threshold", "threshold": t, "n_val": len(val),
                         "weighted_f1": w, "macro_f1": m, "present_calls": int(yp.sum()),
                         "auc_macro": auc_macro, "auc_micro": auc_micro, "auc_findings": n_auc})
            # one threshold per finding, chosen on the validation reports (F1 grid), and the case-level DeLong CI
            tk = choose_thresholds(yv, pv, rule="f1")
            yk = (pt >= tk).astype(int)
            w, m = f1s(yt, yk)
            mac = macro_auc_delong(yt, pt, ids).set_index("label").loc["macro"]
            rows.append({**base, "mode": "scoring/per-finding thresholds", "n_val": len(val), "weighted_f1": w,
                         "macro_f1": m, "present_calls": int(yk.sum()), "auc_macro": mac["auc"],
                         "auc_ci": f"[{mac['ci_low']:.3f}, {mac['ci_high']:.3f}]", "auc_micro": auc_micro,
                         "auc_findings": n_auc})
        print(pd.DataFrame(rows[-3:] if mode == "scoring" and len(val) else rows[-1:]).to_string(index=False), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--modes", default="template,scoring")
    ap.add_argument("--datasets", default="synthetic_ct,ct_rate_annotated_dev")
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--n-val", type=int, default=40)
    ap.add_argument("--shots", default="zero-shot", help="comma-separated: zero-shot, few-shot, knn:K")
    ap.add_argument("--retriever", default="tfidf", choices=("tfidf", "minilm"))
    ap.add_argument("--orders", type=int, default=1,
                    help="single-label scoring: also average the letters' probabilities over N option orders")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RADPRIV_BENCH_THREADS", 0)) or None)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--cache", default=None, help="answer-cache SQLite file (default: the user cache); 'off' disables")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cache = False if a.cache == "off" else (AnswerCache(a.cache) if a.cache else None)
    opts = {"n_threads": a.threads} if a.threads else {}
    rows = []
    for name in [d.strip() for d in a.datasets.split(",") if d.strip()]:
        try:
            rows += run_dataset(name, a.model, [m.strip() for m in a.modes.split(",")], a.n_test, a.n_val, cache,
                                opts, a.timeout, [s.strip() for s in a.shots.split(",")], a.retriever,
                                a.orders)
        except (FileNotFoundError, DataError) as exc:  # e.g. the real reports are not on this machine
            print(f"skipping {name}: {exc}", file=sys.stderr)
    df = pd.DataFrame(rows)
    cols = [c for c in ["dataset", "model", "shots", "mode", "n_test", "accuracy", "weighted_f1", "macro_f1", "auc_macro", "auc_ci", "auc_micro",
                        "threshold", "present_calls", "present_true", "s_per_report", "prompt_tokens",
                        "completion_tokens", "failures"] if c in df]
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(df[cols].to_string(index=False))
    if a.json:
        df.to_json(a.json, orient="records", indent=1)
    return 0


if __name__ == "__main__":
    from radpriv.netguard import install_process_guard

    install_process_guard()  # benchmarks send nothing off the machine: loopback only (+ $RADPRIV_ALLOW_HOSTS)
    sys.exit(main())
