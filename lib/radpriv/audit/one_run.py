"""One-run privacy audit: Steinke, Nasr & Jagielski (2023), "Privacy auditing with one (1) training run",
NeurIPS 2023 (arXiv:2305.08846).

What the audit needs, and what this module assumes (the theorem's conditions):

1. **m audit examples ("canaries"), each included in the training set independently with probability
   1/2**, drawn *before* training (``S_i ∈ {in, out}``; see :func:`radpriv.audit.mia.membership_split`).
   Everything else the model is trained on must not depend on the draw.
2. The attacker scores every canary from the trained model (and any data independent of the draw), never
   looking at ``S``; it guesses **"in" on the k₊ highest scores, "out" on the k₋ lowest**, and abstains on
   the rest. ``r = k₊ + k₋`` guesses, ``v`` of them correct.
3. **k₊, k₋ are fixed before looking at the result.** Here a small grid of (k₊, k₋) is fixed in advance
   (:func:`guess_grid`, from fractions of m) and every grid point is tested at level β / (grid size)
   (Bonferroni): the reported ε is the largest over the grid and holds at confidence 1 − β *for the whole
   grid*. Picking the best (k₊, k₋) at the full β would not.

The test. If training is ε-DP (δ = 0), the number of correct guesses is stochastically dominated by
``Binomial(r, e^ε / (1 + e^ε))`` -- each guess is no better than ε-DP randomized response. So ε is
refuted at level β when ``P[Binomial(r, e^ε/(1+e^ε)) ≥ v] ≤ β``; the ε lower bound is the largest such ε
(:func:`epsilon_lower_bound`). For (ε, δ)-DP the paper's p-value adds a δ term:

    p(ε, δ) = P[B ≥ v] + 2 m δ · max_{i = 1..v} P[v − i ≤ B < v] / i,    B ~ Binomial(r, e^ε/(1+e^ε)),

as in the routine the paper gives for computing the bound (:func:`p_value`). The guarantee: if training
is (ε, δ)-DP, the reported lower bound exceeds ε with probability at most β over the inclusion draw and
the training randomness.

The privacy unit is one canary. A canary **repeated k times** (k records carry it) is protected only by
group privacy, (kε, k·e^{(k−1)ε}·δ) (:func:`group_privacy`): an audit of repeated canaries must be compared
with kε, not ε.

What one run can show is limited by m: with all m guesses correct the bound is
``logit(β^{1/m})`` (:func:`max_certifiable_epsilon`), e.g. 2.7 for m = 48 and 4.9 for m = 400 at 95 %.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import expit, logit


def p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """Probability of ≥ ``v`` correct guesses out of ``r`` on ``m`` canaries if training is (ε, δ)-DP
    (an upper bound on it; the paper's p-value, see the module docstring)."""
    m, r, v = int(m), int(r), int(v)
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 ≤ v ≤ r ≤ m, got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need ε ≥ 0 and 0 ≤ δ ≤ 1, got ε={eps}, δ={delta}")
    q = float(expit(eps))  # accuracy of ε-DP randomized response: e^ε / (1 + e^ε)
    tail = float(stats.binom.sf(v - 1, r, q))  # P[B ≥ v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    window = np.cumsum(stats.binom.pmf(v - i, r, q))  # P[v − i ≤ B ≤ v − 1]
    alpha = float(np.max(window / i))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95,
                        tol: float = 1e-9) -> float:
    """Largest ε refuted at level β = 1 − ``confidence`` by ``v`` correct out of ``r`` guesses on ``m``
    canaries (0 when even ε = 0 is not refuted)."""
    beta = 1 - confidence
    if not 0 < beta < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if r == 0 or p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    # bisection keeping p(lo) ≤ β (lo refuted) and p(hi) > β. Refuting (lo, δ)-DP refutes every smaller ε,
    # so the returned lo is a valid bound even where p is not monotone in ε.
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= beta:  # terminates: p → 1 as ε → ∞ (e^ε/(1+e^ε) → 1, r ≥ 1)
        lo, hi = hi, 2 * hi
    while hi - lo > tol * max(1.0, lo):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def max_certifiable_epsilon(m: int, confidence: float = 0.95) -> float:
    """The bound a perfect attack reaches with all ``m`` guesses correct (δ = 0): ``logit(β^{1/m})``.
    No audit of m canaries can show more, so a check "bound ≤ ε" with ε above this cannot fail."""
    return float(logit((1 - confidence) ** (1.0 / m)))


def guess_grid(m: int, fractions=(0.1, 0.25, 0.5, 1.0), two_sided: bool = True) -> list[tuple[int, int]]:
    """(k₊, k₋) pairs fixed in advance: r = ⌈f·m⌉ guesses for each fraction f, split evenly between the
    top ("in") and the bottom ("out") when ``two_sided``, else all on the top (k₋ = 0)."""
    out = []
    for f in fractions:
        r = min(m, max(1, int(math.ceil(f * m))))
        pair = (r - r // 2, r // 2) if two_sided else (r, 0)
        if pair not in out:
            out.append(pair)
    return out


def guesses(score, k_plus: int, k_minus: int, seed: int = 0) -> np.ndarray:
    """+1 on the ``k_plus`` highest scores, −1 on the ``k_minus`` lowest, 0 elsewhere (ties broken by a
    seeded random order, which does not depend on membership)."""
    score = np.asarray(score, dtype=float)
    m = len(score)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ValueError(f"need k₊, k₋ ≥ 0 and k₊ + k₋ ≤ m = {m}, got {k_plus}, {k_minus}")
    tie = np.random.default_rng(seed).permutation(m)
    order = np.lexsort((tie, score))  # ascending score
    t = np.zeros(m, dtype=int)
    if k_plus:
        t[order[m - k_plus:]] = 1
    if k_minus:
        t[order[:k_minus]] = -1
    return t


def one_run_audit(member, score, delta: float = 0.0, confidence: float = 0.95, grid=None,
                  seed: int = 0) -> dict:
    """The one-run ε lower bound of one attack. ``member``: the canaries' inclusion draw (1 = trained on);
    ``score``: the attack's scores (higher = "member"). ``grid``: (k₊, k₋) pairs fixed in advance
    (default :func:`guess_grid`); each is tested at β / len(grid). Returns the bound and the counts it came
    from (``k_plus``, ``k_minus``, ``r``, ``v``) plus every grid point's counts (``grid_counts``)."""
    member = np.asarray(member).astype(int)
    score = np.asarray(score, dtype=float)
    m = len(member)
    if len(score) != m or m == 0:
        raise ValueError(f"need one score per canary, got {len(score)} scores for {m} canaries")
    grid = [tuple(map(int, g)) for g in (grid if grid is not None else guess_grid(m))]
    beta = 1 - confidence
    level = 1 - beta / len(grid)
    s = np.where(member == 1, 1, -1)
    rows = []
    for kp, km in grid:
        t = guesses(score, kp, km, seed=seed)
        r, v = int(np.abs(t).sum()), int((t * s > 0).sum())
        rows.append({"k_plus": kp, "k_minus": km, "r": r, "v": v,
                     "eps_lower_bound": epsilon_lower_bound(m, r, v, delta=delta, confidence=level)})
    best = max(rows, key=lambda d: d["eps_lower_bound"])
    return {"eps_lower_bound": best["eps_lower_bound"], "k_plus": best["k_plus"], "k_minus": best["k_minus"],
            "r": best["r"], "v": best["v"], "m": m, "delta": float(delta), "confidence": confidence,
            "n_tests": len(grid), "grid_counts": rows, "max_certifiable": max_certifiable_epsilon(m, level)}


def group_privacy(eps: float, delta: float, k: int) -> tuple[float, float]:
    """(ε, δ)-DP per record ⇒ (kε, k·e^{(k−1)ε}·δ)-DP for a group of k records (a canary repeated k
    times). δ is capped at 1."""
    k = int(k)
    if k < 1:
        raise ValueError(f"group size must be ≥ 1, got {k}")
    if math.isinf(eps):
        return math.inf, 1.0
    if delta == 0:
        return k * eps, 0.0
    log_d = math.log(k) + (k - 1) * eps + math.log(delta)
    return k * eps, (1.0 if log_d >= 0 else math.exp(log_d))
