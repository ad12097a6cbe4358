"""Study 2 smoke run: extraction rows per region, failures accounted for, inclusive vs exclusive downstream."""

import json
import re

import pytest

from radpriv import run

pytestmark = pytest.mark.slow


def test_study2_smoke(tmp_path):
    rec = run.execute("02_label_extraction", "smoke", out_dir=tmp_path)
    assert rec["status"] == "ok"
    html = (tmp_path / "02_label_extraction.html").read_text()
    for needle in ("smollm2-135m", "rule baseline", "clavicle", "elbow", "thumb", "overall",
                   "Uncertainty detection", "McNemar", "Synthetic radiographs", "llm_inclusive", "llm_exclusive",
                   "truth_inclusive", "truth_exclusive", "p_delong", "published (GPT-4o, clinical reports)",
                   "published (elbow radiographs, ResNet-50)", "Provenance",
                   "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"):
        assert needle in html, needle
    assert "Traceback" not in html
    # figures are rendered into the report (accuracy bars, synthetic images, macro AUC, PR curves)
    assert html.count("data:image/png") >= 4
    nb = json.loads((tmp_path / "_executed" / "02_label_extraction.ipynb").read_text())
    text = json.dumps(nb).replace("\\n", "\n")
    # the accounting table: for each region, inputs = answers + failures = 1 (extract_limit of the smoke profile)
    rows = re.findall(r"smollm2-135m\s+(clavicle|elbow|thumb)\s+(\d+)\s+(\d+)\s+(\d+)", text)
    assert {r[0] for r in rows} == {"clavicle", "elbow", "thumb"}
    for _, n, answers, failures in rows:
        assert int(n) == int(answers) + int(failures) == 1
    # the image and text experiments both produced a macro AUC per label set
    assert len(re.findall(r"synthetic images, small CNN", text)) >= 4
    assert "report text, MiniLM + logistic heads" in text
