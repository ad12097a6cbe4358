"""The README's "Worked example" block, run verbatim on a generated CSV of the shape it describes
(synthetic reports renamed to a user's own columns and labels; never real report text): schemas, rules
and manifests of one's own, `radpriv data check`, `label` (rules and a real LLM), `evaluate`, and the
smoke profiles of Studies 1-3 on that data. Numbers are checked against an independent computation."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from radpriv import paths
from radpriv.data import synthetic

pytestmark = pytest.mark.slow

STATE_CODE = {"present": "1", "absent": "0", "uncertain": "-1", "not_mentioned": ""}
COLUMNS = {"pleural_effusion": "Erguss", "pneumothorax": "Pneumothorax", "cardiomegaly": "Herzvergroesserung",
           "consolidation": "Infiltrat"}


def user_csv(path: Path, n: int = 50) -> pd.DataFrame:
    df = synthetic.generate("cxr", n=n, seed=7, canaries=False)
    out = pd.DataFrame({"ReportID": [f"r{i:04d}" for i in range(n)], "Befund": df.text})
    for fid, col in COLUMNS.items():
        out[col] = df[fid].map(STATE_CODE)

    def primary(row):
        if row.cardiomegaly == "present":
            return "Kardiomegalie"
        if row.pleural_effusion == "present":
            return "Erguss"
        if row.no_finding == "present":
            return "Normalbefund"
        return "Andere"

    out["Hauptbefund"] = df.apply(primary, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return out


def readme_block() -> str:
    text = (paths.REPO / "README.md").read_text()
    section = text[text.index("### Worked example"):]
    return section[section.index("```bash\n") + len("```bash\n"):section.index("\n```\n", section.index("```bash"))]


def test_readme_worked_example_runs_verbatim(tmp_path):
    csv = user_csv(tmp_path / "my_data" / "reports.csv")
    script = tmp_path / "example.sh"
    script.write_text("set -euo pipefail\n" + readme_block() + "\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # data check: rows and per-state counts agree with the CSV
    assert "rows: 50" in out.stdout
    present = int((csv["Erguss"] == "1").sum())
    assert re.search(rf"effusion\s+{present}\s", out.stdout), out.stdout[:3000]
    # labels: every test report answered, by the rules and by the LLM
    rules, llm = pd.read_csv(tmp_path / "out" / "rules.csv"), pd.read_csv(tmp_path / "out" / "llm.csv")
    assert len(rules) == len(llm) > 0 and set(rules.report_id) == set(llm.report_id)
    # evaluate: the rules' F1 for effusion recomputed independently from the two CSVs
    metrics = pd.read_csv(tmp_path / "out" / "evaluation" / "metrics.csv")
    gold = csv.set_index("ReportID").loc[rules.report_id]
    y = (gold["Erguss"].astype(str) == "1").to_numpy()
    p = (rules["effusion"] == "present").to_numpy()
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    row = metrics[(metrics.system == "rules") & (metrics.label == "effusion") & (metrics.metric == "f1")]
    assert len(row) == 1 and row.value.iloc[0] == pytest.approx(f1, abs=1e-9)
    assert (tmp_path / "out" / "evaluation" / "evaluation.html").exists()
    # the studies rendered on the user's data
    reports = tmp_path / "out" / "reports"
    s1 = (reports / "01_cmr_llm_benchmark.html").read_text()
    assert "my_primary_reports" in s1 and "no rules for this schema" in s1 and "smollm2-135m" in s1
    assert "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" in s1  # the GGUF's sha256
    assert "on (loopback only)" in s1 and "data:image/png" in s1
    s2 = (reports / "02_label_extraction.html").read_text()
    assert "my_findings_reports" in s2 and "Downstream experiment skipped" in s2
    s3 = (reports / "03_dp_lora.html").read_text()
    assert "my_findings_reports" in s3 and "dp-lora" in s3
    # each study's results file lands beside its report (the out dir was relative to the user's shell, not the
    # kernel's working directory), never inside the checkout
    for stem in ("01_cmr_llm_benchmark", "02_label_extraction", "03_dp_lora"):
        assert (reports / "_results" / f"{stem}.json").exists(), stem


def test_own_single_label_schema_sets_the_prompt_wording(tmp_path):
    from radpriv.llm import prompts
    from radpriv.schemas import load_schema

    f = tmp_path / "knee.yaml"
    f.write_text("name: knee\ntitle: Knee MRI\ntask: single\nfindings:\n  - {id: normal}\n  - {id: tear}\n")
    text = prompts.instructions(load_schema(f))
    assert text.startswith("You are a physician reading Knee MRI reports. Classify each report into exactly one")
    assert "cardio" not in text.lower() and "cardiologist" in prompts.instructions(load_schema("cmr"))
