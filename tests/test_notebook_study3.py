"""Study 3 smoke run: every mode and ε in the table, the accounting audit, public-then-private, teacher labels."""

import json

import pytest

from radpriv import run

pytestmark = pytest.mark.slow


def test_study3_smoke(tmp_path):
    rec = run.execute("03_dp_lora", "smoke", out_dir=tmp_path)
    assert rec["status"] == "ok", rec
    html = (tmp_path / "03_dp_lora.html").read_text()
    for needle in ("tfidf-logreg", "dp-tfidf-linear", "dp-lora", "Accounting audit", "dp_accounting PLD",
                   "Public then private", "student F1 (teacher labels)", "Kendall", "Provenance", "published",
                   "as its runs used them", "physical_batch_size"):
        assert needle in html, needle
    assert html.count("data:image/png") >= 2  # privacy-utility curve and loss curves are embedded
    nb = json.loads((tmp_path / "_executed" / "03_dp_lora.ipynb").read_text())
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
