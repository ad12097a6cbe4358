"""Papermill execution of the data-overview notebook (smoke profile) and its rendered report."""

import json

from radpriv import run


def test_overview_notebook_renders_report(tmp_path):
    rec = run.execute("00_data_overview", "smoke", out_dir=tmp_path)
    assert rec["status"] == "ok"
    html = (tmp_path / "00_data_overview.html").read_text()
    for needle in ("Rule-based baseline", "macro_f1", "synthetic_cmr", "Provenance", "Package versions",
                   "dc484d220e38e1a0a328fc61ecf62963dd5a1ed7d9e130f3b99859bf37f1dbe9"):
        assert needle in html, needle
    assert "from radpriv" not in html  # reader's report has no code cells
    assert html.count("data:image/png") >= 2  # the length and confusion figures are embedded
    assert "rule_baseline" in (tmp_path / "code" / "00_data_overview.html").read_text()
    assert json.loads((tmp_path / "00_data_overview.run.json").read_text())["profile"] == "smoke"
    assert "00_data_overview.html" in (tmp_path / "index.html").read_text()
