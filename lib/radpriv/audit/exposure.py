"""Canary exposure (Carlini et al. 2019, "The Secret Sharer", USENIX Security).

A secret s of a known format (here ``NNNN-NNNN`` as in :data:`radpriv.data.synthetic.CANARY_TEMPLATE`)
is ranked among candidates r of the same format by the model's log-perplexity of the secret given its
context, ``-log P(r | context)`` (lower = more likely). With the rank of s among R candidates,

    exposure = log2 |R| − log2 rank(s).

Enumerating all 9000² candidates is out of reach on a CPU, so -- as in the paper -- the rank is taken
among ``m`` candidates drawn uniformly from the format plus the secret itself (``|R| = m + 1``): the
**sampled exposure** is at most ``log2(m+1)``. The paper's distribution-fitting estimate
(section 4.3) extrapolates beyond that cap: fit a skew-normal to the candidates' log-perplexities and
take ``exposure ≈ −log2 F(logppl(s))`` (:func:`extrapolated_exposure`).

A secret the model never saw has a uniformly distributed rank, so its exposure has
``P(exposure ≥ t) ≈ 2^-t`` and mean ``1/ln 2 ≈ 1.44`` bits: that is "chance".
"""

from __future__ import annotations

import math
import random

import numpy as np


def secret_format_space(low: int = 1000, high: int = 9999) -> int:
    """Number of distinct secrets ``AAAA-BBBB`` with both halves in [low, high]."""
    return (high - low + 1) ** 2


def random_secrets(m: int, seed: int = 0, exclude=(), low: int = 1000, high: int = 9999) -> list[str]:
    """``m`` distinct secrets of the canary format, uniformly drawn, none in ``exclude``."""
    rng = random.Random(f"radpriv/audit/candidates/{seed}")
    excl, out = set(exclude), []
    seen = set()
    while len(out) < m:
        s = f"{rng.randint(low, high)}-{rng.randint(low, high)}"
        if s in excl or s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out


def rank_of(secret_score: float, candidate_scores) -> float:
    """1-based rank of the secret among itself + candidates by ascending log-perplexity (ties: half)."""
    c = np.asarray(candidate_scores, dtype=float)
    return 1.0 + float((c < secret_score).sum()) + 0.5 * float((c == secret_score).sum())


def exposure_from_scores(secret_score: float, candidate_scores) -> float:
    """Sampled exposure: log2(m+1) − log2(rank) over the secret and ``m`` candidates."""
    m = len(candidate_scores)
    return math.log2(m + 1) - math.log2(rank_of(secret_score, candidate_scores))


def extrapolated_exposure(secret_score: float, candidate_scores) -> float:
    """Distribution-fitting exposure (Carlini et al. §4.3): −log2 of the fitted skew-normal CDF at the
    secret's log-perplexity. Unbounded above; close to the sampled exposure where that is not capped."""
    from scipy import stats

    c = np.asarray(candidate_scores, dtype=float)
    a, loc, scale = stats.skewnorm.fit(c)
    logcdf = float(stats.skewnorm.logcdf(secret_score, a, loc, scale))
    return max(0.0, -logcdf / math.log(2))
