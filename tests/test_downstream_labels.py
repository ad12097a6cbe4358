"""Inclusive / exclusive label matrices (Study 2): mapping, parent propagation, validation."""

import numpy as np
import pandas as pd
import pytest

from radpriv.downstream.labels import (build_label_sets, evaluable_findings, label_matrix, label_set_summary,
                                       states_frame)
from radpriv.schemas import load_schema

ELBOW = load_schema("elbow")


def _frame(rows: dict[str, dict[str, str]]) -> pd.DataFrame:
    """A dataset frame: every finding not_mentioned unless given."""
    recs = []
    for rid, states in rows.items():
        rec = {"report_id": rid, "text": "..."}
        rec.update({f: "not_mentioned" for f in ELBOW.ids})
        rec.update(states)
        recs.append(rec)
    return pd.DataFrame(recs)


def test_inclusive_exclusive_mapping_per_state():
    df = _frame({
        "r-present": {"ossicle": "present"},
        "r-uncertain": {"ossicle": "uncertain"},
        "r-absent": {"ossicle": "absent"},
        "r-silent": {},
    })
    inc = label_matrix(df, ELBOW, "inclusive")
    exc = label_matrix(df, ELBOW, "exclusive")
    assert inc.loc[:, "ossicle"].to_dict() == {"r-present": 1, "r-uncertain": 1, "r-absent": 0, "r-silent": 0}
    assert exc.loc[:, "ossicle"].to_dict() == {"r-present": 1, "r-uncertain": 0, "r-absent": 0, "r-silent": 0}
    # every other finding is 0 under both policies
    others = [f for f in ELBOW.ids if f != "ossicle"]
    assert inc[others].to_numpy().sum() == 0 and exc[others].to_numpy().sum() == 0
    assert list(inc.columns) == ELBOW.ids and inc.index.name == "report_id"


def test_common_spellings_are_accepted():
    df = _frame({"a": {"ossicle": "true", "exostosis": "uncertain", "loose_body": "false", "enthesopathy": ""}})
    inc = label_matrix(df, ELBOW, "inclusive").iloc[0]
    assert (inc["ossicle"], inc["exostosis"], inc["loose_body"], inc["enthesopathy"]) == (1, 1, 0, 0)


def test_parent_propagation_in_built_labels():
    # extracted labels often give only the sub-finding; the parent must follow it
    df = _frame({
        "child-uncertain": {"fracture_radial_head": "uncertain", "fracture": "not_mentioned"},
        "child-present": {"fracture_olecranon": "present", "fracture": "absent"},
        "child-uncertain-parent-present": {"fat_pad_anterior": "uncertain", "joint_effusion": "present"},
        "child-absent": {"fracture_capitellum": "absent", "fracture": "not_mentioned"},
    })
    sets = build_label_sets({"llm": df}, ELBOW)
    inc, exc = sets["llm_inclusive"], sets["llm_exclusive"]
    assert inc.loc["child-uncertain", "fracture"] == 1 and exc.loc["child-uncertain", "fracture"] == 0
    assert inc.loc["child-present", "fracture"] == 1 and exc.loc["child-present", "fracture"] == 1
    assert exc.loc["child-uncertain-parent-present", "joint_effusion"] == 1  # never weakened by a hedged child
    assert exc.loc["child-uncertain-parent-present", "fat_pad_anterior"] == 0
    assert inc.loc["child-absent", "fracture"] == 0
    # without propagation the parent keeps its own state
    raw = label_matrix(df, ELBOW, "inclusive", propagate=False)
    assert raw.loc["child-uncertain", "fracture"] == 0
    states = states_frame(df, ELBOW)
    assert states.loc["child-uncertain", "fracture"] == "uncertain"


def test_build_label_sets_aligns_sources_and_names_keys():
    truth = _frame({"a": {"ossicle": "present"}, "b": {"ossicle": "uncertain"}, "c": {}})
    llm = truth.iloc[::-1].copy()  # another order
    llm.loc[llm.report_id == "b", "ossicle"] = "absent"
    sets = build_label_sets({"llm": llm, "truth": truth}, ELBOW)
    assert set(sets) == {"llm_inclusive", "llm_exclusive", "truth_inclusive", "truth_exclusive"}
    for m in sets.values():
        assert list(m.index) == ["c", "b", "a"]  # the first source's order
    assert sets["truth_inclusive"].loc["b", "ossicle"] == 1 and sets["llm_inclusive"].loc["b", "ossicle"] == 0
    summary = label_set_summary(sets)
    assert summary.loc["ossicle", "truth_inclusive"] == 2 and summary.loc["ossicle", "truth_exclusive"] == 1


def test_missing_report_in_second_source_is_an_error():
    truth = _frame({"a": {}, "b": {}})
    with pytest.raises(ValueError, match=r"llm: 1 report\(s\).*'b'"):
        build_label_sets({"truth": truth, "llm": truth.iloc[:1]}, ELBOW)


def test_bad_state_names_row_and_column():
    df = _frame({"a": {}, "b": {"ossicle": "maybe"}})
    with pytest.raises(ValueError, match=r"qwen labels: row 1 \(report_id 'b'\), column 'ossicle'.*'maybe'"):
        label_matrix(df, ELBOW, "inclusive", source="qwen labels")


def test_missing_finding_column_and_unknown_policy():
    df = _frame({"a": {}}).drop(columns=["ossicle"])
    with pytest.raises(ValueError, match="lacks finding column.*ossicle"):
        label_matrix(df, ELBOW, "inclusive")
    with pytest.raises(ValueError, match="uncertainty policy 'lenient'"):
        label_matrix(_frame({"a": {}}), ELBOW, "lenient")
    with pytest.raises(ValueError, match="single-label"):
        label_matrix(_frame({"a": {}}), load_schema("cmr"), "inclusive")


def test_region_filter():
    df = _frame({"a": {"ossicle": "present"}, "b": {}})
    df["region"] = ["elbow", "thumb"]
    assert list(label_matrix(df, ELBOW, "inclusive", region="elbow").index) == ["a"]
    with pytest.raises(ValueError, match="no rows with region == 'clavicle'"):
        label_matrix(df, ELBOW, "inclusive", region="clavicle")


def test_evaluable_findings_needs_both_classes_and_training_positives():
    ref = pd.DataFrame({"x": [1, 1, 0, 0], "y": [1, 0, 0, 0], "z": [1, 1, 0, 0]})
    train_a = pd.DataFrame({"x": [1, 1, 0], "y": [1, 1, 0], "z": [0, 0, 0]})
    assert evaluable_findings(ref, train_a) == ["x"]
    assert evaluable_findings(ref.to_numpy(), names=["x", "y", "z"], min_positive=1, min_negative=1) == ["x", "y", "z"]


def test_on_the_synthetic_corpus_inclusive_dominates_exclusive():
    from radpriv.data.synthetic import generate

    df = generate("elbow", n=60)
    sets = build_label_sets({"truth": df}, ELBOW)
    inc, exc = sets["truth_inclusive"].to_numpy(), sets["truth_exclusive"].to_numpy()
    assert (inc >= exc).all()  # uncertain adds positives, never removes them
    n_unc = int((states_frame(df, ELBOW).to_numpy() == "uncertain").sum())
    assert int(inc.sum() - exc.sum()) == n_unc > 0
    assert np.array_equal(exc, (states_frame(df, ELBOW).to_numpy() == "present").astype(int))
