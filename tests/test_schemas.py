"""Label schemas as data files and the one enum of label states."""

import pytest

from radpriv.schemas import State, available_schemas, load_schema, to_binary


@pytest.mark.parametrize("name,n,task", [("cmr", 7, "single"), ("clavicle", 26, "multilabel"), ("elbow", 29, "multilabel"),
                                         ("thumb", 25, "multilabel"), ("chexpert14", 14, "multilabel"),
                                         ("ctrate18", 18, "multilabel")])
def test_bundled_schemas_have_published_sizes(name, n, task):
    s = load_schema(name)
    assert len(s.ids) == n and s.task == task
    assert name in available_schemas()


def test_published_names_resolve_to_ids():
    ct = load_schema("ctrate18")
    assert ct.resolve("Coronary artery wall calcification") == "coronary_artery_wall_calcification"
    assert load_schema("chexpert14").resolve("Pleural Effusion") == "pleural_effusion"
    assert load_schema("cmr").resolve("DCM") == "dilated_cardiomyopathy"
    assert ct.resolve("Nodule", label_map={"Nodule": "lung_nodule"}) == "lung_nodule"
    with pytest.raises(KeyError, match="'Spleen' is not a finding of schema 'ctrate18'"):
        ct.resolve("Spleen")


def test_parent_propagation_present_and_uncertain_only():
    s = load_schema("elbow")
    out = s.propagate({"fracture_radial_head": "present", "fat_pad_anterior": "uncertain", "dislocation": "absent"})
    assert out["fracture"] is State.PRESENT
    assert out["joint_effusion"] is State.UNCERTAIN
    assert "joint_abnormality" not in out  # an absent sub-finding never changes its parent
    # a parent already present is not downgraded by an uncertain child
    out = s.propagate({"fracture": "present", "fracture_olecranon": "uncertain"})
    assert out["fracture"] is State.PRESENT


def test_state_parse_and_binary_mapping():
    assert State.parse("true") is State.PRESENT and State.parse("-1") is State.UNCERTAIN
    assert State.parse("") is State.NOT_MENTIONED and State.parse(0) is State.ABSENT
    assert [to_binary(s, "inclusive") for s in State] == [1, 0, 1, 0]
    assert [to_binary(s, "exclusive") for s in State] == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="'maybe' is not a label state"):
        State.parse("maybe")
    with pytest.raises(ValueError, match="uncertainty policy 'both'"):
        to_binary("present", "both")


def test_bad_schema_files_name_file_and_field(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\ntask: multilabel\nfindings:\n  - {id: Bad-Id}\n")
    with pytest.raises(ValueError, match=r"mine.yaml: findings\[0\] field 'id' must be snake_case"):
        load_schema(p)
    p.write_text("name: mine\ntask: multilabel\nfindings:\n  - {id: a, parent: zzz}\n")
    with pytest.raises(ValueError, match=r"mine.yaml: findings\[0\] \(a\) names unknown parent 'zzz'"):
        load_schema(p)
    p.write_text("name: mine\nfindings: []\n")
    with pytest.raises(ValueError, match="mine.yaml: missing field 'task'"):
        load_schema(p)
    with pytest.raises(FileNotFoundError, match="no schema named 'nope'"):
        load_schema("nope")


def test_user_schema_loads_by_path(tmp_path):
    p = tmp_path / "knee.yaml"
    p.write_text("name: knee\ntask: multilabel\nfindings:\n  - {id: effusion, label: Effusion}\n"
                 "  - {id: fracture}\n  - {id: tibial_plateau_fracture, parent: fracture}\n")
    s = load_schema(p)
    assert s.ids == ["effusion", "fracture", "tibial_plateau_fracture"]
    assert s.propagate({"tibial_plateau_fracture": "present"})["fracture"] is State.PRESENT
