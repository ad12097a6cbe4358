"""Statistical tests: McNemar (fixed comparator or all pairs), Cochran's Q, Holm (statsmodels); DeLong for ROC
AUC, per label and case-level macro; a trend test;
an empirical ε lower bound from a membership-inference attack."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import cochrans_q as _cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as _mcnemar
from statsmodels.stats.multitest import multipletests


def mcnemar_test(correct_a, correct_b, exact: bool | None = None) -> dict:
    """Paired test of two systems' per-item correctness. Exact binomial when fewer than 25 discordant pairs."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    discordant = table[0][1] + table[1][0]
    if exact is None:
        exact = discordant < 25
    res = _mcnemar(table, exact=exact, correction=True)
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue), "b": table[0][1], "c": table[1][0],
            "exact": bool(exact)}


def cochrans_q(correct) -> dict:
    """Cochran's Q across k systems (columns) on the same items (rows)."""
    x = np.asarray(correct, dtype=int)
    res = _cochrans_q(x)
    return {"statistic": float(res.statistic), "df": int(res.df), "pvalue": float(res.pvalue)}


def holm(pvalues) -> np.ndarray:
    """Holm-corrected p-values."""
    p = np.asarray(pvalues, float)
    if len(p) == 0:
        return p
    return multipletests(p, method="holm")[1]


def pairwise_mcnemar(correct: pd.DataFrame, comparator: str | None = None) -> pd.DataFrame:
    """McNemar on per-report correctness (columns = systems), Holm-corrected over the tests made.

    ``comparator`` names a system fixed *in advance* (the rule baseline, the human reader): every other system
    is tested against it. Without one, every pair is tested. The comparator is never chosen from the results
    (testing everyone against the most accurate system on the same reports is biased towards finding
    differences). ``df.attrs["design"]`` says which design was used."""
    names = list(correct.columns)
    if comparator is not None and comparator not in names:
        raise ValueError(f"comparator {comparator!r} is not among the systems {names}")
    pairs = ([(comparator, n) for n in names if n != comparator] if comparator is not None
             else list(itertools.combinations(names, 2)))
    acc = correct.mean()
    rows = []
    for a, b in pairs:
        r = mcnemar_test(correct[a], correct[b])
        rows.append({"system_a": a, "system_b": b, "accuracy_a": round(float(acc[a]), 4),
                     "accuracy_b": round(float(acc[b]), 4), "only_a_right": r["b"], "only_b_right": r["c"],
                     "test": "exact binomial" if r["exact"] else "chi-square (continuity-corrected)",
                     "p": r["pvalue"]})
    out = pd.DataFrame(rows, columns=["system_a", "system_b", "accuracy_a", "accuracy_b", "only_a_right",
                                      "only_b_right", "test", "p"])
    out["p_holm"] = holm(out["p"]) if len(out) else []
    out["significant_0.05"] = out["p_holm"] < 0.05
    out.attrs["design"] = (f"every system against {comparator} (fixed in advance), Holm over {len(out)} test(s)"
                           if comparator is not None else f"all {len(out)} pairs of systems, Holm over all pairs")
    return out


# ---------------------------------------------------------------------------------------------
# DeLong (fast algorithm of Sun & Xu 2014)
# ---------------------------------------------------------------------------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    return sps.rankdata(x, method="average")


def _delong_components(y: np.ndarray, scores: np.ndarray):
    """AUCs and the DeLong covariance for k score vectors (rows of ``scores``) against labels ``y``."""
    y = np.asarray(y, int)
    scores = np.atleast_2d(np.asarray(scores, float))
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs at least one positive and one negative case")
    k = scores.shape[0]
    tx = np.array([_midrank(r) for r in pos])
    ty = np.array([_midrank(r) for r in neg])
    tz = np.array([_midrank(r) for r in np.concatenate([pos, neg], axis=1)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.cov(v01) if k > 1 else np.array([[np.var(v01, ddof=1)]])
    sy = np.cov(v10) if k > 1 else np.array([[np.var(v10, ddof=1)]])
    cov = np.atleast_2d(sx) / m + np.atleast_2d(sy) / n
    return aucs, cov


def delong_auc_ci(y, score, alpha: float = 0.05) -> dict:
    aucs, cov = _delong_components(y, score)
    se = float(np.sqrt(cov[0, 0]))
    z = sps.norm.ppf(1 - alpha / 2)
    auc = float(aucs[0])
    return {"auc": auc, "se": se, "ci_low": max(0.0, auc - z * se), "ci_high": min(1.0, auc + z * se)}


def delong_roc_test(y, score_a, score_b) -> dict:
    """Two correlated ROC AUCs on the same cases: z statistic and two-sided p-value."""
    aucs, cov = _delong_components(y, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    z = diff / np.sqrt(var) if var > 0 else 0.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "z": float(z),
            "pvalue": float(2 * sps.norm.sf(abs(z)))}


def delong_placements(y, score) -> tuple[float, np.ndarray]:
    """AUC and each case's DeLong structural component (placement): for a positive case the share of
    negatives scored below it (V10), for a negative the share of positives scored above it (V01); ties
    count one half (midranks)."""
    y, s = np.asarray(y, int), np.asarray(score, float)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    r_all = _midrank(s)
    v = np.empty(len(y))
    v[pos] = (r_all[pos] - _midrank(s[pos])) / n
    v[neg] = 1.0 - (r_all[neg] - _midrank(s[neg])) / m
    return float(v[pos].mean()), v


def _macro_cases(Y: np.ndarray, Sa: np.ndarray, Sb: np.ndarray | None) -> tuple[float, float]:
    """Macro AUC (or paired macro difference a - b) and its case-level DeLong standard error.

    For finding k with m_k positives and n_k negatives, case i contributes the influence term
    ``(V10_ik - A_k) / m_k`` (positive) or ``(V01_ik - A_k) / n_k`` (negative), scaled by
    ``sqrt(m_k / (m_k - 1))`` or ``sqrt(n_k / (n_k - 1))`` so that one finding gives exactly DeLong's
    ``s10^2 / m + s01^2 / n``. The macro variance is the sum over cases of the squared mean (over findings)
    of these terms: findings read from the same cases (a parent and its sub-findings) are not treated as
    independent."""
    K = Y.shape[1]
    phi = np.zeros(len(Y))
    est = 0.0
    for k in range(K):
        y = Y[:, k]
        m, n = int(y.sum()), int(len(y) - y.sum())
        w = np.where(y == 1, np.sqrt(m / (m - 1)) / m, np.sqrt(n / (n - 1)) / n)
        auc_a, va = delong_placements(y, Sa[:, k])
        term, a = w * (va - auc_a), auc_a
        if Sb is not None:
            auc_b, vb = delong_placements(y, Sb[:, k])
            term, a = term - w * (vb - auc_b), auc_a - auc_b
        phi += term / K
        est += a / K
    return float(est), float(np.sqrt(np.sum(phi ** 2)))


def _evaluable(Y: np.ndarray, names: list[str]) -> tuple[list[int], dict[str, str]]:
    keep, excluded = [], {}
    for j, name in enumerate(names):
        m = int(Y[:, j].sum())
        n = len(Y) - m
        if m < 2 or n < 2:
            excluded[name] = f"{m} positive / {n} negative cases (DeLong needs >= 2 of each)"
        else:
            keep.append(j)
    return keep, excluded


def macro_auc_delong(Y, S, label_names=None, alpha: float = 0.05) -> pd.DataFrame:
    """Per-label DeLong AUC with CI for multi-label scores, and a last row ``macro``: the mean AUC over the
    evaluable labels with a **case-level** DeLong CI (structural components summed per case over labels, so
    correlated labels read from the same cases are not treated as independent; see :func:`_macro_cases`).
    CIs are clipped to [0, 1]. Labels with fewer than 2 positive or 2 negative cases are left out of the
    macro mean and listed in ``df.attrs["excluded"]`` with the reason."""
    Y, S = np.asarray(Y, int), np.asarray(S, float)
    names = list(label_names) if label_names is not None else [f"class_{j}" for j in range(Y.shape[1])]
    keep, excluded = _evaluable(Y, names)
    z = sps.norm.ppf(1 - alpha / 2)
    rows = [{"label": names[j], **delong_auc_ci(Y[:, j], S[:, j], alpha), "positives": int(Y[:, j].sum())}
            for j in keep]
    df = pd.DataFrame(rows, columns=["label", "auc", "se", "ci_low", "ci_high", "positives"])
    if keep:
        macro, se = _macro_cases(Y[:, keep], S[:, keep], None)
        df = pd.concat([df, pd.DataFrame([{"label": "macro", "auc": macro, "se": se,
                                           "ci_low": max(0.0, macro - z * se), "ci_high": min(1.0, macro + z * se),
                                           "positives": int(df.positives.sum())}])], ignore_index=True)
    df.attrs["excluded"] = excluded
    return df


def macro_auc_delong_test(Y, Sa, Sb, alpha: float = 0.05) -> dict:
    """Paired case-level DeLong test of macro AUC(a) - macro AUC(b) on the same cases (see
    :func:`macro_auc_delong`): estimate, se, CI of the difference (clipped to [-1, 1]), z, two-sided p."""
    Y, Sa, Sb = np.asarray(Y, int), np.asarray(Sa, float), np.asarray(Sb, float)
    keep, excluded = _evaluable(Y, [f"column {j}" for j in range(Y.shape[1])])
    if not keep:
        raise ValueError(f"no label has >= 2 positive and >= 2 negative cases ({excluded})")
    est, se = _macro_cases(Y[:, keep], Sa[:, keep], Sb[:, keep])
    zc = sps.norm.ppf(1 - alpha / 2)
    z = est / se if se > 0 else 0.0
    return {"estimate": est, "se": se, "ci_low": max(-1.0, est - zc * se), "ci_high": min(1.0, est + zc * se),
            "z": float(z), "p": float(2 * sps.norm.sf(abs(z))) if se > 0 else 1.0, "n_labels": len(keep),
            "excluded": excluded}


#: fewest distinct levels of x :func:`trend_test` runs on
TREND_MIN_LEVELS = 3


def trend_test(x, y) -> dict:
    """Monotone trend of utility ``y`` across privacy levels ``x`` (ε; ∞, the non-private level, counts as a
    level above every finite ε): Kendall's tau-b (``scipy.stats.kendalltau``, two-sided) with its p-value
    (ties handled; no normality assumed). Several runs per level (seeds) are several points.

    Refuses (ValueError) fewer than 3 distinct levels of ``x``: with two levels and one run each, τ is ±1 and
    p = 1 whatever ``y`` is, so the "test" says nothing."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"trend_test: x and y must be 1-d and of one length, got shapes {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("trend_test: x and y must not contain NaN")
    levels = np.unique(x)
    if len(levels) < TREND_MIN_LEVELS:
        shown = ", ".join("∞" if np.isposinf(v) else f"{v:g}" for v in levels)
        raise ValueError(f"trend_test needs at least {TREND_MIN_LEVELS} distinct levels of x (ε; ∞ counts as one), got "
                         f"{len(levels)} ({shown}): with two levels τ is ±1 and p = 1 whatever y is")
    finite = x[np.isfinite(x)]
    # only the order of x matters to Kendall's tau: ∞ becomes a value above the largest finite level
    x = np.where(np.isposinf(x), (finite.max() + 1.0) if finite.size else 1.0, x)
    res = sps.kendalltau(x, y)
    return {"tau": float(res.statistic), "pvalue": float(res.pvalue), "method": "Kendall tau-b (two-sided)",
            "levels": int(len(levels)), "n": int(len(x))}
