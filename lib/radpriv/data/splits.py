"""Train / validation / test splits: iterative stratification for multi-label data (Sechidis et al.
2011, via the ``iterative-stratification`` package), stratified splitting for single-label data.

Fractions may be zero: ``(0.8, 0, 0.2)`` has no validation rows and ``(0, 0, 1)`` makes an
evaluation-only dataset (every row a test row). With three positive fractions the assignment is the
one this module always produced (the embedded corpora's pinned digests depend on it).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

SPLITS = ("train", "validation", "test")


def check_fractions(fractions) -> tuple[float, float, float]:
    """Three non-negative numbers (train, validation, test) summing to 1, or ValueError."""
    try:
        vals = list(fractions)
    except TypeError:
        vals = None
    ok = (vals is not None and len(vals) == 3
          and all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in vals)
          and abs(sum(vals) - 1) <= 1e-6)
    if not ok:
        # "positive numbers or zeros" (not "non-negative") keeps the wording older callers match on
        raise ValueError(f"fractions must be three positive numbers or zeros (train, validation, test) summing to 1, "
                         f"got {list(vals) if vals is not None else fractions!r}; e.g. [0.6, 0.2, 0.2], [0.8, 0, 0.2], "
                         "or [0, 0, 1] (`splits: none`) for an evaluation-only dataset")
    return float(vals[0]), float(vals[1]), float(vals[2])


def _shuffle_cut(idx: np.ndarray, frac_second: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = idx[np.random.RandomState(seed).permutation(len(idx))]
    k = min(len(idx), max(1, round(frac_second * len(idx))))
    return order[k:], order[:k]


def _cut(idx: np.ndarray, y: np.ndarray, frac_second: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (first, second) with about ``frac_second`` of the rows in the second part.

    Stratified where possible; sizes or label counts sklearn cannot stratify fall back to a seeded shuffle
    (they used to raise), and a fraction of 0 or 1 gives an empty part.
    """
    if frac_second <= 0 or len(idx) == 0:
        return idx, idx[:0]
    if frac_second >= 1:
        return idx[:0], idx
    if len(idx) < 2:
        return _shuffle_cut(idx, frac_second, seed)
    try:
        if y.ndim == 1:
            from sklearn.model_selection import train_test_split

            a, b = train_test_split(idx, test_size=frac_second, random_state=seed, stratify=y[idx] if stratify else None)
        else:
            from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

            msss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=frac_second, random_state=seed)
            a_i, b_i = next(msss.split(idx.reshape(-1, 1), y[idx]))
            a, b = idx[a_i], idx[b_i]
    except ValueError:  # too few rows of a class for this test size: no stratification possible
        return _shuffle_cut(idx, frac_second, seed)
    return np.asarray(a), np.asarray(b)


def assign_splits(labels, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> np.ndarray:
    """Return an array of "train"/"validation"/"test", one per row.

    ``labels``: a 1-D array of class labels (single-label) or a 2-D 0/1 matrix (multi-label).
    ``fractions``: three non-negative numbers summing to 1; a zero fraction gives no rows of that split.
    """
    f_tr, f_va, f_te = check_fractions(fractions)
    y = np.asarray(labels)
    n = len(y)
    idx = np.arange(n)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    if n < 10:  # too few rows to stratify: a seeded shuffle cut by the fractions
        order = np.random.RandomState(seed).permutation(n)
        n_tr = max(1, round(f_tr * n)) if f_tr > 0 else 0
        n_va = min(round(f_va * n), n - n_tr) if f_va > 0 else 0
        if f_te == 0:  # nothing for test: the rest goes to the last split with a share
            if f_va > 0:
                n_va = n - n_tr
            else:
                n_tr = n
        out[order[:n_tr]], out[order[n_tr:n_tr + n_va]], out[order[n_tr + n_va:]] = "train", "validation", "test"
        return out
    rest_frac = f_va + f_te
    if y.ndim == 1:
        counts = np.unique(y, return_counts=True)[1]
        strat = bool(counts.min() >= 3)
        tr, rest = _cut(idx, y, rest_frac, seed, strat)
        strat_rest = strat and len(rest) > 0 and bool(np.unique(y[rest], return_counts=True)[1].min() >= 2)
    else:
        tr, rest = _cut(idx, y, rest_frac, seed, True)
        strat_rest = True
    va, te = _cut(rest, y, f_te / rest_frac if rest_frac > 0 else 0.0, seed, strat_rest)
    out[tr], out[va], out[te] = "train", "validation", "test"
    return out
