"""Statistical tests: McNemar, Cochran's Q, Holm (statsmodels); DeLong for ROC AUC; a trend test;
an empirical ε lower bound from a membership-inference attack."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import cochrans_q as _cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as _mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint


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
    res = _cochrans_q(x, return_object=True)
    return {"statistic": float(res.statistic), "df": int(res.df), "pvalue": float(res.pvalue)}


def holm(pvalues) -> np.ndarray:
    """Holm-corrected p-values."""
    p = np.asarray(pvalues, float)
    if len(p) == 0:
        return p
    return multipletests(p, method="holm")[1]


def pairwise_vs_best(correct: pd.DataFrame) -> pd.DataFrame:
    """McNemar of each system (column) against the most accurate one, Holm-corrected."""
    acc = correct.mean()
    best = acc.idxmax()
    rows = []
    for name in correct.columns:
        if name == best:
            continue
        r = mcnemar_test(correct[best], correct[name])
        rows.append({"system": name, "vs": best, "accuracy": round(acc[name], 4), "best_accuracy": round(acc[best], 4),
                     "best_only_right": r["b"], "system_only_right": r["c"], "test": "exact" if r["exact"] else "chi2",
                     "p": r["pvalue"]})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p"])
        out["significant_0.05"] = out["p_holm"] < 0.05
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


def macro_auc_delong(Y, S, label_names=None, alpha: float = 0.05) -> pd.DataFrame:
    """Per-class DeLong AUC with CI for multi-label scores; the last row is the macro mean (its CI from the
    mean of the per-class variances, treating classes as independent)."""
    Y, S = np.asarray(Y), np.asarray(S)
    names = label_names or [f"class_{j}" for j in range(Y.shape[1])]
    rows, ses = [], []
    for j, name in enumerate(names):
        if Y[:, j].min() == Y[:, j].max():
            continue
        r = delong_auc_ci(Y[:, j], S[:, j], alpha)
        rows.append({"label": name, **r, "positives": int(Y[:, j].sum())})
        ses.append(r["se"])
    df = pd.DataFrame(rows)
    if len(df):
        z = sps.norm.ppf(1 - alpha / 2)
        macro = float(df.auc.mean())
        se = float(np.sqrt(np.sum(np.square(ses))) / len(ses))
        df = pd.concat([df, pd.DataFrame([{"label": "macro", "auc": macro, "se": se, "ci_low": macro - z * se,
                                           "ci_high": macro + z * se, "positives": int(df.positives.sum())}])],
                       ignore_index=True)
    return df


def trend_test(x, y) -> dict:
    """Monotone trend of utility ``y`` across privacy levels ``x`` (e.g. ε, ∞ as the largest):
    Kendall's tau-b with its p-value (ties handled; no normality assumed)."""
    x = np.asarray(x, float)
    x = np.where(np.isinf(x), np.nanmax(x[np.isfinite(x)]) * 10 if np.isfinite(x).any() else 1.0, x)
    res = sps.kendalltau(x, np.asarray(y, float))
    return {"tau": float(res.statistic), "pvalue": float(res.pvalue), "method": "Kendall tau-b"}


def empirical_epsilon_lower_bound(tp: int, fn: int, fp: int, tn: int, delta: float = 0.0,
                                  confidence: float = 0.95) -> float:
    """ε lower bound implied by an attack's confusion counts (Jagielski et al. 2020; Nasr et al. 2021):
    ε ≥ log((TPR_low − δ) / FPR_high) with Clopper–Pearson bounds, symmetrised over (TPR, FPR) and
    (1−FPR, 1−TPR). Returns 0 when the attack shows nothing."""
    alpha = 1 - confidence
    tpr_lo = proportion_confint(tp, tp + fn, alpha=alpha, method="beta")[0] if tp + fn else 0.0
    fpr_hi = proportion_confint(fp, fp + tn, alpha=alpha, method="beta")[1] if fp + tn else 1.0
    tnr_lo = proportion_confint(tn, fp + tn, alpha=alpha, method="beta")[0] if fp + tn else 0.0
    fnr_hi = proportion_confint(fn, tp + fn, alpha=alpha, method="beta")[1] if tp + fn else 1.0
    cands = []
    for num, den in ((tpr_lo - delta, fpr_hi), (tnr_lo - delta, fnr_hi)):
        if num > 0 and den > 0:
            cands.append(np.log(num / den))
    return float(max([0.0, *cands]))
