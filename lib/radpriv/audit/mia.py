"""Membership inference against report classifiers, and the ε it certifies empirically.

Attacks (higher score = "member"):

- **loss threshold** (Yeom et al. 2018): ``score = −loss_target(x)``; members were fitted, so their
  loss tends to be lower.
- **reference-calibrated** (difficulty calibration, Watson et al. 2022; the offline flavour of LiRA,
  Carlini et al. 2022): ``score = loss_ref(x) − loss_target(x)``, where the reference model has the
  same architecture and recipe but was trained on disjoint population data. Subtracting the reference
  loss removes how hard an example is *in general*, leaving what the target learned about *it*.

Metrics: ROC AUC (DeLong CI), TPR at a fixed low FPR (1 %), and an **empirical lower bound on ε**
(Jagielski et al. 2020; Nasr et al. 2021): the attack is turned into a membership test at one
threshold and its confusion counts give ε ≥ log((TPR_low − δ)/FPR_high) with Clopper–Pearson bounds
(:func:`radpriv.evaluate.stats.empirical_epsilon_lower_bound`). To keep the bound honest the threshold
is **chosen on one random half** of the audit examples and the counts are taken **on the other half**
(choosing it on the same examples would select the luckiest threshold). A DP guarantee of (ε, δ)
implies the bound stays ≤ ε with probability ≥ the confidence level.
"""

from __future__ import annotations

import numpy as np


def per_sample_bce(P, Y, eps: float = 1e-6) -> np.ndarray:
    """Mean binary cross-entropy over labels, one value per example (P: probabilities, Y: 0/1)."""
    P = np.clip(np.asarray(P, dtype=float), eps, 1 - eps)
    Y = np.asarray(Y, dtype=float)
    return -(Y * np.log(P) + (1 - Y) * np.log(1 - P)).mean(axis=1)


def loss_attack(loss_target) -> np.ndarray:
    return -np.asarray(loss_target, dtype=float)


def calibrated_attack(loss_target, loss_reference) -> np.ndarray:
    return np.asarray(loss_reference, dtype=float) - np.asarray(loss_target, dtype=float)


def tpr_at_fpr(y, score, fpr: float = 0.01) -> float:
    """Highest TPR the attack reaches with FPR ≤ ``fpr`` (0 when no threshold is that strict)."""
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(np.asarray(y), np.asarray(score, dtype=float))
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def _counts(y, score, thr):
    pred = score >= thr
    tp = int((pred & (y == 1)).sum()); fn = int((~pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum()); tn = int((~pred & (y == 0)).sum())
    return tp, fn, fp, tn


def empirical_epsilon(y, score, delta: float = 0.0, confidence: float = 0.95, seed: int = 0) -> dict:
    """ε lower bound from a threshold chosen on one half of the examples and counted on the other."""
    from radpriv.evaluate.stats import empirical_epsilon_lower_bound

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    rng = np.random.default_rng(seed)
    sel = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):  # stratified halves
        idx = np.flatnonzero(y == cls)
        sel[rng.permutation(idx)[: len(idx) // 2]] = True
    ys, ss, ye, se = y[sel], score[sel], y[~sel], score[~sel]
    best, thr = -1.0, np.inf
    for t in np.unique(ss):
        b = empirical_epsilon_lower_bound(*_counts(ys, ss, t), delta=delta, confidence=confidence)
        if b > best:
            best, thr = b, float(t)
    tp, fn, fp, tn = _counts(ye, se, thr)
    eps = empirical_epsilon_lower_bound(tp, fn, fp, tn, delta=delta, confidence=confidence)
    return {"eps_lower_bound": eps, "threshold": thr, "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "eps_selection_half": max(best, 0.0), "confidence": confidence, "delta": delta}


def attack_metrics(y, score, fpr: float = 0.01, delta: float = 0.0, seed: int = 0) -> dict:
    """AUC (+ DeLong 95 % CI), TPR at ``fpr``, and the empirical ε lower bound of one attack."""
    from radpriv.evaluate.stats import delong_auc_ci

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    ci = delong_auc_ci(y, score)
    out = {"auc": float(ci["auc"]), "auc_low": float(ci["ci_low"]), "auc_high": float(ci["ci_high"]),
           f"tpr_at_{fpr:g}_fpr": tpr_at_fpr(y, score, fpr), "n_members": int(y.sum()), "n_nonmembers": int((1 - y).sum())}
    e = empirical_epsilon(y, score, delta=delta, seed=seed)
    out["eps_lower_bound"] = e["eps_lower_bound"]
    return out
