"""Synthetic radiographs: determinism, and every finding's feature really drawn."""

import numpy as np
import pytest

from radpriv.data.synthetic_images import FEATURES, render_case, synthesize_images
from radpriv.schemas import load_schema

SIZE = 64


def _render(states, region="elbow", key="case-1", **kw):
    return render_case(states, region, key, size=SIZE, **kw)


def test_render_is_deterministic_and_seeded():
    a, va = _render({"fracture_supracondylar": "present"})
    b, vb = _render({"fracture_supracondylar": "present"})
    assert a.shape == (2, SIZE, SIZE) and a.dtype == np.float32
    assert np.array_equal(a, b) and va == vb
    assert 0.0 <= a.min() and a.max() <= 1.0
    c, _ = _render({"fracture_supracondylar": "present"}, seed=1)
    d, _ = _render({"fracture_supracondylar": "present"}, key="case-2")
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def _changed(states_with, states_without=None, region="elbow", view=None, **kw):
    a, vis = _render(states_with, region, **kw)
    b, _ = _render(states_without or {}, region, **kw)
    diff = a - b
    return diff if view is None else diff[view], vis


def test_fracture_is_a_dark_line_in_the_bone():
    diff, vis = _changed({"fracture_supracondylar": "present"})
    assert vis["fracture_supracondylar"] == 1 and vis["fracture"] == 1  # parent follows the child
    changed = np.abs(diff) > 0.05
    assert 0 < changed.mean() < 0.05  # a thin, local feature
    assert diff[changed].mean() < -0.1  # darker where drawn


def test_swelling_brightens_soft_tissue_and_fat_pad_is_dark_on_the_lateral_view_only():
    diff, _ = _changed({"soft_tissue_swelling": "present"})
    changed = np.abs(diff) > 0.03
    assert changed.any() and diff[changed].mean() > 0
    fat, _ = _changed({"fat_pad_anterior": "present"})
    assert np.abs(fat[0]).max() < 1e-6  # AP view untouched
    changed = np.abs(fat[1]) > 0.03
    assert changed.any() and fat[1][changed].mean() < 0


def test_ossicle_is_a_bright_dot_and_hardware_is_bright():
    for finding in ("ossicle", "osteosynthesis_material"):
        diff, _ = _changed({finding: "present"})
        changed = np.abs(diff) > 0.05
        assert 0 < changed.mean() < 0.05 and diff[changed].mean() > 0.05, finding


def test_dislocation_moves_the_forearm_bones():
    diff, vis = _changed({"dislocation": "present"})
    assert vis["dislocation"] == 1 and vis["joint_abnormality"] == 1
    assert (np.abs(diff) > 0.1).mean() > 0.02  # a large structural change


@pytest.mark.parametrize("region", ["elbow", "clavicle", "thumb"])
def test_every_finding_has_a_visible_feature(region):
    schema = load_schema(region)
    assert set(FEATURES[region]) == set(schema.ids)
    for f in schema.ids:
        diff, vis = _changed({f: "present"}, region=region)
        assert vis[f] == 1, f
        assert np.abs(diff).max() > 0.05, f"{region}/{f} draws nothing"


def test_uncertain_findings_are_drawn_by_chance_and_subtly():
    states = {"fracture_supracondylar": "uncertain"}
    hidden, vis0 = _changed(states, uncertain_visible=0.0)
    assert vis0["fracture_supracondylar"] == 0 and np.abs(hidden).max() == 0
    subtle, vis1 = _changed(states, uncertain_visible=1.0)
    clear, _ = _changed({"fracture_supracondylar": "present"})
    assert vis1["fracture_supracondylar"] == 1
    assert 0 < np.abs(subtle).max() < np.abs(clear).max()
    # with p=0.5 about half of the uncertain findings are drawn
    drawn = [render_case(states, "elbow", f"k{i}", size=16)[1]["fracture_supracondylar"] for i in range(80)]
    assert 25 <= sum(drawn) <= 55
    absent, vis_a = _changed({"fracture_supracondylar": "absent"})
    assert vis_a["fracture_supracondylar"] == 0 and np.abs(absent).max() == 0


def test_synthesize_images_on_a_corpus():
    from radpriv.data.synthetic import generate

    df = generate("thumb", n=12)
    a = synthesize_images(df, size=32, progress=False)
    b = synthesize_images(df, size=32, progress=False)
    assert a.images.shape == (12, 2, 32, 32) and a.region == "thumb"
    assert np.array_equal(a.images, b.images)
    assert list(a.visible.index) == df.report_id.tolist() and list(a.visible.columns) == load_schema("thumb").ids
    present = (df.set_index("report_id")[a.visible.columns] == "present").astype(int)
    assert (a.visible.to_numpy() >= present.to_numpy()).all()  # everything stated as present is drawn
    with pytest.raises(ValueError, match="region"):
        synthesize_images(df.drop(columns=["region"]), size=32, progress=False)
