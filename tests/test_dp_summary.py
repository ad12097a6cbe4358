"""Study 3's summary table and trend test, checked against numbers computed here by hand (issue 15, findings 4
and 5): over several seeds the mean of the per-seed F1 with a Student t interval over seeds; with one seed that
seed's bootstrap CI; a Kendall trend only with at least three distinct ε levels."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from radpriv.dp import grid
from radpriv.evaluate import trend_test

#: t_{0.975, 2}: the two-sided 95 % Student t quantile with 2 degrees of freedom, from a printed t table
#: (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2: 4.303), to 15 digits
T_975_DF2 = 4.302652729911275


def _run(mode, eps, seed, w, w_lo, w_hi, m, m_lo, m_hi, init=None, ach=None, secs=1.0):
    return {"mode": mode, "init": init, "epsilon": eps, "seed": seed, "weighted_f1": w, "weighted_f1_lo": w_lo,
            "weighted_f1_hi": w_hi, "macro_f1": m, "macro_f1_lo": m_lo, "macro_f1_hi": m_hi,
            "achieved_epsilon": eps if ach is None else ach, "train_seconds": secs}


RUNS = pd.DataFrame([
    # three seeds of one DP configuration: each with its own (deliberately different) bootstrap CI
    _run("dp-lora", 1.0, 0, 0.61, 0.50, 0.70, 0.40, 0.30, 0.52, ach=0.98, secs=10.0),
    _run("dp-lora", 1.0, 1, 0.70, 0.58, 0.79, 0.46, 0.35, 0.55, ach=0.99, secs=12.0),
    _run("dp-lora", 1.0, 2, 0.64, 0.52, 0.74, 0.43, 0.33, 0.50, ach=0.97, secs=11.0),
    # a baseline trained once (one seed): its bootstrap CI is the interval
    _run("tfidf-logreg", math.inf, 0, 0.88, 0.81, 0.93, 0.71, 0.60, 0.80),
    # three seeds of a near-perfect configuration: the t interval must be clipped at 1
    _run("lora", math.inf, 0, 0.99, 0.97, 1.0, 0.98, 0.95, 1.0, init="none"),
    _run("lora", math.inf, 1, 0.93, 0.90, 0.96, 0.90, 0.86, 0.94, init="none"),
    _run("lora", math.inf, 2, 1.00, 0.99, 1.0, 1.00, 0.98, 1.0, init="none"),
])


def _by_hand(values):
    """mean ± t·s/√n with the table t quantile, clipped to [0, 1] (statistics module, no numpy/scipy)."""
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T_975_DF2 * sd / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half), sd


def test_summary_over_three_seeds_is_the_mean_with_a_t_interval_over_seeds():
    s = grid.summarize(RUNS).set_index("mode")
    assert list(s.index) == ["dp-lora", "tfidf-logreg", "lora"]
    for metric, vals in (("weighted_f1", [0.61, 0.70, 0.64]), ("macro_f1", [0.40, 0.46, 0.43])):
        mean, lo, hi, sd = _by_hand(vals)
        row = s.loc["dp-lora"]
        assert row[metric] == pytest.approx(mean, abs=1e-12)
        assert row[f"{metric}_lo"] == pytest.approx(lo, abs=1e-9)  # the old code showed seed 0's 0.50 / 0.30
        assert row[f"{metric}_hi"] == pytest.approx(hi, abs=1e-9)
        assert row[f"{metric}_sd"] == pytest.approx(sd, abs=1e-12)
    # worked numbers for weighted F1: mean 0.65, s = 0.0458258, half-width 4.3027 * 0.0458258 / sqrt(3) = 0.1138375
    assert s.loc["dp-lora", "weighted_f1_lo"] == pytest.approx(0.65 - 0.1138375, abs=1e-6)
    assert s.loc["dp-lora", "weighted_f1_hi"] == pytest.approx(0.65 + 0.1138375, abs=1e-6)
    assert s.loc["dp-lora", "seeds"] == 3
    assert s.loc["dp-lora", "interval"] == "t 95% over 3 seeds"
    assert s.loc["dp-lora", "achieved_epsilon"] == pytest.approx(0.99)
    assert s.loc["dp-lora", "train_seconds"] == pytest.approx(11.0)


def test_t_interval_is_clipped_to_the_unit_interval():
    s = grid.summarize(RUNS).set_index("mode")
    mean, lo, hi, _ = _by_hand([0.99, 0.93, 1.00])
    assert hi == 1.0 and s.loc["lora", "weighted_f1_hi"] == 1.0
    assert s.loc["lora", "weighted_f1"] == pytest.approx(mean)
    assert s.loc["lora", "weighted_f1_lo"] == pytest.approx(lo, abs=1e-9)


def test_one_seed_shows_that_seeds_bootstrap_ci_and_says_so():
    s = grid.summarize(RUNS).set_index("mode")
    row = s.loc["tfidf-logreg"]
    assert (row["weighted_f1"], row["weighted_f1_lo"], row["weighted_f1_hi"]) == (0.88, 0.81, 0.93)
    assert (row["macro_f1"], row["macro_f1_lo"], row["macro_f1_hi"]) == (0.71, 0.60, 0.80)
    assert math.isnan(row["weighted_f1_sd"])
    assert row["init"] == "none" and row["seeds"] == 1
    assert row["interval"] == "bootstrap 95% CI of seed 0 (one seed)"


def test_duplicate_runs_of_one_cell_are_refused():
    with pytest.raises(ValueError, match="share"):
        grid.summarize(pd.concat([RUNS, RUNS.iloc[[0]]], ignore_index=True))


def test_seed_interval_needs_two_seeds():
    with pytest.raises(ValueError, match="two"):
        grid.seed_interval([0.5])


def test_trend_test_matches_scipy_kendalltau():
    x = [0.01, 0.01, 0.1, 0.1, 1.0, 1.0, 10.0, 10.0]
    y = [0.31, 0.28, 0.35, 0.41, 0.40, 0.52, 0.66, 0.61]
    r = trend_test(x, y)
    ref = kendalltau(x, y)  # tau-b, two-sided
    assert r["tau"] == pytest.approx(ref.statistic, abs=1e-12)
    assert r["pvalue"] == pytest.approx(ref.pvalue, abs=1e-12)
    assert (r["levels"], r["n"]) == (4, 8)
    # ∞ counts as the top level: the same as any finite value above 10
    r_inf = trend_test([0.1, 1.0, 10.0, math.inf], [0.3, 0.5, 0.45, 0.9])
    ref_inf = kendalltau([0.1, 1.0, 10.0, 1e6], [0.3, 0.5, 0.45, 0.9])
    assert r_inf["tau"] == pytest.approx(ref_inf.statistic) and r_inf["pvalue"] == pytest.approx(ref_inf.pvalue)
    assert r_inf["levels"] == 4


@pytest.mark.parametrize("x", [[1.0, 10.0], [1.0, 1.0, 10.0, 10.0], [1.0, math.inf], [5.0, 5.0, 5.0]])
def test_trend_test_refuses_fewer_than_three_levels(x):
    with pytest.raises(ValueError, match="at least 3 distinct levels"):
        trend_test(x, np.linspace(0.2, 0.8, len(x)))


def test_trend_table_runs_only_with_three_levels_and_says_why_otherwise():
    two = pd.DataFrame([_run("dp-lora", e, 0, f, 0, 1, f, 0, 1, init="none") for e, f in ((1.0, 0.5), (10.0, 0.7))]
                       + [_run("lora", math.inf, 0, 0.9, 0, 1, 0.9, 0, 1, init="none")]).assign(dataset="cxr")
    table, note = grid.trend_table(two)
    assert table.empty
    assert "No trend test is shown for cxr · dp-lora · none (ε = 1, 10)" in note
    assert "at least 3 distinct ε values" in note and "τ is ±1 and p = 1" in note
    three = pd.DataFrame([_run("dp-lora", e, s, f, 0, 1, f, 0, 1, init="none")
                          for (e, f), s in zip(((0.1, 0.4), (1.0, 0.5), (10.0, 0.7), (10.0, 0.65)), (0, 0, 0, 1))]
                         ).assign(dataset="cxr")
    table, note = grid.trend_table(three)
    assert note == ""
    assert len(table) == 1 and table.loc[0, "ε levels"] == 3 and table.loc[0, "runs"] == 4
    ref = kendalltau([0.1, 1.0, 10.0, 10.0], [0.4, 0.5, 0.7, 0.65])
    assert table.loc[0, "tau"] == pytest.approx(ref.statistic) and table.loc[0, "pvalue"] == pytest.approx(ref.pvalue)


def test_run_rows_flattens_the_accounting_inputs():
    runs = RUNS.iloc[:2].assign(accounting=[{"noise_multiplier": 1.2, "sample_rate": 0.25, "steps": 8,
                                             "delta": 1e-3, "target_epsilon": 1.0}, None])
    rows = grid.run_rows(runs)
    assert rows.loc[0, ["sigma", "q", "steps", "delta", "target_epsilon"]].tolist() == [1.2, 0.25, 8, 1e-3, 1.0]
    assert rows.loc[1, ["sigma", "q"]].isna().all()
    assert "accounting" not in rows
