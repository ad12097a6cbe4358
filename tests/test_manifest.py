"""Manifests and validated loading: every bad input fails naming file, row and field."""

import hashlib
import textwrap
from pathlib import Path

import pytest

from radpriv.data import DataError, available_manifests, load_dataset
from radpriv.data.mimic import findings_impression, read_reports


def write(tmp_path, csv_text, manifest_extra="", schema="chexpert14", columns=None, sha=None, raw=None):
    data = tmp_path / "reports.csv"
    if raw is not None:
        data.write_bytes(raw)
    else:
        data.write_text(textwrap.dedent(csv_text).lstrip(), encoding="utf-8")
    cols = columns or "  id: rid\n  text: body\n  labels: auto\n"
    m = tmp_path / "m.yaml"
    sha_line = f"    sha256: '{sha}'\n" if sha else ""
    m.write_text(f"name: toy\nschema: {schema}\nfiles:\n  - path: reports.csv\n{sha_line}columns:\n{cols}"
                 f"value_map: {{'1': present, '0': absent, '-1': uncertain, '': not_mentioned}}\n{manifest_extra}")
    return m


GOOD = """
rid,body,Cardiomegaly,Pleural Effusion
r1,Heart is enlarged.,1,0
r2,Possible effusion.,0,-1
r3,Normal.,0,
r4,Small effusion.,,1
r5,Cardiomegaly.,1,1
"""


def test_happy_path_maps_names_states_and_assigns_splits(tmp_path):
    ds = load_dataset(write(tmp_path, GOOD))
    f = ds.frame
    assert list(f.columns[:3]) == ["report_id", "text", "split"]
    assert f.loc[1, "pleural_effusion"] == "uncertain" and f.loc[2, "pleural_effusion"] == "not_mentioned"
    assert f.loc[0, "cardiomegaly"] == "present"
    assert (f["edema"] == "not_mentioned").all()  # findings the data does not annotate
    assert set(f.split) <= {"train", "validation", "test"} and len(f) == 5
    assert ds.sha256 == hashlib.sha256((tmp_path / "reports.csv").read_bytes()).hexdigest()


def test_missing_file(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("name: t\nschema: cmr\nfiles:\n  - path: nowhere.csv\ncolumns: {id: a, text: b, label: c}\n")
    with pytest.raises(DataError, match=r"nowhere.csv, field 'files\[0\].path': file not found"):
        load_dataset(m)


def test_sha256_mismatch(tmp_path):
    with pytest.raises(DataError, match=r"reports.csv, field 'files\[0\].sha256': sha256 mismatch: expected 0{64}, got [0-9a-f]{64}"):
        load_dataset(write(tmp_path, GOOD, sha="0" * 64))


def test_missing_column(tmp_path):
    cols = "  id: rid\n  text: report_text\n  labels: auto\n"
    with pytest.raises(DataError, match=r"reports.csv, field 'report_text': missing column"):
        load_dataset(write(tmp_path, GOOD, columns=cols))


def test_duplicate_ids(tmp_path):
    csv = "rid,body,Cardiomegaly\nr1,a,1\nr2,b,0\nr1,c,0\n"
    with pytest.raises(DataError, match=r"reports.csv, row 3, field 'rid': duplicate id 'r1' in rows \[1, 3\]"):
        load_dataset(write(tmp_path, csv))


def test_empty_text(tmp_path):
    csv = "rid,body,Cardiomegaly\nr1,a,1\nr2,   ,0\n"
    with pytest.raises(DataError, match=r"reports.csv, row 2, field 'body': empty report text \(report r2\)"):
        load_dataset(write(tmp_path, csv))


def test_bytes_not_utf8(tmp_path):
    raw = "rid,body,Cardiomegaly\nr1,ok,1\nr2,caf".encode() + b"\xe9" + b" au lait,0\n"
    with pytest.raises(DataError, match=r"reports.csv, row 2: bytes that are not valid UTF-8 at byte offset 36 \(line 3, data row 2\)"):
        load_dataset(write(tmp_path, "", raw=raw))


def test_read_csv_gzip_and_empty(tmp_path):
    import gzip

    from radpriv.data.manifest import read_csv

    gz = tmp_path / "labels.csv.gz"
    gz.write_bytes(gzip.compress(b"study_id,Edema\n5,1.0\n6,\n"))
    assert read_csv(gz).to_dict("list") == {"study_id": ["5", "6"], "Edema": ["1.0", ""]}
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.csv: cannot parse as CSV"):
        read_csv(tmp_path / "empty.csv")

def test_label_value_outside_schema(tmp_path):
    csv = "rid,body,Cardiomegaly\nr1,a,1\nr2,b,2\n"
    with pytest.raises(DataError, match=r"reports.csv, row 2, field 'Cardiomegaly': label value '2' \(report r2\) is outside"):
        load_dataset(write(tmp_path, csv))


def test_unknown_label_column(tmp_path):
    csv = "rid,body,Spleen\nr1,a,1\n"
    with pytest.raises(DataError, match=r"field 'Spleen': column 'Spleen' is not a finding of schema chexpert14"):
        load_dataset(write(tmp_path, csv))


def test_single_label_category_outside_schema_and_label_map(tmp_path):
    cols = "  id: rid\n  text: body\n  label: dx\n  reader: doc\n"
    csv = "rid,body,dx,doc\nr1,a,DCM,normal\nr2,b,amyloid,normal\n"
    with pytest.raises(DataError, match=r"row 2, field 'dx': label 'amyloid' \(report r2\) is not a category"):
        load_dataset(write(tmp_path, csv, schema="cmr", columns=cols))
    ds = load_dataset(write(tmp_path, csv, schema="cmr", columns=cols, manifest_extra="label_map: {amyloid: infiltrative_storage}\n"))
    assert list(ds.frame.label) == ["dilated_cardiomyopathy", "infiltrative_storage"]
    assert list(ds.frame.reader) == ["normal", "normal"]


def test_bad_split_value(tmp_path):
    cols = "  id: rid\n  text: body\n  split: sp\n  labels: auto\n"
    csv = "rid,body,sp,Cardiomegaly\nr1,a,train,1\nr2,b,holdout,0\n"
    with pytest.raises(DataError, match=r"row 2, field 'sp': split value 'holdout'"):
        load_dataset(write(tmp_path, csv, columns=cols))


def test_env_var_unset_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("BYO_CSV", raising=False)
    with pytest.raises(DataError, match=r"environment variable BYO_CSV is not set.*export BYO_CSV="):
        load_dataset("byo_csv")


def test_unknown_manifest_lists_bundled():
    with pytest.raises(DataError, match="no manifest named 'nope'.*synthetic_cmr"):
        load_dataset("nope")
    assert {"mimic_cxr", "ct_rate", "hospital_cmr", "upper_extremity_csv", "byo_csv", "synthetic_ct"} <= set(available_manifests())


@pytest.mark.parametrize("name", ["synthetic_cmr", "synthetic_clavicle", "synthetic_elbow", "synthetic_thumb",
                                  "synthetic_cxr", "synthetic_ct"])
def test_synthetic_manifests_generate_and_verify_pinned_sha(name):
    ds = load_dataset(name)  # generated into the per-session cache, then verified against the pin
    assert ds.sha256 == ds.manifest["files"][0]["sha256"]
    assert ds.frame.report_id.is_unique and len(ds.split("test")) > 0


def test_dev_ct_rate_manifest_when_present():
    path = Path(__file__).resolve().parents[2] / "shared/data/ct_rate_annotated/train.csv"
    if not path.exists():
        pytest.skip("development data ../shared/data is not on this machine")
    ds = load_dataset("ct_rate_annotated_dev")
    assert len(ds.frame) == 800 and ds.schema.name == "ctrate18"


def test_mimic_sections_and_tree(tmp_path):
    report = ("FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n INDICATION: cough\n\n"
              " FINDINGS: The lungs are clear. No pleural\n effusion.\n\n IMPRESSION: No acute process.\n")
    out = findings_impression(report)
    assert out == "FINDINGS: The lungs are clear. No pleural effusion.\nIMPRESSION: No acute process."
    assert findings_impression("Portable chest.\n\nLines in place, no pneumothorax.") == "Lines in place, no pneumothorax."
    d = tmp_path / "files" / "p10" / "p10000032"
    d.mkdir(parents=True)
    (d / "s50414267.txt").write_text(report)
    (d / "s53189527.txt").write_text(" IMPRESSION: Cardiomegaly.\n")
    df = read_reports(tmp_path / "files")
    assert list(df.study_id) == ["50414267", "53189527"] and df.subject_id.iloc[0] == "10000032"
    labels = tmp_path / "chexpert.csv"
    labels.write_text("subject_id,study_id,Cardiomegaly,No Finding\n10000032,50414267,,1.0\n10000032,53189527,1.0,\n")
    m = tmp_path / "mimic.yaml"
    m.write_text("name: mimic\nschema: chexpert14\nfiles:\n  - path: files\n    format: mimic_reports\n"
                 "  - path: chexpert.csv\n    role: labels\ncolumns: {id: study_id, text: text, labels: auto, keep: [subject_id]}\n"
                 "value_map: {'1.0': present, '0.0': absent, '-1.0': uncertain, '': not_mentioned}\n")
    ds = load_dataset(m)
    assert list(ds.frame.cardiomegaly) == ["not_mentioned", "present"]
    assert list(ds.frame.no_finding) == ["present", "not_mentioned"]
