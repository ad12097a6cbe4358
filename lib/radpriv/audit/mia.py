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


# ---------------------------------------------------------------------------------------------
# the experiment: members / non-members / reference population, classifiers from radpriv.dp.train
# ---------------------------------------------------------------------------------------------
def label_matrix(frame, label_columns) -> np.ndarray:
    """Multi-label 0/1 targets: present or uncertain → 1 (the inclusive policy)."""
    return frame[list(label_columns)].isin(["present", "uncertain"]).to_numpy().astype(int)


def membership_split(frame, n_members: int, n_reference: int, seed: int = 0, exclude_canaries: bool = True) -> dict:
    """Disjoint random draws from one pool of reports: ``members`` (the target's training set),
    ``nonmembers`` (same size, never trained on: exchangeable with members before training) and
    ``reference`` (population data for the calibration model). Canary-bearing rows are left out."""
    pool = frame
    if exclude_canaries and "canary" in frame:
        pool = frame[frame["canary"].fillna("") == ""]
    need = 2 * n_members + n_reference
    if len(pool) < need:
        raise ValueError(f"membership split needs {need} reports (2×{n_members} + {n_reference}); the pool has {len(pool)}")
    idx = np.random.default_rng(seed).permutation(pool.index.to_numpy())
    return {"members": pool.loc[idx[:n_members]], "nonmembers": pool.loc[idx[n_members: 2 * n_members]],
            "reference": pool.loc[idx[2 * n_members: need]]}


def run_membership_audit(frame, label_columns, encoder_path, configs: dict, n_members: int, n_reference: int,
                         reference_config=None, seed: int = 0, progress: bool = False):
    """Train each target configuration on the members and a reference model on the reference set, then
    attack. ``configs``: {name: radpriv.dp.train.TrainConfig}. Returns (metrics DataFrame, scores dict,
    trained results) -- scores[name] = (y, loss_attack_score, calibrated_score)."""
    import pandas as pd

    from radpriv.dp.train import predict_proba, train

    parts = membership_split(frame, n_members, n_reference, seed=seed)
    audit_rows = pd.concat([parts["members"], parts["nonmembers"]])
    y = np.r_[np.ones(len(parts["members"]), int), np.zeros(len(parts["nonmembers"]), int)]
    Y_audit = label_matrix(audit_rows, label_columns)
    results = {}
    ref_cfg = reference_config or next(c for c in configs.values() if not c.private)
    ref = train(ref_cfg, str(encoder_path), list(parts["reference"].text), label_matrix(parts["reference"], label_columns),
                progress=progress)
    ref_loss = per_sample_bce(predict_proba(ref, texts=list(audit_rows.text), encoder_path=str(encoder_path)), Y_audit)
    results["reference"] = ref
    rows, scores = [], {}
    for name, cfg in configs.items():
        res = train(cfg, str(encoder_path), list(parts["members"].text), label_matrix(parts["members"], label_columns),
                    progress=progress)
        results[name] = res
        loss = per_sample_bce(predict_proba(res, texts=list(audit_rows.text), encoder_path=str(encoder_path)), Y_audit)
        delta = res.accounting.get("delta", 1.0 / (10 * n_members)) if cfg.private else 1.0 / (10 * n_members)
        s_loss, s_cal = loss_attack(loss), calibrated_attack(loss, ref_loss)
        scores[name] = (y, s_loss, s_cal)
        for attack, s in (("loss threshold", s_loss), ("reference-calibrated", s_cal)):
            m = attack_metrics(y, s, delta=delta, seed=seed)
            rows.append({"model": name, "mode": cfg.mode, "epsilon": res.epsilon, "attack": attack, **m,
                         "member_loss": float(loss[y == 1].mean()), "nonmember_loss": float(loss[y == 0].mean()),
                         "train_seconds": res.seconds})
    return pd.DataFrame(rows), scores, results
