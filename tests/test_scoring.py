"""score_labels: the comparator-row metrics with bootstrap CIs, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from radpriv.evaluate.scoring import binarize, score_labels
from radpriv.schemas import load_schema


def test_single_label_hand_computed():
    schema = load_schema("cmr")
    truth = pd.DataFrame({"report_id": list("abcd"), "label": ["normal", "normal", "ischemic", "myocarditis"]})
    pred = pd.DataFrame({"report_id": list("dcba"), "label": ["myocarditis", "ischemic", "ischemic", "normal"]})
    t = score_labels(truth, pred, schema, n_resamples=200).set_index("metric")
    assert t.loc["accuracy", "value"] == 0.75
    # per class F1: normal 2/3 (P 1, R .5), ischemic 2/3 (P .5, R 1), myocarditis 1 -> macro over present classes = 7/9
    assert t.loc["macro_f1", "value"] == pytest.approx(7 / 9, abs=1e-4)
    assert t.loc["accuracy", "ci_low"] <= 0.75 <= t.loc["accuracy", "ci_high"]


def test_single_label_macro_averages_share_one_class_set():
    """A schema category absent from the reference (and a prediction into it): macro precision, recall and F1
    all average over the same categories (those in the reference), as sklearn does with one labels= list; the
    old code averaged precision/recall over all 7 schema categories and F1 over the present ones only."""
    from sklearn.metrics import precision_recall_fscore_support

    from radpriv.evaluate.scoring import class_set, class_set_note

    schema = load_schema("cmr")
    yt = ["normal", "normal", "ischemic", "ischemic", "myocarditis", "normal"]
    yp = ["normal", "ischemic", "ischemic", "other", "myocarditis", "normal"]  # "other" is not in the reference
    truth = pd.DataFrame({"report_id": list("abcdef"), "label": yt})
    pred = pd.DataFrame({"report_id": list("abcdef"), "label": yp})
    keep, left = class_set(truth, schema)
    assert keep == [c for c in schema.ids if c in {"normal", "ischemic", "myocarditis"}] and len(left) == 4
    t = score_labels(truth, pred, schema, n_resamples=0).set_index("metric")["value"]
    # by hand: normal P 2/2 R 2/3; ischemic P 1/2 R 1/2; myocarditis P 1 R 1
    P, R = [1, 0.5, 1], [2 / 3, 0.5, 1]
    F = [2 * p * r / (p + r) for p, r in zip(P, R)]
    assert t["macro_precision"] == pytest.approx(sum(P) / 3, abs=1e-4)
    assert t["macro_recall"] == pytest.approx(sum(R) / 3, abs=1e-4)
    assert t["macro_f1"] == pytest.approx(sum(F) / 3, abs=1e-4)
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=keep, zero_division=0)
    assert t["weighted_f1"] == pytest.approx((f * s).sum() / s.sum(), abs=1e-4)
    note = class_set_note(truth, schema)
    assert note.startswith("class set: the 3 of 7 categories of schema cmr that occur in the reference")
    assert "left out (no reference report): " + ", ".join(left) in note


def test_multilabel_policies_and_state_accuracy():
    schema = load_schema("chexpert14")
    base = {f: "not_mentioned" for f in schema.ids}
    truth = pd.DataFrame([{"report_id": "a", **base, "edema": "present"}, {"report_id": "b", **base, "edema": "uncertain"}])
    pred = pd.DataFrame([{"report_id": "a", **base, "edema": "present"}, {"report_id": "b", **base, "edema": "present"}])
    ex = score_labels(truth, pred, schema, n_resamples=0).set_index("metric")
    inc = score_labels(truth, pred, schema, n_resamples=0, policy="inclusive").set_index("metric")
    assert ex.loc["macro_f1", "value"] == pytest.approx(2 / 3, abs=1e-4)  # P 1/2, R 1
    assert inc.loc["macro_f1", "value"] == 1.0
    assert ex.loc["state_accuracy", "value"] == pytest.approx(27 / 28, abs=1e-4)
    assert binarize(truth, ["edema"], "inclusive").ravel().tolist() == [1, 1]


def test_missing_predictions_are_refused_not_dropped():
    schema = load_schema("cmr")
    truth = pd.DataFrame({"report_id": ["a", "b"], "label": ["normal", "other"]})
    pred = pd.DataFrame({"report_id": ["a"], "label": ["normal"]})
    with pytest.raises(ValueError, match="1 reference reports have no prediction"):
        score_labels(truth, pred, schema)


def test_failures_are_scored_as_wrong_and_lost_reports_refused():
    from radpriv.evaluate.scoring import UNANSWERED, compare_systems, correctness, fill_failures

    schema = load_schema("cmr")
    truth = pd.DataFrame({"report_id": ["a", "b", "c"], "label": ["normal", "other", "myocarditis"]})
    answers = pd.DataFrame({"report_id": ["a", "c"], "label": ["normal", "myocarditis"]})
    failures = pd.DataFrame({"report_id": ["b"], "reason": ["timeout"]})
    pred = fill_failures(truth, answers, failures, schema)
    assert list(pred.label) == ["normal", UNANSWERED, "myocarditis"]
    table = compare_systems(truth, {"llm": pred}, schema, n_resamples=0)
    assert table.loc[0, "accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert correctness(truth, {"llm": pred})["llm"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="neither answered nor recorded as failures"):
        fill_failures(truth, answers, failures.iloc[0:0], schema)


def test_category_bias_recovers_a_planted_letter_prior_and_matches_class_frequencies():
    """Scores of a reader that sees the right category 70 % of the time, multiplied by a letter prior that
    favours A: the bias fitted on 'validation' removes the prior (recovered up to a common shift) and
    raises 'test' accuracy. With l2=0 the fit's own optimality condition holds, computed here with numpy:
    the mean calibrated probability of each category equals its frequency."""
    from radpriv.evaluate import apply_category_bias, fit_category_bias

    rng = np.random.default_rng(3)
    prior = np.array([8.0, 1.0, 0.5, 1.0])

    def draw(n):
        y = rng.integers(0, 4, n)
        base = rng.dirichlet(np.ones(4) * 0.5, n)
        base[np.arange(n), y] += np.where(rng.random(n) < 0.7, 1.5, 0.0)
        return base * prior, y

    pv, yv = draw(600)
    pt, yt = draw(600)
    bias = fit_category_bias(pv, yv, l2=0.0)
    planted = -np.log(prior) - (-np.log(prior)).mean()
    assert np.allclose(bias, planted, atol=0.35)
    q = apply_category_bias(pv, bias)
    assert np.allclose(q.sum(1), 1) and np.allclose(q.mean(0), np.bincount(yv, minlength=4) / len(yv), atol=1e-4)
    before, after = (pt.argmax(1) == yt).mean(), (apply_category_bias(pt, bias).argmax(1) == yt).mean()
    assert after > before + 0.15


def test_state_bias_is_the_category_bias_over_every_report_and_finding():
    """fit_state_bias (multi-label, three states shared by every finding) = fit_category_bias over the report x
    finding rows stacked here by hand, with 'not mentioned' read as 'absent'; it recovers a planted state prior."""
    import pandas as pd

    from radpriv.evaluate import fit_category_bias, fit_state_bias

    rng = np.random.default_rng(5)
    ids, states = ["a", "b", "c"], ["present", "absent", "uncertain"]
    prior = np.array([0.3, 4.0, 0.5])  # a reader that favours 'absent'
    n = 300
    truth = pd.DataFrame({"report_id": [f"r{i}" for i in range(n)]})
    ans = truth.copy()
    ys = []
    for f in ids:
        y = rng.integers(0, 3, n)
        ys.append(y)
        truth[f] = [("not_mentioned" if rng.random() < 0.5 else "absent") if k == 1 else states[k] for k in y]
        base = rng.dirichlet(np.ones(3), n)
        base[np.arange(n), y] += 1.0
        p = base * prior
        for j, s in enumerate(states):
            ans[f"p_{s}__{f}"] = p[:, j]
    got = fit_state_bias(ans.sample(frac=1, random_state=0), truth, ids)  # row order does not matter
    P = np.concatenate([ans[[f"p_{s}__{f}" for s in states]].to_numpy() for f in ids])
    want = fit_category_bias(P, np.concatenate(ys))
    assert [got[s] for s in states] == pytest.approx(list(want), abs=1e-6)
    planted = -np.log(prior) - (-np.log(prior)).mean()
    assert np.allclose(want, planted, atol=0.4)
    with pytest.raises(ValueError, match="lack state probabilities"):
        fit_state_bias(ans.drop(columns=["p_present__a"]), truth, ids)


def test_option_orders_are_distinct_permutations_and_refuse_too_many():
    from radpriv.llm.prompts import option_orders

    orders = option_orders(7, 5)
    assert orders[0] == list(range(7)) and orders[1] == list(range(7))[::-1]
    assert all(sorted(o) == list(range(7)) for o in orders) and len({tuple(o) for o in orders}) == 5
    assert option_orders(7, 3)[2] == [0, 3, 6, 2, 5, 1, 4]  # stride 3: every letter moves
    with pytest.raises(ValueError, match=r"orders=3: 2 categories have 1 to 2 option orders"):
        option_orders(2, 3)
    with pytest.raises(ValueError, match="orders=0"):
        option_orders(7, 0)


def test_option_orders_refuse_multilabel_and_template_mode_before_any_model_runs():
    from radpriv.llm.engine import label_frame_orders

    df = pd.DataFrame({"report_id": ["a"], "text": ["x"]})
    with pytest.raises(ValueError, match="thumb is multi-label"):
        label_frame_orders(df, "thumb", "no-such-model")
    with pytest.raises(ValueError, match="use mode='scoring'"):
        label_frame_orders(df, "cmr", "no-such-model", mode="template")
