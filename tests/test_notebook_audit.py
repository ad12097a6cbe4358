"""Privacy-audit notebook (issue 6): a smoke papermill run renders every section."""

import json

import pytest

from radpriv import run

pytestmark = pytest.mark.slow


def test_audit_smoke(tmp_path):
    rec = run.execute("04_privacy_audit", "smoke", out_dir=tmp_path)
    assert rec["status"] == "ok"
    html = (tmp_path / "04_privacy_audit.html").read_text()
    for needle in ("Canary exposure", "Membership inference", "reference-calibrated", "empirical ε lower bound",
                   "Masked-token reconstruction", "never (control)", "Provenance",
                   "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"):
        assert needle in html, needle
    nb = json.loads((tmp_path / "_executed" / "04_privacy_audit.ipynb").read_text())
    n_figures = sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
                    for o in c.get("outputs", []))
    assert n_figures >= 3
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
