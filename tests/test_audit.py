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


# ------------------------------------------------------------------------------------------ MIA metrics
def test_indistinguishable_members_give_auc_half_and_no_epsilon():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(400, int), np.zeros(400, int)]
    s = rng.normal(size=800)  # the same score distribution for both
    m = mia.attack_metrics(y, s, delta=1e-3)
    assert m["auc_low"] <= 0.5 <= m["auc_high"] and abs(m["auc"] - 0.5) < 0.06
    assert m["eps_lower_bound"] < 0.5
    assert m["tpr_at_0.01_fpr"] < 0.08


def test_perfect_attack_bound_limited_by_sample_size():
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    s = y + 0.0
    e = mia.empirical_epsilon(y, s)
    assert e["tp"] == 50 and e["fp"] == 0
    assert 2.0 < e["eps_lower_bound"] < math.log(50)  # Clopper–Pearson caps what 50+50 examples can show
    assert mia.tpr_at_fpr(y, s, 0.01) == 1.0


def test_membership_split_is_disjoint_and_skips_canaries():
    import pandas as pd

    f = pd.DataFrame({"text": [f"r{i}" for i in range(40)], "canary": [""] * 36 + ["1234-5678"] * 4})
    p = mia.membership_split(f, 10, 8, seed=1)
    idx = [set(p[k].index) for k in ("members", "nonmembers", "reference")]
    assert [len(i) for i in idx] == [10, 10, 8]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert all(f.loc[list(i), "canary"].eq("").all() for i in idx)
    with pytest.raises(ValueError, match="needs"):
        mia.membership_split(f, 15, 8)


def test_untrained_on_both_sets_gives_auc_near_half():
    """A real model (TF-IDF + logistic regression) attacked on two sets it never saw."""
    from radpriv.data import load_dataset
    from radpriv.dp.train import tfidf_logreg

    ds = load_dataset("synthetic_cxr")
    f = ds.frame[ds.frame.canary.fillna("") == ""]
    tr, a, b = f.iloc[:200], f.iloc[200:350], f.iloc[350:500]
    Y = lambda d: mia.label_matrix(d, ds.label_columns)  # noqa: E731
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
def test_empirical_epsilon_never_exceeds_accountant_on_dp_model(cxr):
    from radpriv.dp.train import TrainConfig
    from radpriv.llm import registry

    ds, f = cxr
    enc = registry.get_model("minilm-l6").local_path
    common = dict(epochs=2, batch_size=12, lr=2e-3, max_length=64, max_chunks=1, stride=0, seed=0)
    common = {k: v for k, v in common.items() if k in TrainConfig.__dataclass_fields__}
    cfgs = {"DP-LoRA ε=1": TrainConfig(mode="dp-lora", epsilon=1.0, **common),
            "DP-LoRA ε=8": TrainConfig(mode="dp-lora", epsilon=8.0, **common)}
    table, scores, results = mia.run_membership_audit(f, ds.label_columns, enc, cfgs, n_members=24, n_reference=24,
                                                      reference_config=TrainConfig(mode="lora", **common))
    assert len(table) == 4
    for _, row in table.iterrows():
        assert math.isfinite(row.epsilon) and row.epsilon <= results[row.model].config.epsilon * 1.02
        assert row.eps_lower_bound <= row.epsilon
