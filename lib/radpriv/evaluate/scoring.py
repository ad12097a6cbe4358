"""Score a labeler's answers against a reference frame (both in the dataset-frame convention).

One entry point for every comparator row in the studies (rules, LLMs, human reader):
:func:`score_labels` returns a tidy table ``metric, value, ci_low, ci_high, n`` with bootstrap 95 %
confidence intervals (``scipy.stats.bootstrap``, paired resampling of reports).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from radpriv.schemas import Schema, to_binary


def _aligned(truth: pd.DataFrame, pred: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    missing = [c for c in ["report_id", *cols] if c not in pred.columns]
    if missing:
        raise ValueError(f"prediction frame lacks column(s) {missing}")
    p = pred.set_index("report_id").reindex(truth["report_id"])
    unknown = p.index[p[cols].isna().any(axis=1)].tolist()
    if unknown:
        raise ValueError(f"{len(unknown)} reference reports have no prediction (e.g. {unknown[:3]}); "
                         "score answered reports explicitly with a subset of the reference, never by dropping")
    return truth.reset_index(drop=True), p.reset_index()


def bootstrap_metric(fn, n: int, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI of ``fn(idx)`` over resampled row indices."""
    idx = np.arange(n)
    value = float(fn(idx))
    if n_resamples <= 0 or n < 2:
        return value, float("nan"), float("nan")
    res = bootstrap((idx,), lambda i: fn(i.astype(int)), n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", vectorized=False, random_state=np.random.default_rng(seed))
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def binarize(frame: pd.DataFrame, ids: list[str], policy: str = "exclusive") -> np.ndarray:
    """0/1 matrix from State columns: present -> 1; uncertain -> 1 (inclusive) or 0 (exclusive)."""
    return np.array([[to_binary(v, policy) for v in frame[c]] for c in ids], dtype=int).T



#: the F1 rule's candidate thresholds (Study 3 tunes each finding's threshold on validation reports)
F1_THRESHOLD_GRID = np.linspace(0.05, 0.95, 19)


def choose_thresholds(y_val: np.ndarray, p_val: np.ndarray, rule: str = "f1") -> np.ndarray:
    """Per-finding decision thresholds chosen on validation predictions (never on test reports).

    - ``f1``: the threshold of :data:`F1_THRESHOLD_GRID` with the best validation F1 (0.5 for a finding
      without a positive validation report);
    - ``youden``: the ROC point maximising sensitivity + specificity - 1; a finding with one class only in
      validation gets the prevalence-matched quantile of its scores.
    """
    from sklearn.metrics import roc_curve

    y_val, p_val = np.asarray(y_val), np.asarray(p_val)
    if rule not in ("f1", "youden"):
        raise ValueError(f"unknown threshold rule {rule!r}: use 'f1' or 'youden'")
    out = np.full(y_val.shape[1], 0.5)
    for k in range(y_val.shape[1]):
        y, p = y_val[:, k], p_val[:, k]
        if rule == "f1":
            if y.sum() > 0:
                out[k] = F1_THRESHOLD_GRID[int(np.argmax([f1_score(y, p >= t, zero_division=0)
                                                          for t in F1_THRESHOLD_GRID]))]
        elif 0 < y.sum() < len(y):
            fpr, tpr, thr = roc_curve(y, p)
            out[k] = min(float(thr[int(np.argmax(tpr - fpr))]), 1.0)
        else:
            out[k] = float(np.quantile(p, 1 - y.mean())) if len(p) else 0.5
    return out

def fit_category_bias(p_val: np.ndarray, y_val: np.ndarray, l2: float = 0.01) -> np.ndarray:
    """A per-category log-prior correction for single-label scores, fitted on validation reports.

    Scoring mode reads each category's letter probability; small models favour some letters whatever the
    report says (the letter prior). ``p_val`` (reports x categories, any positive scale) becomes
    log-probabilities normalised over the categories; the bias ``b`` minimises the validation cross-entropy of
    ``softmax(log p + b)`` plus ``l2 * |b|^2`` (keeps categories absent from validation near 0). Apply with
    :func:`apply_category_bias`; choose it on validation reports only (Zhao et al. 2021 correct the same
    prior with content-free inputs instead)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    logp = log_softmax(np.log(np.clip(np.asarray(p_val, dtype=float), 1e-12, None)), axis=1)
    y = np.asarray(y_val, dtype=int)
    onehot = np.eye(logp.shape[1])[y]

    def loss(b):
        lq = log_softmax(logp + b, axis=1)
        grad = (np.exp(lq) - onehot).mean(0) + 2 * l2 * b
        return -(lq[np.arange(len(y)), y]).mean() + l2 * b @ b, grad

    res = minimize(loss, np.zeros(logp.shape[1]), jac=True, method="L-BFGS-B")
    return res.x - res.x.mean()  # (a common shift changes nothing)


def apply_category_bias(p: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Calibrated category probabilities ``softmax(log p + bias)`` (rows sum to 1)."""
    from scipy.special import softmax

    return softmax(np.log(np.clip(np.asarray(p, dtype=float), 1e-12, None)) + bias, axis=1)


def calibrated_categories(val_answers: pd.DataFrame, val_truth: pd.DataFrame, answers: pd.DataFrame,
                          ids: list[str]) -> pd.DataFrame:
    """Scoring-mode answers (columns ``p__<category>``) relabelled after the letter prior is corrected: the bias is
    fitted on ``val_answers`` against ``val_truth.label`` (a validation report without an answer counts as
    uninformative scores) and applied to every row of ``answers``. Returns report_id + label."""
    cols = [f"p__{c}" for c in ids]
    pv = val_answers.set_index("report_id").reindex(val_truth["report_id"])[cols].fillna(0).to_numpy()
    bias = fit_category_bias(pv, val_truth["label"].map(list(ids).index).to_numpy())
    q = apply_category_bias(answers[cols].to_numpy(), bias)
    return pd.DataFrame({"report_id": answers["report_id"].to_numpy(), "label": [ids[j] for j in q.argmax(1)]})


STATES3 = ("present", "absent", "uncertain")


def fit_state_bias(val_answers: pd.DataFrame, val_truth: pd.DataFrame, ids: list[str]) -> dict[str, float]:
    """Multi-label: one bias per state (present, absent, uncertain; shared by every finding) on the states'
    log-probabilities, fitted on validation reports (:func:`fit_category_bias` over every report x finding;
    "not mentioned" is "absent", as the template has it). ``val_answers`` carry ``p_<state>__<finding>`` columns
    (scoring mode, or template answers decoded in process). Reports without an answer are left out."""
    a = val_answers.set_index("report_id")
    t = val_truth.set_index("report_id").loc[[r for r in val_truth["report_id"] if r in a.index]]
    if t.empty:
        raise ValueError("no validation report has an answer to fit the state bias on")
    cols = [[f"p_{o}__{f}" for o in STATES3] for f in ids]
    missing = [c for cs in cols for c in cs if c not in a.columns]
    if missing:
        raise ValueError(f"validation answers lack state probabilities ({missing[:3]}...): label them in scoring "
                         "mode or in template mode on an in-process backend")
    p = np.concatenate([a.loc[t.index, cs].to_numpy(dtype=float) for cs in cols])
    y = np.concatenate([t[f].map(lambda v: STATES3.index("absent" if v in ("absent", "not_mentioned") else v))
                        .to_numpy(dtype=int) for f in ids])
    return dict(zip(STATES3, fit_category_bias(np.nan_to_num(p, nan=1 / 3), y).tolist()))


def class_set(truth: pd.DataFrame, schema: Schema, policy: str = "exclusive") -> tuple[list[str], list[str]]:
    """The classes macro averages run over, fixed on the whole reference before any resampling, and the ones
    left out: single-label, the schema's categories that occur in the reference; multi-label, the findings
    with at least one positive reference report under ``policy``. A class without reference reports has no
    recall, so it is left out of every macro average (precision, recall and F1 alike) and named."""
    ids = list(schema.ids)
    if schema.task == "single":
        present = set(truth["label"])
        keep = [c for c in ids if c in present]
    else:
        pos = binarize(truth, ids, policy).sum(axis=0)
        keep = [c for c, k in zip(ids, pos) if k > 0]
    return keep, [c for c in ids if c not in keep]


def class_set_note(truth: pd.DataFrame, schema: Schema, policy: str = "exclusive") -> str:
    """One sentence stating the class set of :func:`class_set` (every report that shows macro figures says it)."""
    keep, left = class_set(truth, schema, policy)
    what = "categories" if schema.task == "single" else "findings"
    occur = "that occur in the reference" if schema.task == "single" else f"with a positive reference report ({policy})"
    return (f"class set: the {len(keep)} of {len(schema.ids)} {what} of schema {schema.name} {occur}, fixed before "
            f"resampling; macro = unweighted mean over them, weighted = weighted by reference support"
            + (f"; left out (no reference report): {', '.join(left)}" if left else ""))


def score_labels(truth: pd.DataFrame, pred: pd.DataFrame, schema: Schema, n_resamples: int = 1000, seed: int = 0,
                 policy: str = "exclusive") -> pd.DataFrame:
    """Metrics with bootstrap CIs. Single-label: accuracy and macro P/R/F1 and weighted F1, every average over
    one class set (:func:`class_set`: the categories occurring in the reference). Multi-label: macro/weighted/
    micro F1 of positive (= present, or present+uncertain when ``policy='inclusive'``), macro over the
    findings with a positive reference report, and label-level state accuracy. Undefined values within a
    resample (a class never predicted) count as 0 (``zero_division=0``)."""
    labels, _ = class_set(truth, schema, policy)
    if schema.task == "single":
        t, p = _aligned(truth, pred, ["label"])
        yt, yp = t["label"].to_numpy(), p["label"].to_numpy()
        metrics = {
            "accuracy": lambda i: accuracy_score(yt[i], yp[i]),
            "macro_precision": lambda i: precision_score(yt[i], yp[i], labels=labels, average="macro", zero_division=0),
            "macro_recall": lambda i: recall_score(yt[i], yp[i], labels=labels, average="macro", zero_division=0),
            "macro_f1": lambda i: f1_score(yt[i], yp[i], labels=labels, average="macro", zero_division=0),
            "weighted_f1": lambda i: f1_score(yt[i], yp[i], labels=labels, average="weighted", zero_division=0),
        }
        n = len(yt)
    else:
        ids = list(schema.ids)
        t, p = _aligned(truth, pred, ids)
        yt, yp = binarize(t, ids, policy), binarize(p, ids, policy)
        keep = np.isin(ids, labels)
        st, sp = t[ids].to_numpy(), p[ids].to_numpy()
        metrics = {
            "macro_f1": lambda i: f1_score(yt[i], yp[i], average=None, zero_division=0)[keep].mean(),
            "weighted_f1": lambda i: f1_score(yt[i], yp[i], average="weighted", zero_division=0),
            "micro_f1": lambda i: f1_score(yt[i], yp[i], average="micro", zero_division=0),
            "state_accuracy": lambda i: float((st[i] == sp[i]).mean()),
        }
        n = len(yt)
    rows = []
    for name, fn in metrics.items():
        v, lo, hi = bootstrap_metric(fn, n, n_resamples, seed)
        rows.append({"metric": name, "value": round(v, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4), "n": n})
    return pd.DataFrame(rows)


UNANSWERED = "unanswered"


def fill_failures(truth: pd.DataFrame, answers: pd.DataFrame, failures: pd.DataFrame | None, schema: Schema) -> pd.DataFrame:
    """A prediction for every reference report: failed reports get ``unanswered`` (single-label; always
    wrong) or ``not_mentioned`` for every finding (multi-label). Reports neither answered nor recorded as
    failed are an error: every input must end as an answer or a recorded failure."""
    cols = ["label"] if schema.task == "single" else list(schema.ids)
    ans = answers[["report_id", *cols]]
    failed = set(failures["report_id"]) if failures is not None and len(failures) else set()
    have = set(ans["report_id"])
    lost = [r for r in truth["report_id"] if r not in have and r not in failed]
    if lost:
        raise ValueError(f"{len(lost)} reports are neither answered nor recorded as failures (e.g. {lost[:3]})")
    fill = {"label": UNANSWERED} if schema.task == "single" else {c: "not_mentioned" for c in cols}
    extra = pd.DataFrame([{"report_id": r, **fill} for r in truth["report_id"] if r not in have])
    out = pd.concat([ans, extra], ignore_index=True) if len(extra) else ans
    return out.set_index("report_id").loc[truth["report_id"]].reset_index()


def compare_systems(truth: pd.DataFrame, preds: dict[str, pd.DataFrame], schema: Schema, n_resamples: int = 1000,
                    seed: int = 0, policy: str = "exclusive") -> pd.DataFrame:
    """One row per system: each metric with its CI (``macro_f1``, ``macro_f1_low``, ``macro_f1_high`` ...)."""
    rows = []
    for name, pred in preds.items():
        t = score_labels(truth, pred, schema, n_resamples=n_resamples, seed=seed, policy=policy)
        row = {"system": name}
        for _, r in t.iterrows():
            row[r.metric] = r.value
            row[f"{r.metric}_low"] = r.ci_low
            row[f"{r.metric}_high"] = r.ci_high
        row["n"] = int(t.n.iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_f1(truth: pd.DataFrame, preds: dict[str, pd.DataFrame], schema: Schema, policy: str = "exclusive") -> pd.DataFrame:
    """Per-category (single-label) or per-finding (multi-label) F1, one column per system."""
    out = {}
    for name, pred in preds.items():
        if schema.task == "single":
            t, p = _aligned(truth, pred, ["label"])
            f = f1_score(t["label"], p["label"], labels=list(schema.ids), average=None, zero_division=0)
        else:
            t, p = _aligned(truth, pred, list(schema.ids))
            f = f1_score(binarize(t, schema.ids, policy), binarize(p, schema.ids, policy), average=None, zero_division=0)
        out[name] = np.round(f, 3)
    df = pd.DataFrame(out, index=[schema.finding(i).label for i in schema.ids])
    if schema.task == "single":
        df.insert(0, "reports", [int((truth["label"] == c).sum()) for c in schema.ids])
    return df


def correctness(truth: pd.DataFrame, preds: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per report (rows) and system (columns): was the single-label answer right?"""
    out = {}
    for name, pred in preds.items():
        t, p = _aligned(truth, pred, ["label"])
        out[name] = (t["label"].to_numpy() == p["label"].to_numpy())
    return pd.DataFrame(out, index=truth["report_id"].to_numpy())
