"""Manifest validation (pydantic, unknown keys refused), evaluation-only splits, schema checks and
`radpriv data check`. Every CSV here is invented text written into tmp_path."""

import re
import textwrap

import numpy as np
import pandas as pd
import pytest

from radpriv.cli import main
from radpriv.data import DataError, load_dataset, load_manifest
from radpriv.data.manifest import Manifest, validate_manifest
from radpriv.data.splits import assign_splits
from radpriv.schemas import SchemaError, load_schema

VALUE_MAP = {"1": "present", "0": "absent", "-1": "uncertain", "": "not_mentioned"}

CSV = """\
rid,body,Cardiomegaly,Pleural Effusion,Edema
q01,Invented text alpha.,1,0,
q02,Invented text beta.,0,-1,1
q03,Invented text gamma.,0,,0
q04,Invented text delta.,,1,-1
q05,Invented text epsilon.,1,1,
q06,Invented text zeta.,0,0,0
q07,Invented text eta.,1,,1
q08,Invented text theta.,-1,0,
q09,Invented text iota.,0,1,0
q10,Invented text kappa.,1,0,1
q11,Invented text lambda.,0,-1,
q12,Invented text mu.,,0,0
"""


def write(tmp_path, body: str, csv: str = CSV, name: str = "m.yaml"):
    (tmp_path / "reports.csv").write_text(csv, encoding="utf-8")
    m = tmp_path / name
    m.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return m


BASE = """
name: toy
schema: chexpert14
files:
  - path: reports.csv
columns:
  id: rid
  text: body
  labels: auto
value_map: {'1': present, '0': absent, '-1': uncertain, '': not_mentioned}
"""


def one_line(exc) -> str:
    s = str(exc.value)
    assert "\n" not in s
    return s


# ------------------------------------------------------------------------------------------ unknown keys / types
def test_misspelled_key_is_refused_with_suggestion(tmp_path):
    m = write(tmp_path, BASE + "lable_map: {}\n")
    with pytest.raises(DataError) as exc:
        load_dataset(m)
    msg = one_line(exc)
    assert re.match(re.escape(str(m)) + r", field 'lable_map': unknown key; did you mean 'label_map'\? "
                    r"\(valid keys: .*label_map.*\)$", msg), msg
    assert exc.value.field == "lable_map" and exc.value.file == str(m)
    with pytest.raises(DataError, match="did you mean 'label_map'"):
        load_manifest(m)  # `radpriv data list` and friends validate too


@pytest.mark.parametrize("extra,field,hint", [
    ("splits: {seed: 0, fractoins: [0.6, 0.2, 0.2]}\n", "splits.fractoins", "did you mean 'fractions'"),
    ("generator: {corpus: cmr, sed: 1}\n", "generator.sed", "did you mean 'seed'"),
])
def test_unknown_keys_refused_in_nested_sections(tmp_path, extra, field, hint):
    with pytest.raises(DataError, match=rf"field '{re.escape(field)}': unknown key; {hint}"):
        load_dataset(write(tmp_path, BASE + extra))


def test_unknown_keys_refused_in_columns_and_files(tmp_path):
    body = BASE.replace("  labels: auto\n", "  lables: auto\n").replace("  - path: reports.csv\n",
                                                                        "  - path: reports.csv\n    sha: abc\n")
    with pytest.raises(DataError) as exc:
        load_dataset(write(tmp_path, body))
    msg = one_line(exc)
    assert "field 'files[0].sha': unknown key; did you mean 'sha256'?" in msg
    assert "1 more problem" in msg  # the columns typo is counted ...
    assert any("field 'columns.lables': unknown key; did you mean 'labels'?" in p for p in exc.value.problems)


def test_wrong_types_are_refused(tmp_path):
    body = BASE.replace("files:\n  - path: reports.csv\n", "files: reports.csv\n")
    with pytest.raises(DataError, match=r"field 'files': input should be a valid list \(got text 'reports.csv'\)"):
        load_dataset(write(tmp_path, body))
    with pytest.raises(DataError, match=r"field 'splits.fractions\[1\]': input should be a valid number \(got text 'x'\)"):
        load_dataset(write(tmp_path, BASE + "splits: {fractions: [0.5, 'x', 0.5]}\n"))
    with pytest.raises(DataError, match=r"field 'splits.seed': input should be a valid integer"):
        load_dataset(write(tmp_path, BASE + "splits: {seed: 'zero'}\n"))
    with pytest.raises(DataError, match=r"field 'value_map': '2' maps to 'maybe', which is not a label state"):
        load_dataset(write(tmp_path, BASE.replace("'': not_mentioned}", "'': not_mentioned, '2': maybe}")))
    with pytest.raises(DataError, match=r"field 'columns': missing required key"):
        load_dataset(write(tmp_path, "name: t\nschema: cmr\nfiles: [{path: reports.csv}]\n"))


def test_every_bundled_manifest_validates():
    from radpriv.data import available_manifests

    for name in available_manifests():
        doc, path = load_manifest(name)
        assert isinstance(validate_manifest(doc, path), Manifest)


# ------------------------------------------------------------------------------------------ evaluation-only splits
def test_splits_none_makes_every_report_a_test_report(tmp_path):
    ds = load_dataset(write(tmp_path, BASE + "splits: none\n"))
    assert (ds.frame["split"] == "test").all() and len(ds.frame) == 12
    assert ds.evaluation_only and len(ds.split("train")) == 0


def test_fractions_0_0_1_is_evaluation_only(tmp_path):
    ds = load_dataset(write(tmp_path, BASE + "splits: {seed: 3, fractions: [0, 0, 1]}\n"))
    assert (ds.frame["split"] == "test").all() and ds.evaluation_only


def test_fractions_with_zero_validation(tmp_path):
    ds = load_dataset(write(tmp_path, BASE + "splits: {seed: 0, fractions: [0.8, 0, 0.2]}\n"))
    counts = ds.frame["split"].value_counts()
    assert "validation" not in counts and counts["train"] > counts["test"] > 0
    assert not ds.evaluation_only


@pytest.mark.parametrize("fractions", [(0.8, 0.0, 0.2), (0.0, 0.0, 1.0), (0.0, 0.5, 0.5), (0.7, 0.3, 0.0),
                                       (1.0, 0.0, 0.0)])
@pytest.mark.parametrize("kind", ["single", "multi", "tiny"])
def test_assign_splits_with_zero_fractions_never_crashes(fractions, kind):
    rng = np.random.RandomState(0)
    y = {"single": rng.choice(list("abcd"), size=60), "multi": rng.randint(0, 2, size=(60, 4)),
         "tiny": np.array(list("abcab"))}[kind]
    out = assign_splits(y, seed=0, fractions=fractions)
    assert len(out) == len(y) and set(out) <= {"train", "validation", "test"}
    for name, f in zip(("train", "validation", "test"), fractions):
        k = int((out == name).sum())
        assert (k == 0) == (f == 0), (name, f, k)
        if kind != "tiny":
            assert abs(k / len(y) - f) < 0.1


def test_positive_fractions_unchanged_and_rare_classes_do_not_crash():
    y = np.array(["a"] * 40 + ["b"] * 2)  # 'b' too rare to stratify the second cut
    out = assign_splits(y, fractions=(0.9, 0.05, 0.05))
    assert len(out) == 42 and set(out) == {"train", "validation", "test"}


@pytest.mark.parametrize("fractions", ["[0.5, 0.5, 0.5]", "[0.6, 0.4]", "[1.2, -0.1, -0.1]", "[0.5, 0.5, true]"])
def test_bad_fractions_are_refused(tmp_path, fractions):
    with pytest.raises(DataError, match=r"field 'splits.fractions(\[\d\])?': "):
        load_dataset(write(tmp_path, BASE + f"splits: {{fractions: {fractions}}}\n"))
    with pytest.raises(ValueError, match="fractions must be three positive numbers or zeros"):
        assign_splits([0, 1] * 10, fractions=(0.5, 0.6, -0.1))


def test_bad_splits_value(tmp_path):
    with pytest.raises(DataError, match=r"field 'splits': must be `none` .* got 'random'"):
        load_dataset(write(tmp_path, BASE + "splits: random\n"))


# ------------------------------------------------------------------------------------------ data problems
def test_manifest_column_not_in_csv(tmp_path):
    body = BASE.replace("  text: body\n", "  text: report_body\n  keep: [Age]\n")
    with pytest.raises(DataError) as exc:
        load_dataset(write(tmp_path, body))
    msg = one_line(exc)
    assert msg.startswith(f"{tmp_path / 'reports.csv'}, field 'report_body': missing column (named by columns.text in m.yaml)")
    assert "columns present: rid, body" in msg and "1 more problem" in msg
    assert exc.value.problems[1].startswith(f"{tmp_path / 'reports.csv'}, field 'Age': missing column (named by columns.keep")
    for key in ("id", "split", "reader"):
        body = BASE.replace("  text: body\n", f"  text: body\n  {key}: nope_{key}\n").replace("  id: rid\n", "  id: rid\n" if key != "id" else "")
        with pytest.raises(DataError, match=rf"reports.csv, field 'nope_{key}': missing column \(named by columns.{key}"):
            load_dataset(write(tmp_path, body))


def test_single_label_column_not_in_csv(tmp_path):
    body = "name: t\nschema: cmr\nfiles: [{path: reports.csv}]\ncolumns: {id: rid, text: body, label: diagnosis}\n"
    with pytest.raises(DataError, match=r"reports.csv, field 'diagnosis': missing column \(named by columns.label"):
        load_dataset(write(tmp_path, body))


def test_value_the_value_map_lacks(tmp_path):
    csv = CSV.replace("q06,Invented text zeta.,0,0,0", "q06,Invented text zeta.,0,7,0")
    with pytest.raises(DataError) as exc:
        load_dataset(write(tmp_path, BASE, csv=csv))
    msg = one_line(exc)
    assert msg.startswith(f"{tmp_path / 'reports.csv'}, row 6, field 'Pleural Effusion': label value '7' (report q06) "
                          "is outside value_map and the label states")
    assert "allowed: value_map keys '', '-1', '0', '1'" in msg and "extend value_map" in msg
    assert exc.value.row == 6 and exc.value.field == "Pleural Effusion"


def test_label_map_target_unknown_to_schema(tmp_path):
    with pytest.raises(DataError, match=r"field 'label_map.Heart': 'cardiomegally' is not a finding of schema "
                                        r"chexpert14 -- did you mean 'cardiomegaly'\?"):
        load_dataset(write(tmp_path, BASE + "label_map: {Heart: cardiomegally}\n"))


# ------------------------------------------------------------------------------------------ schema checks
def test_schema_duplicate_finding_id(tmp_path):
    p = tmp_path / "knee.yaml"
    p.write_text("name: knee\ntask: multilabel\nfindings:\n  - {id: effusion}\n  - {id: fracture}\n  - {id: effusion}\n")
    with pytest.raises(SchemaError) as exc:
        load_schema(p)
    assert str(exc.value) == (f"{p}: findings[2] duplicate id 'effusion' (already used by findings[0]); every finding "
                              "needs its own id: rename one of them or merge the two entries")
    m = write(tmp_path, BASE.replace("schema: chexpert14", "schema: knee.yaml"))
    with pytest.raises(DataError, match=r"m.yaml, field 'schema': .*knee.yaml: findings\[2\] duplicate id 'effusion'"):
        load_dataset(m)


def test_schema_parent_naming_no_finding(tmp_path):
    p = tmp_path / "knee.yaml"
    p.write_text("name: knee\ntask: multilabel\nfindings:\n  - {id: fracture}\n  - {id: tibial_fracture, parent: fractur}\n")
    with pytest.raises(SchemaError) as exc:
        load_schema(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: findings[1] (tibial_fracture) names unknown parent 'fractur'; ")
    assert "did you mean 'fracture'?" in msg and "remove the parent line" in msg and "\n" not in msg


def test_schema_parent_cycle_is_refused_not_looping(tmp_path):
    p = tmp_path / "loop.yaml"
    p.write_text("name: loop\ntask: multilabel\nfindings:\n  - {id: a, parent: b}\n  - {id: b, parent: a}\n")
    with pytest.raises(SchemaError, match=r"findings\[0\] \(a\) parent cycle through 'a' \(a -> b -> a\)"):
        load_schema(p)


# ------------------------------------------------------------------------------------------ radpriv data check
def _independent_counts(csv_path):
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    ids = {"Cardiomegaly": "cardiomegaly", "Pleural Effusion": "pleural_effusion", "Edema": "edema"}
    return {ids[c]: df[c].map(VALUE_MAP).value_counts().to_dict() for c in ids}, len(df)


def test_data_check_prints_counts_matching_the_csv(tmp_path, capsys):
    m = write(tmp_path, BASE + "splits: {seed: 0, fractions: [0.5, 0, 0.5]}\n")
    code = main(["data", "check", str(m)])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    expected, n = _independent_counts(tmp_path / "reports.csv")
    assert f"rows: {n}" in out and "schema: chexpert14" in out and "task: multilabel" in out
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("labels (reports per state)"))
    states = lines[head + 1].split()[1:]
    assert states == ["present", "absent", "uncertain", "not_mentioned"]
    table = {ln.split()[0]: dict(zip(states, map(int, ln.split()[1:]))) for ln in lines[head + 2:head + 16]}
    assert len(table) == 14  # every finding of the schema
    for fid, counts in expected.items():
        assert table[fid] == {s: counts.get(s, 0) for s in states}, fid
    assert table["atelectasis"] == {"present": 0, "absent": 0, "uncertain": 0, "not_mentioned": n}
    split = {ln.split()[0]: int(ln.split()[1]) for ln in lines if re.match(r"  (train|validation|test) ", ln)}
    assert split["validation"] == 0 and split["train"] + split["test"] == n and split["train"] > 0
    import hashlib

    digest = hashlib.sha256((tmp_path / "reports.csv").read_bytes()).hexdigest()
    assert f"sha256 {digest}" in out and f"dataset sha256: {digest}" in out


def test_data_check_single_label_and_evaluation_only(tmp_path, capsys):
    csv = "rid,body,dx\n" + "".join(f"c{i},Invented cardiac text {i}.,{d}\n"
                                    for i, d in enumerate(["DCM", "normal", "HCM", "normal", "other"] * 3))
    body = "name: cardio\nschema: cmr\nfiles: [{path: reports.csv}]\ncolumns: {id: rid, text: body, label: dx}\nsplits: none\n"
    m = write(tmp_path, body, csv=csv)
    assert main(["data", "check", str(m)]) == 0
    out = capsys.readouterr().out
    expected = pd.read_csv(tmp_path / "reports.csv")["dx"].value_counts()
    assert re.search(r"^  normal\s+6$", out, re.M) and re.search(rf"^  dilated_cardiomyopathy\s+{expected['DCM']}$", out, re.M)
    assert re.search(r"^  myocarditis\s+0$", out, re.M)
    assert re.search(r"^  test\s+15$", out, re.M) and re.search(r"^  train\s+0$", out, re.M)
    assert "evaluation_only: yes" in out


def test_data_check_bad_manifest_one_error_line(tmp_path, capsys):
    m = write(tmp_path, BASE + "lable_map: {}\n")
    assert main(["data", "check", str(m)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1
    assert lines[0] == (f"error: {m}, field 'lable_map': unknown key; did you mean 'label_map'? (valid keys: name, "
                        "title, description, access, license, citation, url, schema, generator, files, columns, "
                        "label_map, value_map, splits, rules)")


def test_data_check_lists_every_validation_error(tmp_path, capsys):
    body = BASE.replace("  text: body\n", "  txt: body\n") + "acess: local\nsplits: {fractions: [0.5, 0.5, 0.5]}\n"
    assert main(["data", "check", str(write(tmp_path, body))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(ln.startswith("error: ") for ln in lines) and len(lines) == 4, lines
    joined = "\n".join(lines)
    for needle in ("field 'columns.text': missing required key", "field 'columns.txt': unknown key; did you mean 'text'?",
                   "field 'acess': unknown key; did you mean 'access'?", "field 'splits.fractions': fractions must be"):
        assert needle in joined


def test_data_check_bad_csv_value(tmp_path, capsys):
    csv = CSV.replace("q03,Invented text gamma.,0,,0", "q03,Invented text gamma.,maybe,,0")
    assert main(["data", "check", str(write(tmp_path, BASE, csv=csv))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "row 3, field 'Cardiomegaly': label value 'maybe'" in lines[0]
