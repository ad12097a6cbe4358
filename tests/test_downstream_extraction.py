"""Study 2 extraction scoring: three template values, failures scored as wrong, accuracy/uncertainty/McNemar."""

import numpy as np
import pandas as pd
import pytest

from radpriv.downstream import extraction as ex
from radpriv.schemas import load_schema

ELBOW = load_schema("elbow")


def _frame(rows):
    recs = []
    for rid, states in rows.items():
        rec = {"report_id": rid, **{f: "not_mentioned" for f in ELBOW.ids}}
        rec.update(states)
        recs.append(rec)
    return pd.DataFrame(recs)


def test_template_states_merge_absent_and_not_mentioned_and_propagate_parents():
    df = _frame({"a": {"ossicle": "absent", "loose_body": "present"},
                 "b": {"fracture_radial_head": "uncertain"}})  # parent 'fracture' not mentioned
    t = ex.template_states(df, ELBOW)
    assert t.loc["a", "ossicle"] == "false" and t.loc["a", "exostosis"] == "false"  # absent == not mentioned
    assert t.loc["a", "loose_body"] == "true"
    assert t.loc["b", "fracture_radial_head"] == "uncertain" and t.loc["b", "fracture"] == "uncertain"
    assert set(np.unique(t.to_numpy())) <= set(ex.TEMPLATE_VALUES)


def test_failed_reports_are_unanswered_and_wrong_never_dropped():
    truth = _frame({"a": {"ossicle": "present"}, "b": {}, "c": {}})
    answers = _frame({"a": {"ossicle": "present"}, "b": {}})
    failures = pd.DataFrame([{"report_id": "c", "reason": "timeout", "detail": "..."}])
    long = ex.long_labels(truth, {"m": answers}, ELBOW, failures={"m": failures})
    assert len(long) == 3 * len(ELBOW.ids)
    assert (long.loc[long.report_id == "c", "pred"] == ex.UNANSWERED).all()
    assert not long.loc[long.report_id == "c", "correct"].any()
    acc = ex.label_accuracy(long, n_resamples=0).iloc[0]
    assert acc.label_accuracy == pytest.approx(2 / 3) and acc.unanswered_reports == 1 and acc.n_reports == 3
    with pytest.raises(ValueError, match="neither answered nor recorded"):
        ex.long_labels(truth, {"m": answers}, ELBOW)


def test_metrics_on_a_known_table():
    truth = _frame({"a": {"ossicle": "uncertain", "loose_body": "present"},
                    "b": {"ossicle": "uncertain"},
                    "c": {"exostosis": "present"}})
    pred = _frame({"a": {"ossicle": "uncertain", "loose_body": "present"},   # all right
                   "b": {"ossicle": "present"},                             # hedge missed
                   "c": {"exostosis": "present", "enthesopathy": "uncertain"}})  # spurious hedge
    long = ex.long_labels(truth, {"llm": pred}, ELBOW, region="elbow")
    n = len(ELBOW.ids)
    acc = ex.label_accuracy(long, n_resamples=200).iloc[0]
    assert acc.label_accuracy == pytest.approx((3 * n - 2) / (3 * n))
    assert acc.ci_low <= acc.label_accuracy <= acc.ci_high
    em = ex.exact_match(long, n_resamples=0).iloc[0]
    assert em.exact_match == pytest.approx(1 / 3)
    u = ex.uncertainty_detection(long, n_resamples=0).iloc[0]
    assert (u.true_uncertain, u.predicted_uncertain, u.both) == (2, 2, 1)
    assert u.precision == pytest.approx(0.5) and u.recall == pytest.approx(0.5)
    prf = ex.state_prf(long).set_index(["finding", "value"])
    assert prf.loc[("ossicle", "uncertain"), "recall"] == pytest.approx(0.5)
    assert prf.loc[("ossicle", "uncertain"), "precision"] == pytest.approx(1.0)
    assert prf.loc[("ossicle", "true"), "precision"] == 0.0 and prf.loc[("ossicle", "true"), "support"] == 0
    assert np.isnan(prf.loc[("dislocation", "uncertain"), "f1"])  # never true, never predicted: NaN, not 0


def test_mcnemar_against_the_rule_baseline_and_overall():
    truth = _frame({f"r{i}": {"ossicle": "present" if i % 2 else "absent"} for i in range(30)})
    good = truth.copy()
    bad = truth.copy()
    bad["ossicle"] = "absent"  # wrong on 15 reports
    long = pd.concat([ex.long_labels(truth, {"llm": good, "rule baseline": bad}, ELBOW, region="elbow"),
                      ex.long_labels(truth, {"llm": good, "rule baseline": bad}, ELBOW, region="thumb")])
    t = ex.mcnemar_vs(long, "rule baseline")
    assert list(t.region) == ["elbow", "thumb", "overall"]
    row = t.set_index("region").loc["elbow"]
    assert (row.only_system_right, row.only_vs_right) == (15, 0) and row.exact and row.p < 0.001
    assert (t.p_holm >= t.p).all()
    s = ex.extraction_summary(long, n_resamples=50)
    assert set(s.region) == {"elbow", "thumb", "overall"} and (s["unanswered reports"] == 0).all()
    with pytest.raises(ValueError, match="reference system 'human'"):
        ex.mcnemar_vs(long, "human")
    every = ex.mcnemar_vs(long, None)  # no comparator fixed in advance: every pair of systems
    assert set(zip(every.system, every.vs)) == {("llm", "rule baseline")} and len(every) == 3
    assert every.p.tolist() == pytest.approx(t.p.tolist())


def test_rule_baseline_on_the_synthetic_corpus_scores_high():
    """End to end on generated reports: the rule labeler, scored with these metrics, is far above chance."""
    from radpriv.baselines import RuleLabeler
    from radpriv.data.synthetic import generate

    df = generate("elbow", n=40)
    long = ex.long_labels(df, {"rules": RuleLabeler(ELBOW).label_frame(df)}, ELBOW)
    acc = ex.label_accuracy(long, n_resamples=0).iloc[0].label_accuracy
    majority = (long.truth == "false").mean()
    assert acc > majority and acc > 0.9


def test_one_region_design_is_scored_without_an_overall_row():
    """A user's own manifest is one region: Study 2's tables then have no ``overall`` row, and what covers all
    regions is that region's rows (the configurations table read ``overall`` and failed on one region)."""
    from radpriv.data import load_dataset
    from radpriv.llm.engine import LabelRun
    from radpriv.studies import study2

    ds = load_dataset("synthetic_cxr")
    ev = ds.frame[ds.frame.split == "test"].head(10).reset_index(drop=True)
    answers = ev[["report_id", *ds.schema.ids]].copy()
    flip = ds.schema.ids[0]
    answers.loc[0, flip] = "present" if answers.loc[0, flip] != "present" else "absent"
    spec = type("Spec", (), {"name": "m", "size": None})()
    d = study2.Design({"cxr": ds}, {"cxr": ev}, [spec], ["test"], "template")
    runs = {("m", "cxr"): LabelRun(answers, pd.DataFrame(columns=["report_id", "reason", "detail"]))}
    ext = study2.score_extraction(d, runs, n_resamples=0)
    assert "overall" not in set(ext.accuracy.region)
    acc = ext.all_regions(ext.accuracy).set_index("system")
    long = ex.long_labels(ev, {"m": answers}, ds.schema, region="cxr")
    assert acc.at["m", "label_accuracy"] == pytest.approx(long["correct"].mean())
    assert set(ext.all_regions(ext.uncertainty).system) >= {"m"}
    with pytest.raises(ValueError, match="option orders average the categories of a single-label schema"):
        study2.configurations(d, ["zero-shot/orders"])
