"""Membership inference against report classifiers, and the ε a one-run audit certifies.

Attacks (higher score = "member"):

- **loss threshold** (Yeom et al. 2018): ``score = −loss_target(x)``; members were fitted, so their
  loss tends to be lower.
- **reference-calibrated** (difficulty calibration, Watson et al. 2022; the offline flavour of LiRA,
  Carlini et al. 2022): ``score = loss_ref(x) − loss_target(x)``, where the reference model has the
  same architecture and recipe but was trained on disjoint population data. Subtracting the reference
  loss removes how hard an example is *in general*, leaving what the target learned about *it*.

Metrics: ROC AUC (DeLong CI), TPR at a fixed low FPR (1 %), and the **one-run ε lower bound** of
Steinke, Nasr & Jagielski (2023) (:mod:`radpriv.audit.one_run`). Its conditions hold by construction here:
:func:`membership_split` draws ``m = 2·n_members`` audit reports and includes **each one independently with
probability 1/2** before training (so the number of members is Binomial(m, 1/2)); the target trains on
exactly the included ones; the attack scores every audit report from the target (and a reference model
trained on disjoint reports), never looking at the draw; the guesses (k₊ top, k₋ bottom) come from a grid
fixed in advance and Bonferroni-corrected; the two attacks share the confidence level (each is tested at
β/2), so the best of the two holds at 1 − β. If training is (ε, δ)-DP the bound exceeds ε with probability
at most β.

(An earlier version applied Clopper–Pearson intervals to the examples of one trained model as if each were
an independent trial; that is not the guarantee those intervals assume, and it is gone.)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from radpriv.audit.one_run import one_run_audit
from radpriv.evaluate.scoring import binarize

#: δ of the audit: small against 1/m, so the δ term of the one-run p-value (2·m·δ·…) is negligible. Each DP
#: target's accountant ε is recomputed at this δ (its privacy profile) for the comparison.
AUDIT_DELTA = 1e-5


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


def attack_metrics(y, score, fpr: float = 0.01, delta: float = AUDIT_DELTA, confidence: float = 0.95,
                   grid=None, seed: int = 0) -> dict:
    """AUC (+ DeLong 95 % CI), TPR at ``fpr``, and the one-run ε lower bound of one attack at ``delta`` and
    ``confidence`` (:func:`radpriv.audit.one_run.one_run_audit`). ``y``: the inclusion draw (1 = member)."""
    from radpriv.evaluate.stats import delong_auc_ci

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    ci = delong_auc_ci(y, score)
    out = {"auc": float(ci["auc"]), "auc_low": float(ci["ci_low"]), "auc_high": float(ci["ci_high"]),
           f"tpr_at_{fpr:g}_fpr": tpr_at_fpr(y, score, fpr), "n_members": int(y.sum()), "n_nonmembers": int((1 - y).sum())}
    a = one_run_audit(y, score, delta=delta, confidence=confidence, grid=grid, seed=seed)
    out.update({"eps_lower_bound": a["eps_lower_bound"], "k_plus": a["k_plus"], "k_minus": a["k_minus"],
                "guesses": a["r"], "correct": a["v"], "m": a["m"], "audit_delta": a["delta"],
                "audit_confidence": confidence, "audit_tests": a["n_tests"], "max_certifiable": a["max_certifiable"]})
    return out


# ---------------------------------------------------------------------------------------------
# the experiment: members / non-members / reference population, classifiers from radpriv.dp.train
# ---------------------------------------------------------------------------------------------
def membership_split(frame, n_members: int, n_reference: int, seed: int = 0, exclude_canaries: bool = True) -> dict:
    """The one-run audit's draw. From one pool of reports, disjoint random draws of ``m = 2·n_members``
    **audit reports** and ``n_reference`` **reference** reports (population data for the calibration model);
    then each audit report is included in the target's training set **independently with probability 1/2**
    (``member``, aligned with ``audit``), so the number of ``members`` is Binomial(m, 1/2) with mean
    ``n_members``; the others are the ``nonmembers``. Canary-bearing rows (the LM audit's) are left out."""
    pool = frame
    if exclude_canaries and "canary" in frame:
        pool = frame[frame["canary"].fillna("") == ""]
    m = 2 * int(n_members)
    need = m + n_reference
    if n_members < 1:
        raise ValueError(f"membership split needs n_members ≥ 1, got {n_members}")
    if len(pool) < need:
        raise ValueError(f"membership split needs {need} reports (2×{n_members} + {n_reference}); the pool has {len(pool)}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(pool.index.to_numpy())
    audit = pool.loc[idx[:m]]
    member = (rng.random(m) < 0.5).astype(int)
    if member.sum() in (0, m):  # probability 2^(1−m): no attack can be scored; a new draw is as random
        raise ValueError(f"the inclusion draw put all {m} audit reports on one side; use another seed")
    return {"audit": audit, "member": member, "members": audit[member == 1], "nonmembers": audit[member == 0],
            "reference": pool.loc[idx[m:need]]}


def run_membership_audit(frame, label_columns, encoder_path, configs: dict, n_members: int, n_reference: int,
                         reference_config=None, seed: int = 0, confidence: float = 0.95,
                         audit_delta: float = AUDIT_DELTA, policy: str = "inclusive", progress: bool = False):
    """Train each target configuration on the members of :func:`membership_split` and a reference model on
    the reference set, then attack every audit report. ``configs``: {name: radpriv.dp.train.TrainConfig};
    DP targets must have one window per report (``max_chunks=1``: the privacy unit is then one report, the
    audit's canary) and get δ = 1/(10·n_members) fixed before the draw unless they set one.

    Each of the two attacks is audited at confidence 1 − β/2 (β = 1 − ``confidence``), so the better of
    the two holds at ``confidence``. Targets are the report's findings as 0/1 under the uncertainty
    ``policy`` (inclusive: uncertain counts as present). A DP target's accountant ε is also given at the audit's δ
    (``epsilon_at_audit_delta``, PLD accountant on the run's σ, q and steps): the claim the audit tests.

    Returns (metrics DataFrame, scores, trained results, split): scores[name] = (member, loss_attack_score,
    calibrated_score), aligned with ``split["audit"]``."""
    import pandas as pd

    from radpriv.dp.accounting import pld_epsilon
    from radpriv.dp.train import predict_proba, train

    parts = membership_split(frame, n_members, n_reference, seed=seed)
    audit_rows, y = parts["audit"], parts["member"]
    label_columns = list(label_columns)
    Y_audit = binarize(audit_rows, label_columns, policy)
    per_attack = 1 - (1 - confidence) / 2
    results = {}
    ref_cfg = reference_config or next(c for c in configs.values() if not c.private)
    ref = train(ref_cfg, str(encoder_path), list(parts["reference"].text), binarize(parts["reference"], label_columns, policy),
                progress=progress)
    ref_loss = per_sample_bce(predict_proba(ref, texts=list(audit_rows.text), encoder_path=str(encoder_path)), Y_audit)
    results["reference"] = ref
    rows, scores = [], {}
    for name, cfg in configs.items():
        if cfg.private:
            if cfg.max_chunks != 1:
                raise ValueError(f"{name}: the audit's canary is one report; DP-SGD's unit is a window, so it needs "
                                 f"max_chunks=1 (got {cfg.max_chunks})")
            if cfg.delta is None:
                cfg = dataclasses.replace(cfg, delta=1.0 / (10 * n_members))
        res = train(cfg, str(encoder_path), list(parts["members"].text), binarize(parts["members"], label_columns, policy),
                    progress=progress)
        results[name] = res
        loss = per_sample_bce(predict_proba(res, texts=list(audit_rows.text), encoder_path=str(encoder_path)), Y_audit)
        acc = res.accounting
        eps_audit = (pld_epsilon(acc["noise_multiplier"], acc["sample_rate"], acc["steps"], audit_delta)
                     if cfg.private else math.inf)
        s_loss, s_cal = loss_attack(loss), calibrated_attack(loss, ref_loss)
        scores[name] = (y, s_loss, s_cal)
        for attack, s in (("loss threshold", s_loss), ("reference-calibrated", s_cal)):
            m = attack_metrics(y, s, delta=audit_delta, confidence=per_attack, seed=seed)
            rows.append({"model": name, "mode": cfg.mode, "epsilon": res.epsilon,
                         "delta": acc.get("delta", math.nan) if cfg.private else math.nan,
                         "epsilon_at_audit_delta": eps_audit, "attack": attack, **m,
                         "member_loss": float(loss[y == 1].mean()), "nonmember_loss": float(loss[y == 0].mean()),
                         "train_seconds": res.seconds})
    return pd.DataFrame(rows), scores, results, parts
