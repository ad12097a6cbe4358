"""Statistics helpers against hand-computed values and independent computations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from radpriv.evaluate import (cochrans_q, delong_auc_ci, delong_roc_test, holm,
                              macro_auc_delong, mcnemar_test, pairwise_mcnemar, trend_test)


def test_mcnemar_exact_hand_computed():
    # b = 10 items only A right, c = 2 only B right: exact two-sided binomial p = 2 * P(X <= 2 | n=12, 0.5)
    a = [1] * 10 + [0] * 2 + [1] * 5
    b = [0] * 10 + [1] * 2 + [1] * 5
    r = mcnemar_test(a, b)
    expected = 2 * sum(sps.binom.pmf(k, 12, 0.5) for k in range(3))
    assert r["exact"] and r["b"] == 10 and r["c"] == 2
    assert r["pvalue"] == pytest.approx(expected) == pytest.approx(0.0386, abs=1e-4)


def test_cochrans_q_hand_computed():
    x = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0], [1, 1, 0]])
    k, col, row, total = 3, x.sum(0), x.sum(1), x.sum()
    q = (k - 1) * (k * np.sum(col ** 2) - total ** 2) / (k * total - np.sum(row ** 2))  # = 2*(3*35-81)/(3*9-19) = 6.0
    r = cochrans_q(x)
    assert q == pytest.approx(6.0)
    assert r["statistic"] == pytest.approx(6.0) and r["df"] == 2
    assert r["pvalue"] == pytest.approx(sps.chi2.sf(6.0, 2))


def test_holm_known_values():
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_pairwise_mcnemar_fixed_comparator_or_all_pairs():
    """A comparator named in advance, or all pairs; never "against the best" (chosen on the same reports). The
    p-values are recomputed here with scipy's binomial test and Holm by hand."""
    c = pd.DataFrame({"good": [1] * 18 + [0] * 2, "bad": [0] * 12 + [1] * 8, "mid": [1] * 14 + [0] * 6}).astype(bool)
    t = pairwise_mcnemar(c, comparator="mid")
    assert list(zip(t.system_a, t.system_b)) == [("mid", "good"), ("mid", "bad")]
    assert "fixed in advance" in t.attrs["design"]
    # mid vs good: only mid right 0, only good right 4; mid vs bad: only mid right 12, only bad right 6 (exact)
    assert t.only_a_right.tolist() == [0, 12] and t.only_b_right.tolist() == [4, 6]
    p = [sps.binomtest(0, 4, 0.5).pvalue, sps.binomtest(12, 18, 0.5).pvalue]
    assert t.p.tolist() == pytest.approx(p)
    order = np.argsort(p)
    adj = np.maximum.accumulate([min(1, (len(p) - i) * p[j]) for i, j in enumerate(order)])
    assert t.p_holm.to_numpy()[order] == pytest.approx(adj)
    every = pairwise_mcnemar(c)
    assert len(every) == 3 and "all 3 pairs" in every.attrs["design"]
    assert set(zip(every.system_a, every.system_b)) == {("good", "bad"), ("good", "mid"), ("bad", "mid")}
    with pytest.raises(ValueError, match="comparator 'reader' is not among"):
        pairwise_mcnemar(c, comparator="reader")


def _structural_components_delong(y, s):
    """Independent O(m*n) DeLong: psi kernel, structural components, variance (DeLong et al. 1988)."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(1), psi.mean(0)
    return auc, np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg)


def test_delong_against_brute_force_and_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s1 = y + rng.normal(0, 1.0, 300)
    s2 = np.round(y * 0.5 + rng.normal(0, 1.0, 300), 1)  # ties on purpose
    for s in (s1, s2):
        auc, var = _structural_components_delong(y, s)
        r = delong_auc_ci(y, s)
        assert r["auc"] == pytest.approx(auc) == pytest.approx(roc_auc_score(y, s))
        assert r["se"] ** 2 == pytest.approx(var, rel=1e-9)
    boots = []
    for _ in range(400):
        i = rng.integers(0, 300, 300)
        boots.append(roc_auc_score(y[i], s1[i]) - roc_auc_score(y[i], s2[i]))
    t = delong_roc_test(y, s1, s2)
    assert t["difference"] == pytest.approx(roc_auc_score(y, s1) - roc_auc_score(y, s2))
    assert abs(t["difference"] / t["z"] - np.std(boots)) < 0.25 * np.std(boots)  # DeLong SE ≈ bootstrap SE
    assert delong_roc_test(y, s1, s1)["pvalue"] == pytest.approx(1.0)


def test_macro_auc_table():
    rng = np.random.default_rng(1)
    Y = rng.integers(0, 2, (200, 3))
    S = Y + rng.normal(0, 1, (200, 3))
    t = macro_auc_delong(Y, S, ["a", "b", "c"])
    assert list(t.label) == ["a", "b", "c", "macro"]
    assert t.auc.iloc[-1] == pytest.approx(t.auc.iloc[:3].mean())


def test_trend_test_matches_scipy_and_refuses_two_levels():
    from scipy.stats import kendalltau

    r = trend_test([0.01, 0.1, 1, 10, np.inf], [0.2, 0.3, 0.5, 0.7, 0.8])
    assert r["tau"] == pytest.approx(1.0) and r["levels"] == 5
    x, y = [1, 1, 4, 4, 8, 8], [0.5, 0.55, 0.6, 0.52, 0.7, 0.66]
    ref = kendalltau(x, y)
    assert trend_test(x, y)["tau"] == pytest.approx(ref.statistic) and trend_test(x, y)["pvalue"] == pytest.approx(ref.pvalue)
    with pytest.raises(ValueError, match="at least 3 distinct levels"):
        trend_test([1, 8], [0.4, 0.6])
