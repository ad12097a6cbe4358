"""Privacy audit (issue 6): exposure, membership-inference metrics, empirical ε.

Fast tests check the statistics on synthetic scores; model-heavy ones (marked slow) fine-tune the
bundled SmolLM2 / MiniLM on a handful of synthetic reports."""

import math

import numpy as np
import pytest

from radpriv.audit import exposure as X
from radpriv.audit import mia


# ------------------------------------------------------------------------------------------ exposure
def test_exposure_extremes_and_ties():
    cands = np.arange(1, 101, dtype=float)
    assert X.exposure_from_scores(0.0, cands) == pytest.approx(math.log2(101))      # rank 1: maximal
    assert X.exposure_from_scores(1000.0, cands) == pytest.approx(0.0)             # rank m+1: none
    assert X.rank_of(5.0, [5.0, 5.0, 1.0]) == pytest.approx(1 + 1 + 1.0)           # ties count half


def test_random_secrets_format_distinct_and_exclusion():
    s = X.random_secrets(500, seed=3, exclude=["1000-1000"])
    assert len(set(s)) == 500 and "1000-1000" not in s
    assert all(len(x) == 9 and x[4] == "-" and x[:4].isdigit() and x[5:].isdigit() and x[0] != "0" for x in s)
    assert X.random_secrets(5, seed=3) == s[:5]  # deterministic


def test_never_seen_secret_has_chance_exposure():
    """A secret drawn like its candidates has a uniform rank: mean exposure ≈ 1/ln 2, P(≥t) ≈ 2^-t."""
    rng = np.random.default_rng(0)
    e = np.array([X.exposure_from_scores(rng.normal(), rng.normal(size=200)) for _ in range(2000)])
    assert e.mean() == pytest.approx(1 / math.log(2), abs=0.12)
    assert (e >= 3).mean() == pytest.approx(2 ** -3, abs=0.03)


def test_extrapolated_exposure_tracks_sampled_and_extends_beyond_cap():
    rng = np.random.default_rng(1)
    c = rng.normal(30, 2, size=500)
    assert X.extrapolated_exposure(30.0, c) == pytest.approx(1.0, abs=0.3)          # the median: 1 bit
    assert X.extrapolated_exposure(10.0, c) > math.log2(501)                          # far below every candidate


# ------------------------------------------------------------------------------------------ one-run audit
def _paper_p_value(m, r, v, eps, delta):
    """The p-value as the paper's routine computes it, written as a loop (a second implementation)."""
    from scipy import stats

    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, acc = 0.0, 0.0
    for i in range(1, v + 1):
        acc += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, acc / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


def _scipy_bound(r, v, beta):
    """Largest ε with P[Binomial(r, e^ε/(1+e^ε)) ≥ v] ≤ β, by scipy's root finder on the binomial tail."""
    from scipy import optimize, stats

    f = lambda e: stats.binom.sf(v - 1, r, 1 / (1 + math.exp(-e))) - beta  # noqa: E731
    return 0.0 if f(0.0) > 0 else optimize.brentq(f, 0.0, 50.0, xtol=1e-10)


def _randomized_response(m, eps, rng, reveal=0.0):
    """m canaries drawn in/out with probability 1/2 and an ε-DP mechanism per canary: randomized response
    (the truth with probability e^ε/(1+e^ε)). With ``reveal`` = δ the truth is also disclosed outright with
    probability δ -- an (ε, δ)-DP mechanism. Returns (member, score)."""
    s = rng.random(m) < 0.5
    out = np.where(rng.random(m) < 1 / (1 + math.exp(eps)), ~s, s).astype(float)
    shown = rng.random(m) < reveal
    score = np.where(shown, np.where(s, 10.0, -10.0), out) + rng.normal(0, 1e-3, m)
    return s.astype(int), score


def test_one_run_p_value_matches_scipy_and_a_second_implementation():
    from scipy import stats

    from radpriv.audit import one_run as O

    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 3000)); r = int(rng.integers(0, m + 1)); v = int(rng.integers(0, r + 1))
        eps, delta = float(rng.uniform(0, 6)), float(rng.choice([0.0, 1e-6, 1e-4, 1e-2]))
        want = _paper_p_value(m, r, v, eps, delta)
        assert O.p_value(m, r, v, eps, delta) == pytest.approx(want, rel=1e-9, abs=1e-15)
        if delta == 0:
            assert O.p_value(m, r, v, eps) == pytest.approx(stats.binom.sf(v - 1, r, math.exp(eps) / (1 + math.exp(eps))),
                                                            rel=1e-9, abs=1e-15)


def test_one_run_bound_is_the_largest_refuted_epsilon():
    from radpriv.audit import one_run as O

    for r, v in [(10, 10), (100, 80), (1000, 881), (500, 260), (48, 48), (20, 10)]:
        assert O.epsilon_lower_bound(r, r, v) == pytest.approx(_scipy_bound(r, v, 0.05), abs=1e-6)
    # (ε, δ): the δ term only lowers the bound; at the bound the paper's p-value is β
    for m, r, v, d in [(1000, 600, 600, 1e-5), (100, 100, 95, 1e-3), (5000, 1000, 900, 1e-6)]:
        e = O.epsilon_lower_bound(m, r, v, delta=d)
        assert 0 < e <= O.epsilon_lower_bound(m, r, v)
        assert _paper_p_value(m, r, v, e, d) == pytest.approx(0.05, abs=1e-6)
    assert O.epsilon_lower_bound(100, 50, 25) == 0.0               # chance accuracy refutes nothing
    assert O.max_certifiable_epsilon(48) == pytest.approx(O.epsilon_lower_bound(48, 48, 48), abs=1e-6)
    assert O.max_certifiable_epsilon(48) == pytest.approx(2.7426, abs=1e-3)   # logit(0.05^(1/48))


def test_guesses_take_top_and_bottom_and_grid_is_fixed_by_m():
    from radpriv.audit import one_run as O

    t = O.guesses([0.3, 0.9, 0.1, 0.5, 0.7], 2, 1)
    assert t.tolist() == [0, 1, -1, 0, 1]
    assert O.guess_grid(80) == [(4, 4), (10, 10), (20, 20), (40, 40)]
    assert O.guess_grid(10, two_sided=False) == [(1, 0), (3, 0), (5, 0), (10, 0)]
    with pytest.raises(ValueError):
        O.guesses([1.0, 2.0], 2, 1)


def test_one_run_coverage_is_exact_for_randomized_response():
    """For ε-DP randomized response the correct guesses among r are exactly Binomial(r, e^ε/(1+e^ε)), so
    P[bound > ε] is computable: it must be ≤ β, and not far below (the test is not merely conservative);
    a Monte-Carlo run of the whole audit (draw, mechanism, guesses) agrees."""
    from scipy import stats

    from radpriv.audit import one_run as O

    m, r, eps, beta = 200, 100, 1.0, 0.05
    q = math.exp(eps) / (1 + math.exp(eps))
    bound = np.array([O.epsilon_lower_bound(m, r, v) for v in range(r + 1)])
    exceed = float(stats.binom.pmf(np.arange(r + 1), r, q)[bound > eps].sum())
    assert 0.02 < exceed <= beta
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(400):
        y, s = _randomized_response(m, eps, rng)
        hits += O.one_run_audit(y, s, grid=[(50, 50)], seed=i)["eps_lower_bound"] > eps
    assert hits / 400 <= beta + 3 * math.sqrt(beta * (1 - beta) / 400)


def test_one_run_eps8_check_can_fail_and_comes_close_with_enough_canaries():
    """The ε = 8 check sized so it can fail: with m = 20 000 canaries a perfect attack could show ε ≈ 8.8
    (> 8), so "bound ≤ 8" is a real test. On an ε = 8 randomized-response mechanism the bound (default
    Bonferroni grid) must stay ≤ 8 in ≥ 95 % of draws and come close to 8 (the mechanism is exactly as
    private as claimed, and the attack is optimal)."""
    from radpriv.audit import one_run as O

    m, eps = 20_000, 8.0
    assert O.max_certifiable_epsilon(m, 1 - 0.05 / 4) > eps
    rng = np.random.default_rng(2)
    b = np.array([O.one_run_audit(*_randomized_response(m, eps, rng), seed=i)["eps_lower_bound"] for i in range(40)])
    assert (b > eps).mean() <= 0.05
    assert b.mean() > 6.0 and b.max() <= eps + 0.5


def test_choosing_the_best_guess_count_needs_the_bonferroni_correction():
    """The grid of (k₊, k₋) is fixed in advance and each point tested at β/|grid|: the best of the grid then
    exceeds ε at most β of the time. Taking the best point at the full β (choosing k after seeing the
    result) exceeds it about twice as often on an ε-DP mechanism."""
    from radpriv.audit import one_run as O

    rng = np.random.default_rng(5)
    corrected = naive = 0
    for i in range(400):
        y, s = _randomized_response(400, 1.0, rng)
        a = O.one_run_audit(y, s, seed=i)
        assert a["n_tests"] == 4 and a["eps_lower_bound"] == max(
            O.epsilon_lower_bound(400, g["r"], g["v"], confidence=1 - 0.05 / 4) for g in a["grid_counts"])
        corrected += a["eps_lower_bound"] > 1.0
        naive += max(O.epsilon_lower_bound(400, g["r"], g["v"]) for g in a["grid_counts"]) > 1.0
    assert corrected / 400 <= 0.05 < naive / 400


def test_one_run_delta_term_covers_an_eps_delta_mechanism():
    """(ε, δ)-DP mechanism: randomized response that also discloses the truth with probability δ. Guessing
    on the disclosed canaries only, the δ = 0 test would refute ε (≈10 perfect guesses); the paper's δ term
    prevents it."""
    from radpriv.audit import one_run as O

    m, eps, delta = 1000, 1.0, 0.01
    rng = np.random.default_rng(3)
    naive = honest = 0
    for i in range(200):
        y, s = _randomized_response(m, eps, rng, reveal=delta)
        naive += O.one_run_audit(y, s, grid=[(5, 5)], seed=i)["eps_lower_bound"] > eps
        honest += O.one_run_audit(y, s, delta=delta, grid=[(5, 5)], seed=i)["eps_lower_bound"] > eps
    assert naive / 200 > 0.2          # ignoring δ is refuted by the disclosure ...
    assert honest / 200 <= 0.05       # ... the (ε, δ) p-value is not


def test_group_privacy_is_k_epsilon():
    from radpriv.audit import one_run as O

    assert O.group_privacy(1.0, 1e-5, 1) == (1.0, pytest.approx(1e-5))
    e, d = O.group_privacy(0.5, 1e-6, 4)
    assert e == 2.0 and d == pytest.approx(4 * math.exp(1.5) * 1e-6)
    assert O.group_privacy(8.0, 1e-4, 16) == (128.0, 1.0)
    # pure DP, independently: k copies of ε-randomized response, all reporting "in", have likelihood ratio
    # (q/(1-q))^k between "in" and "out": exactly e^(kε)
    q = math.exp(0.7) / (1 + math.exp(0.7))
    assert math.log((q / (1 - q)) ** 5) == pytest.approx(O.group_privacy(0.7, 0.0, 5)[0])


def test_summary_reads_repeat_counts_from_the_data_not_16_4_1():
    """Finding 9: with canaries repeated 2 and 7 times the summary speaks of k = 7 and 2, and of 7ε."""
    import types

    import pandas as pd

    from radpriv.audit import report as R

    f = pd.DataFrame({"split": ["train"] * 12 + ["test"], "canary": ["1111-2222"] * 7 + ["3333-4444"] * 2 + [""] * 4})
    counts = R.repeat_counts(f)
    assert counts == {"1111-2222": 7, "3333-4444": 2}
    run = types.SimpleNamespace(epsilon=2.0, accounting={"delta": 1e-5}, history=[{"val_loss": 1.0}])
    exposure = pd.DataFrame({"model": ["DP ε=2"] * 3, "secret": ["1111-2222", "3333-4444", "5555-6666"],
                             "k": [7, 2, 0], "exposure": [5.0, 3.0, 1.0], "epsilon": [2.0] * 3})
    (line,) = R.summary_lines({"DP ε=2": run}, exposure, pd.DataFrame(), counts, n_candidates=63, confidence=0.95)
    assert "k=7 5.00, k=2 3.00" in line and "never inserted 1.00" in line and "7ε = 14" in line and "2ε = 4" in line
    assert "k=16" not in line and "k=4" not in line
    gp = R.group_privacy_table({"DP ε=2": run}, counts)
    assert gp["k"].tolist() == [2, 7] and gp["group ε (kε)"].tolist() == [4.0, 14.0]


# ------------------------------------------------------------------------------------------ MIA metrics
def test_indistinguishable_members_give_auc_half_and_no_epsilon():
    rng = np.random.default_rng(0)
    y = (rng.random(800) < 0.5).astype(int)
    s = rng.normal(size=800)  # the same score distribution for both
    m = mia.attack_metrics(y, s)
    assert m["auc_low"] <= 0.5 <= m["auc_high"] and abs(m["auc"] - 0.5) < 0.06
    assert m["eps_lower_bound"] == 0.0
    assert m["tpr_at_0.01_fpr"] < 0.08
    assert m["audit_delta"] == mia.AUDIT_DELTA and m["m"] == 800


def test_perfect_attack_bound_limited_by_number_of_audit_examples():
    from radpriv.audit import one_run as O

    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.5).astype(int)
    s = y + rng.normal(0, 0.01, 200)
    m = mia.attack_metrics(y, s, delta=0.0)
    assert m["correct"] == m["guesses"] == 200          # the 100 % grid point: every guess right
    assert m["eps_lower_bound"] == pytest.approx(O.max_certifiable_epsilon(200, 1 - 0.05 / 4), abs=1e-6)
    assert m["eps_lower_bound"] < math.log(200)
    assert mia.tpr_at_fpr(y, s, 0.01) == 1.0


def test_membership_split_is_disjoint_skips_canaries_and_draws_each_report_independently():
    import pandas as pd

    f = pd.DataFrame({"text": [f"r{i}" for i in range(40)], "canary": [""] * 36 + ["1234-5678"] * 4})
    p = mia.membership_split(f, 10, 8, seed=1)
    assert len(p["audit"]) == 20 and len(p["reference"]) == 8 and len(p["member"]) == 20
    assert set(p["members"].index) | set(p["nonmembers"].index) == set(p["audit"].index)
    assert not (set(p["members"].index) & set(p["nonmembers"].index))
    assert not (set(p["audit"].index) & set(p["reference"].index))
    assert list(p["members"].index) == list(p["audit"].index[p["member"] == 1])
    assert all(f.loc[list(p[k].index), "canary"].eq("").all() for k in ("audit", "reference"))
    with pytest.raises(ValueError, match="needs"):
        mia.membership_split(f, 15, 8)
    # independent Bernoulli(1/2) per report, not a fixed half: the count varies as Binomial(20, 1/2)
    n = np.array([mia.membership_split(f, 10, 8, seed=s)["member"].sum() for s in range(400)])
    assert n.mean() == pytest.approx(10, abs=0.4) and n.var() == pytest.approx(5, rel=0.3)
    # and inclusion does not depend on where a report sits in the draw
    inc = np.array([mia.membership_split(f, 10, 8, seed=s)["member"] for s in range(400)])
    assert np.abs(inc.mean(0) - 0.5).max() < 0.12


def test_untrained_on_both_sets_gives_auc_near_half():
    """A real model (TF-IDF + logistic regression) attacked on two sets it never saw."""
    from radpriv.data import load_dataset
    from radpriv.dp.train import tfidf_logreg
    from radpriv.evaluate.scoring import binarize

    ds = load_dataset("synthetic_cxr")
    f = ds.frame[ds.frame.canary.fillna("") == ""]
    tr, a, b = f.iloc[:200], f.iloc[200:350], f.iloc[350:500]
    Y = lambda d: binarize(d, list(ds.label_columns), "inclusive")  # noqa: E731
    proba, _ = tfidf_logreg(list(tr.text), Y(tr), list(a.text), Y(a))
    loss = np.r_[mia.per_sample_bce(proba(list(a.text)), Y(a)), mia.per_sample_bce(proba(list(b.text)), Y(b))]
    y = np.r_[np.ones(len(a), int), np.zeros(len(b), int)]
    m = mia.attack_metrics(y, mia.loss_attack(loss))
    assert m["auc_low"] <= 0.5 <= m["auc_high"]
    # and the model does separate its own training data from unseen data (the attack works at all)
    loss_tr = mia.per_sample_bce(proba(list(tr.text[:150])), Y(tr.iloc[:150]))
    m2 = mia.attack_metrics(np.r_[np.ones(150, int), np.zeros(150, int)],
                            mia.loss_attack(np.r_[loss_tr, loss[len(a):]]))
    assert m2["auc"] > 0.6


# ------------------------------------------------------------------------------------------ models (slow)
@pytest.fixture(scope="module")
def cxr():
    from radpriv.data import load_dataset

    ds = load_dataset("synthetic_cxr")
    f = ds.frame.copy()
    f["canary"] = f["canary"].fillna("").astype(str)
    return ds, f


@pytest.fixture(scope="module")
def smollm():
    from radpriv.audit import causal_lm

    return causal_lm.load_causal_lm("smollm2-135m")


@pytest.mark.slow
def test_trunk_cache_is_exact_and_kv_scoring_matches_direct(smollm, cxr):
    import torch

    from radpriv.audit import causal_lm as C

    tok, lm = smollm
    _, f = cxr
    rows = f[f.canary != ""].iloc[:3]
    ids, labels = C.encode_sequences(tok, list(rows.text), 48)
    with torch.no_grad():
        full = lm(input_ids=ids).logits
        top = C.TopLM(lm, 26)(C.trunk_hidden(lm, ids, 26))
    m = labels != -100
    assert torch.allclose(full[m], top[m], atol=1e-4)
    ctx = C.canary_context(rows.text.iloc[0], rows.canary.iloc[0])
    s = rows.canary.iloc[0]
    got = C.secret_logppl(lm, tok, ctx, [s, "1234-5678"])
    c_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    f_ids = tok(ctx + " " + s, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(lm(input_ids=torch.tensor([f_ids])).logits[0], -1)
    direct = -sum(float(lp[i - 1, f_ids[i]]) for i in range(len(c_ids), len(f_ids)))
    assert got[0] == pytest.approx(direct, rel=1e-4)


@pytest.mark.slow
def test_dp_lm_training_moves_lora_and_never_inserted_canary_is_at_chance(smollm, cxr):
    from radpriv.audit import causal_lm as C
    from radpriv.audit.exposure import random_secrets

    tok, _ = smollm
    _, f = cxr
    train = f[(f.split == "train") & (f.canary != "")].iloc[:16]
    cfg = C.LMConfig(dp=True, epsilon=4.0, epochs=1, batch_size=8, max_length=40, top_layers=2)
    r = C.train_lm(cfg, list(train.text), base=smollm)
    assert r.per_sample_grads_ok is True
    assert r.lora_b_norm > 0          # DP-SGD did change the adapters (lora_B starts at zero)
    assert r.epsilon <= 4.0 * 1.02 and r.accounting["ok"]
    held = f[f.split == "test"]
    controls = [{"secret": s, "k": 0, "context": C.control_context(t)}
                for s, t in zip(random_secrets(4, seed=99, exclude=set(f.canary)), held.text[:4])]
    tab = C.exposure_table(r.model, tok, controls, n_candidates=40, seed=0)
    # a never-inserted secret's rank is uniform: mean exposure ≈ 1.44 bits (max here log2(41) ≈ 5.4)
    assert tab.exposure.mean() < 3.3


@pytest.mark.slow
def test_one_run_epsilon_never_exceeds_accountant_on_dp_model(cxr):
    """A real DP-LoRA classifier, audited with 120 audit reports (each trained on with probability 1/2).
    Sized so the check can fail: 120 reports could certify up to ≈3.1 at the per-test level, above the
    accountant's ε ≈ 1.6 at the audit's δ (with the 12 + 12 reports of the old test nothing above ≈2 could
    be shown, so "bound ≤ 8" could never fail), and 8 epochs are enough for the loss attack to see a
    DP-SGD that forgot its noise (clipping only: AUC 0.97, bound 2.05 > 1.63): such a bug fails this test."""
    from radpriv.audit import one_run as O
    from radpriv.dp.train import TrainConfig
    from radpriv.models import registry

    ds, f = cxr
    enc = registry.get_model("minilm-l6").local_path
    common = dict(epochs=8, batch_size=12, lr=2e-3, max_length=64, max_chunks=1, stride=0, seed=0)
    cfgs = {"DP-LoRA ε=1": TrainConfig(mode="dp-lora", epsilon=1.0, **common)}
    table, scores, results, split = mia.run_membership_audit(f, ds.label_columns, enc, cfgs, n_members=60, n_reference=40,
                                                             reference_config=TrainConfig(mode="lora", **common))
    assert len(table) == 2 and len(split["member"]) == 120
    assert 0 < split["member"].sum() < 120
    for _, row in table.iterrows():
        assert math.isfinite(row.epsilon) and row.epsilon <= results[row.model].config.epsilon * 1.02
        assert row["delta"] == pytest.approx(1 / 600)                     # fixed before the draw
        assert row.epsilon_at_audit_delta > row.epsilon                     # smaller δ, larger ε (privacy profile)
        level = 1 - 0.05 / (2 * row.audit_tests)                            # two attacks × the guess grid
        assert row.max_certifiable == pytest.approx(O.max_certifiable_epsilon(120, level))
        assert row.max_certifiable > row.epsilon_at_audit_delta             # the check below can fail
        assert row.eps_lower_bound <= row.epsilon_at_audit_delta
        # the reported bound is recomputed from the scores with scipy's binomial tail
        s = scores[row.model][1 if row.attack == "loss threshold" else 2]
        y = np.where(split["member"] == 1, 1, -1)
        order = np.argsort(s)
        t = np.zeros(120, int); t[order[120 - row.k_plus:]] = 1; t[order[:row.k_minus]] = -1
        assert int((t * y > 0).sum()) == row.correct
