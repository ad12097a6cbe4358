"""Label-set comparison: thresholds, sensitivity/specificity, DeLong tables, exclusions."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radpriv.downstream.compare import compare_label_sets, text_trainer, threshold_metrics
from radpriv.evaluate.scoring import choose_thresholds


def test_youden_threshold_and_metrics():
    y = np.array([[0], [0], [0], [1], [1], [1]])
    p = np.array([[0.1], [0.2], [0.6], [0.5], [0.8], [0.9]])
    thr = choose_thresholds(np.array([[0], [0], [0], [1], [1], [1]]), np.array([[0.1], [0.2], [0.6], [0.7], [0.8], [0.9]]),
                            rule="youden")
    assert thr[0] == pytest.approx(0.7)  # the only cut with sensitivity 1 and specificity 1
    t = threshold_metrics(y, p, np.array([0.5]), ["x"]).iloc[0]
    assert (t.tp, t.fn, t.tn, t.fp) == (3, 0, 2, 1)
    assert t.sensitivity == 1.0 and t.specificity == pytest.approx(2 / 3)
    assert t.sens_ci_low < 1.0 and t.spec_ci_low < t.specificity < t.spec_ci_high
    one_class = choose_thresholds(np.zeros((4, 1)), np.array([[0.1], [0.2], [0.3], [0.4]]), rule="youden")
    assert one_class[0] == pytest.approx(0.4)


def _setup(n=240, seed=0):
    """Labels whose 'uncertain' part is noise: label set A = reference, B = reference with flipped positives."""
    rng = np.random.default_rng(seed)
    ids = [f"r{i}" for i in range(n)]
    ref = pd.DataFrame((rng.random((n, 4)) < 0.3).astype(int), index=pd.Index(ids, name="report_id"),
                       columns=["a", "b", "c", "rare"])
    ref["rare"] = 0
    ref.iloc[-5:, 3] = 1  # positives only in the last rows (test), none in training
    noisy = ref.copy()
    flip = rng.random(ref.shape) < 0.25
    noisy[:] = np.where(flip & (ref == 1), 0, ref)
    split = pd.Series(["train"] * 150 + ["validation"] * 40 + ["test"] * 50, index=ids)
    feats = ref.to_numpy() * 1.5 + rng.normal(0, 1, (n, 4))
    return ref, noisy, split, feats


def test_compare_label_sets_tables():
    ref, noisy, split, feats = _setup()
    cmp = compare_label_sets({"clean": ref, "noisy": noisy}, ref, split, text_trainer(feats), reference_name="ref")
    assert cmp.findings == ["a", "b", "c"]
    assert "rare" in cmp.excluded and "training positives" in cmp.excluded["rare"]
    assert cmp.y_test.shape == (50, 3) and cmp.report_ids[0] == "r190"
    aucs = cmp.auc_table()
    assert len(aucs) == 6 and ((aucs.ci_low <= aucs.auc) & (aucs.auc <= aucs.ci_high)).all()
    # the AUC table agrees with sklearn
    run = cmp.runs["clean"]
    assert aucs.iloc[0].auc == pytest.approx(roc_auc_score(cmp.y_test[:, 0], run.proba_test[:, 0]))
    macro = cmp.macro_auc().set_index("label_set")
    assert macro.loc["clean", "macro_auc"] == pytest.approx(aucs[aucs.label_set == "clean"].auc.mean())
    m, per = cmp.delong_tests(n_resamples=200)
    assert len(m) == 1 and len(per) == 3
    row = m.iloc[0]
    assert row.difference == pytest.approx(macro.loc["clean", "macro_auc"] - macro.loc["noisy", "macro_auc"])
    assert 0 <= row.p_delong <= 1 and row.boot_ci_low <= row.difference <= row.boot_ci_high
    assert (per.p_holm >= per.p).all()
    thr = cmp.threshold_table()
    assert set(thr.label_set) == {"clean", "noisy"} and thr.sensitivity.between(0, 1).all()
    fig = cmp.curves("pr")
    assert len(fig.axes) >= 3
    cmp.curves("roc")


def test_identical_label_sets_are_not_different():
    ref, _, split, feats = _setup(seed=1)
    cmp = compare_label_sets({"x": ref, "y": ref.copy()}, ref, split, text_trainer(feats))
    m, per = cmp.delong_tests(n_resamples=100)
    assert m.iloc[0].difference == 0 and m.iloc[0].p_delong == 1.0


def test_compare_errors():
    ref, noisy, split, feats = _setup()
    with pytest.raises(ValueError, match="lacks 10 report"):
        compare_label_sets({"a": ref, "b": noisy.iloc[10:]}, ref, split, text_trainer(feats))
    with pytest.raises(ValueError, match="no validation rows"):
        compare_label_sets({"a": ref}, ref, split.replace("validation", "train"), text_trainer(feats))
    with pytest.raises(ValueError, match="split has no value"):
        compare_label_sets({"a": ref}, ref, split.iloc[5:], text_trainer(feats))


# ---------------------------------------------------------------------------------------------
# DeLong cross-checks: an independent O(m*n) computation from the psi kernel (DeLong et al. 1988)
# ---------------------------------------------------------------------------------------------
def _psi_components(y, s):
    """Brute force: psi(x_i, y_j) = 1 / 0.5 / 0; V10 per positive, V01 per negative."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(1), psi.mean(0)


def _brute_paired_delong(y, sa, sb):
    """Paired DeLong z for AUC(a) - AUC(b), the 2x2 covariance written out term by term."""
    aa, v10a, v01a = _psi_components(y, sa)
    ab, v10b, v01b = _psi_components(y, sb)
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return aa - ab, (aa - ab) / np.sqrt(var)


def _brute_macro_cases(Y, sa, sb):
    """Case-level macro difference: per case, mean over findings of the scaled influence terms, from psi."""
    n_cases, K = Y.shape
    phi, est = np.zeros(n_cases), 0.0
    for k in range(K):
        y = Y[:, k]
        pi, ni = np.where(y == 1)[0], np.where(y == 0)[0]
        m, n = len(pi), len(ni)
        for s, sign in ((sa, 1), (sb, -1)):
            a, v10, v01 = _psi_components(y, s[:, k])
            est += sign * a / K
            for i, v in zip(pi, v10):
                phi[i] += sign * np.sqrt(m / (m - 1)) * (v - a) / m / K
            for j, v in zip(ni, v01):
                phi[j] += sign * np.sqrt(n / (n - 1)) * (v - a) / n / K
    return est, np.sqrt(np.sum(phi ** 2))


def test_delong_golden_values_by_hand():
    from radpriv import evaluate

    # y = 1,1,0,0; scores .9,.4,.5,.1: AUC 3/4; V10 = (1, .5), V01 = (.5, 1): var = .125/2 + .125/2 = .125
    y, s = np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])
    r = evaluate.delong_auc_ci(y, s)
    assert r["auc"] == pytest.approx(0.75) and r["se"] == pytest.approx(np.sqrt(0.125))
    c = evaluate.macro_auc_delong(y[:, None], s[:, None]).set_index("label").loc["macro"]
    assert c["auc"] == pytest.approx(0.75) and c["se"] == pytest.approx(np.sqrt(0.125))
    assert c["ci_high"] == 1.0  # 0.75 + 1.96 * 0.354 > 1: clipped to [0, 1]


def test_delong_paired_test_against_brute_force():
    from radpriv import evaluate

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    sa = y + rng.normal(0, 1.0, 120)
    sb = np.round(0.6 * y + 0.5 * sa + rng.normal(0, 1.0, 120), 1)  # correlated with a, with ties
    diff, z = _brute_paired_delong(y, sa, sb)
    t = evaluate.delong_roc_test(y, sa, sb)
    assert t["difference"] == pytest.approx(diff) and t["z"] == pytest.approx(z, rel=1e-9)
    c = evaluate.macro_auc_delong_test(y[:, None], sa[:, None], sb[:, None])  # one finding: exactly the paired DeLong test
    assert c["estimate"] == pytest.approx(diff) and c["z"] == pytest.approx(z, rel=1e-9)
    assert c["p"] == pytest.approx(t["pvalue"], rel=1e-9)


def test_macro_auc_ci_is_case_level_and_clipped():
    """One macro DeLong for every caller (evaluate.macro_auc_delong): its SE is the case-level one (brute force
    from psi; a constant scorer b has zero influence, so (a - b) reduces to a alone), not the independent-findings
    SE the old table used, and a near-perfect scorer's CI stays inside [0, 1]."""
    from radpriv import evaluate

    rng = np.random.default_rng(11)
    n = 200
    kids = (rng.random((n, 2)) < 0.3).astype(int)
    Y = np.column_stack([kids.max(1), kids])
    S = Y + rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.4, (n, 3))  # a per-case error shared by the findings
    est, se = _brute_macro_cases(Y, S, np.zeros_like(S))
    t = evaluate.macro_auc_delong(Y, S, ["any", "left", "right"]).set_index("label")
    assert t.loc["macro", "auc"] == pytest.approx(est + 0.5)
    assert t.loc["macro", "se"] == pytest.approx(se, rel=1e-9)
    indep = np.sqrt(np.sum(t.loc[["any", "left", "right"], "se"] ** 2)) / 3
    assert t.loc["macro", "se"] > 1.1 * indep  # the old formula understated it on correlated findings
    near = evaluate.macro_auc_delong(Y[:40], Y[:40] + rng.normal(0, 0.05, (40, 3)))
    assert near.ci_high.max() <= 1.0 and near.ci_low.min() >= 0.0
    few = Y.copy()
    few[:, 2] = 0
    few[0, 2] = 1  # one positive only: left out of the macro mean, and said so
    t2 = evaluate.macro_auc_delong(few, S, ["any", "left", "right"])
    assert list(t2.label) == ["any", "left", "macro"] and "right" in t2.attrs["excluded"]


def test_macro_delong_keeps_correlation_between_findings():
    """Correlated findings (a parent = OR of two children): the case-level macro SE matches brute force, is
    close to the bootstrap SD, and is larger than the SE that assumes independent findings."""
    from radpriv import evaluate

    rng = np.random.default_rng(5)
    n = 300
    kids = (rng.random((n, 2)) < 0.25).astype(int)
    Y = np.column_stack([kids.max(1), kids])
    # each model has a per-case error shared by its findings: its AUC errors correlate across findings
    sa = Y + rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, 3))
    sb = 0.7 * Y + rng.normal(0, 1, (n, 1)) + rng.normal(0, 0.5, (n, 3))
    est, se = _brute_macro_cases(Y, sa, sb)
    c = evaluate.macro_auc_delong_test(Y, sa, sb)
    assert c["estimate"] == pytest.approx(est) and c["se"] == pytest.approx(se, rel=1e-9)
    assert c["estimate"] == pytest.approx(np.mean([roc_auc_score(Y[:, k], sa[:, k]) - roc_auc_score(Y[:, k], sb[:, k])
                                                   for k in range(3)]))
    boots = []
    for _ in range(500):
        i = rng.integers(0, n, n)
        boots.append(np.mean([roc_auc_score(Y[i, k], sa[i, k]) - roc_auc_score(Y[i, k], sb[i, k]) for k in range(3)]))
    assert abs(c["se"] - np.std(boots)) < 0.2 * np.std(boots)
    from radpriv.downstream.compare import _paired_bootstrap_macro_diff

    point, lo, hi = _paired_bootstrap_macro_diff(Y, sa, sb, 500, 0)  # vectorised midrank AUCs
    assert point == pytest.approx(c["estimate"]) and lo < point < hi
    assert (hi - lo) / 3.92 == pytest.approx(np.std(boots), rel=0.2)
    indep = np.sqrt(sum(_brute_paired_delong(Y[:, k], sa[:, k], sb[:, k])[0] ** 2 /
                        _brute_paired_delong(Y[:, k], sa[:, k], sb[:, k])[1] ** 2 for k in range(3))) / 3
    assert c["se"] > indep  # positively correlated findings: independence understates the variance
