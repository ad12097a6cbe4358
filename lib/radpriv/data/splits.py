"""Train / validation / test splits: iterative stratification for multi-label data (Sechidis et al.
2011, via the ``iterative-stratification`` package), stratified splitting for single-label data."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from sklearn.model_selection import train_test_split

SPLITS = ("train", "validation", "test")


def assign_splits(labels, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> np.ndarray:
    """Return an array of "train"/"validation"/"test", one per row.

    ``labels``: a 1-D array of class labels (single-label) or a 2-D 0/1 matrix (multi-label).
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    y = np.asarray(labels)
    n = len(y)
    idx = np.arange(n)
    out = np.empty(n, dtype=object)
    if n < 10:  # too few rows to stratify: a seeded shuffle cut by the fractions
        order = np.random.RandomState(seed).permutation(n)
        n_tr = max(1, round(fractions[0] * n))
        n_va = round(fractions[1] * n)
        out[order[:n_tr]], out[order[n_tr:n_tr + n_va]], out[order[n_tr + n_va:]] = "train", "validation", "test"
        return out
    rest_frac = fractions[1] + fractions[2]
    test_within_rest = fractions[2] / rest_frac
    if y.ndim == 1:
        counts = {c: int((y == c).sum()) for c in np.unique(y)}
        strat = y if min(counts.values()) >= 3 else None
        tr, rest = train_test_split(idx, test_size=rest_frac, random_state=seed, stratify=strat)
        strat_rest = y[rest] if strat is not None and min(np.unique(y[rest], return_counts=True)[1]) >= 2 else None
        va, te = train_test_split(rest, test_size=test_within_rest, random_state=seed, stratify=strat_rest)
    else:
        msss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=rest_frac, random_state=seed)
        tr, rest = next(msss.split(idx.reshape(-1, 1), y))
        msss2 = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_within_rest, random_state=seed)
        va_i, te_i = next(msss2.split(rest.reshape(-1, 1), y[rest]))
        va, te = rest[va_i], rest[te_i]
    out[tr], out[va], out[te] = "train", "validation", "test"
    return out
