"""The image manifest reader (bad inputs named by file, row and field) and the image loader."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radpriv.data import DataError
from radpriv.data.image_manifest import load_image, read_image_manifest


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def manifest_dir(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(img / f"c{i}_ap.png", rng.integers(0, 255, (40, 30), dtype=np.uint8))
        _png(img / f"c{i}_lat.png", (rng.integers(0, 4000, (30, 50))).astype(np.uint16))  # 16-bit
    return tmp_path


def _write(tmp, rows, name="manifest.csv"):
    p = tmp / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def _rows():
    return [{"report_id": f"c{i}", "split": "train", "path_ap": f"img/c{i}_ap.png", "path_lateral": f"img/c{i}_lat.png",
             "fracture_radial_head": ["true", "uncertain", ""][i], "ossicle": "false"} for i in range(3)]


def test_valid_manifest_loads(manifest_dir):
    m = read_image_manifest(_write(manifest_dir, _rows()), "elbow")
    assert list(m.frame.report_id) == ["c0", "c1", "c2"] and m.views == ("ap", "lateral")
    assert m.frame.loc[1, "fracture_radial_head"] == "uncertain" and m.frame.loc[1, "fracture"] == "uncertain"
    assert m.frame.loc[0, "loose_body"] == "not_mentioned"  # findings the CSV does not list
    x = m.load(size=32, progress=False)
    assert x.shape == (3, 2, 32, 32) and x.min() >= 0 and x.max() <= 1
    no_labels = read_image_manifest(_write(manifest_dir, [{k: v for k, v in r.items() if k in
                                                           ("report_id", "path_ap", "path_lateral")} for r in _rows()]),
                                    "elbow")
    assert not no_labels.has_labels()


def test_load_image_keeps_aspect_ratio(manifest_dir):
    x = load_image(manifest_dir / "img" / "c0_lat.png", size=20)  # 30 x 50 -> 12 x 20, padded
    assert x.shape == (20, 20)
    assert np.all(x[:3] == 0) and np.all(x[-3:] == 0) and x[5:15].max() > 0.5


def test_missing_file_names_row_and_field(manifest_dir):
    rows = _rows()
    rows[1]["path_lateral"] = "img/nope.png"
    with pytest.raises(DataError, match=r"manifest.csv, row 2, field 'path_lateral': image file 'img/nope.png' does not exist"):
        read_image_manifest(_write(manifest_dir, rows), "elbow")


def test_missing_column_is_named(manifest_dir):
    rows = [{k: v for k, v in r.items() if k != "path_lateral"} for r in _rows()]
    with pytest.raises(DataError, match=r"manifest.csv, field 'path_lateral': missing column"):
        read_image_manifest(_write(manifest_dir, rows), "elbow")


def test_unreadable_image_is_named(manifest_dir):
    (manifest_dir / "img" / "c2_ap.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"row 3, field 'path_ap': unreadable image"):
        read_image_manifest(_write(manifest_dir, _rows()), "elbow")


def test_label_outside_schema(manifest_dir):
    rows = _rows()
    rows[0]["ossicle"] = "maybe"
    with pytest.raises(DataError, match=r"row 1, field 'ossicle': label 'maybe' is not a label state"):
        read_image_manifest(_write(manifest_dir, rows), "elbow")
    rows = _rows()
    for r in rows:
        r["kidney_stone"] = "true"
    with pytest.raises(DataError, match=r"field 'kidney_stone': column is not a finding of schema 'elbow'"):
        read_image_manifest(_write(manifest_dir, rows), "elbow")
    # ... unless it is declared as a non-label column
    m = read_image_manifest(_write(manifest_dir, rows), "elbow", ignore_columns=["kidney_stone"])
    assert "kidney_stone" in m.frame.columns


def test_all_problems_reported_together(manifest_dir):
    rows = _rows()
    rows[0]["path_ap"] = "img/missing.png"
    rows[2]["split"] = "holdout"
    rows[1]["ossicle"] = "2"
    with pytest.raises(DataError) as exc:
        read_image_manifest(_write(manifest_dir, rows), "elbow")
    msg = str(exc.value)
    assert "3 problem(s)" in msg and "row 1, field 'path_ap'" in msg and "row 3, field 'split'" in msg
    assert "row 2, field 'ossicle'" in msg
    assert len(exc.value.problems) == 3 and all(p in msg for p in exc.value.problems)  # one line each
