"""Study 1 smoke run: a result row per model, every report accounted for."""

import json
import re

import pytest

from radpriv import run

pytestmark = pytest.mark.slow


def test_study1_smoke(tmp_path):
    rec = run.execute("01_cmr_llm_benchmark", "smoke", out_dir=tmp_path)
    assert rec["status"] == "ok"
    html = (tmp_path / "01_cmr_llm_benchmark.html").read_text()
    for needle in ("smollm2-135m", "rule baseline", "human reader", "Cochran", "published (clinical CMR, 109 reports)",
                   "Provenance", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"):
        assert needle in html, needle
    assert html.count("data:image/png") >= 2  # metric bars and confusion matrices are embedded
    nb = json.loads((tmp_path / "_executed" / "01_cmr_llm_benchmark.ipynb").read_text())
    text = json.dumps(nb)
    # the accounting table: inputs = answers + failures for the model
    m = re.search(r"smollm2-135m\s+(\d+)\s+(\d+)\s+(\d+)", text.replace("\\n", "\n"))
    assert m and int(m.group(1)) == int(m.group(2)) + int(m.group(3)) == 14
