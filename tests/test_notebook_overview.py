"""Papermill execution of the data-overview notebook (smoke profile) and its rendered report."""

import json

from radpriv import run


import pytest
from conftest import assert_clean_reader_page


@pytest.fixture(scope="module")
def overview_run(tmp_path_factory):
    """One smoke run of the notebook for every check below."""
    out = tmp_path_factory.mktemp("overview")
    return run.execute("00_data_overview", "smoke", out_dir=out), out


def test_overview_notebook_renders_report(overview_run):
    rec, tmp_path = overview_run
    assert rec["status"] == "ok"
    html = (tmp_path / "00_data_overview.html").read_text()
    assert_clean_reader_page(html, tmp_path)
    for needle in ("Rule-based baseline", "macro_f1", "synthetic_cmr", "Provenance", "Package versions",
                   "reports scored here: 60 from the heldout bank", "a held-out bank of phrasings",
                   "dead95119e3b95084365b5a9ba3117c334a6d86dc6ce23c101d90809567654d4"):
        assert needle in html, needle
    assert "from radpriv" not in html  # reader's report has no code cells
    assert html.count("data:image/png") >= 2  # the length and confusion figures are embedded
    assert "rule_baseline" in (tmp_path / "code" / "00_data_overview.html").read_text()
    assert json.loads((tmp_path / "00_data_overview.run.json").read_text())["profile"] == "smoke"
    assert "00_data_overview.html" in (tmp_path / "index.html").read_text()


def test_overview_numbers_recomputed(overview_run):
    """The rule baseline's CMR macro F1 and every corpus's split counts, recomputed from the saved reference
    and rule answers and from the dataset files (confusion counts written out here)."""
    import numpy as np
    import pandas as pd
    import yaml

    from radpriv import paths

    res = run.load_results("00_data_overview", overview_run[1])
    for name, counts in res["split_counts"].items():  # read from the CSV the manifest names, with pandas
        manifest = yaml.safe_load((paths.MANIFESTS / f"{name}.yaml").read_text())
        csv = manifest["files"][0]["path"].replace("${RADPRIV_DATA}", str(paths.data_dir()))
        frame = pd.read_csv(csv, keep_default_na=False)
        assert counts == {s: int((frame["split"] == s).sum()) for s in ("train", "validation", "test")}, name
    cmr = res["scored"]["synthetic_cmr"]
    ref = {r["report_id"]: r["label"] for r in cmr["reference"]}
    pred = {r["report_id"]: r["label"] for r in cmr["rules"]}
    classes = sorted(set(ref.values()))
    f1 = []
    for c in classes:
        tp = sum(ref[i] == c and pred[i] == c for i in ref)
        fp = sum(ref[i] != c and pred[i] == c for i in ref)
        fn = sum(ref[i] == c and pred[i] != c for i in ref)
        f1.append(2 * tp / (2 * tp + fp + fn))
    base = pd.DataFrame(res["baseline"])
    row = base[(base.dataset == "synthetic_cmr") & (base.metric == "macro_f1")].iloc[0]
    assert row.value == pytest.approx(np.mean(f1), abs=1e-4)
