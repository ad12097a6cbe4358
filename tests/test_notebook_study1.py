"""Study 1 smoke run, once, for several checks: a result row per system, every report accounted for, a
real llama.cpp server on 127.0.0.1 as the model, and the privacy check (the proxy variables point at a
recorder, which must see 0 bytes; the kernel runs the network guard). The in-process llama.cpp path of
the notebook runs in tests/test_worked_example.py (Study 1 on a user's own data)."""

import json
import re

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from radpriv import run
from radpriv.models.registry import register_model
from conftest import assert_clean_reader_page

pytestmark = pytest.mark.slow


def test_study1_smoke(tmp_path, llama_server, proxy_recorder):
    register_model("smol-served", kind="openai", endpoint=llama_server + "/v1", served_model="smollm2",
                   overwrite=True)
    before = proxy_recorder.bytes
    rec = run.execute("01_cmr_llm_benchmark", "smoke", out_dir=tmp_path,
                      overrides={"models": ["smol-served"], "prompt_variant": "knn:2",
                                 "configurations": ["zero-shot", "knn:2"]})
    assert rec["status"] == "ok"
    assert proxy_recorder.bytes == before == 0  # HTTP(S)_PROXY / ALL_PROXY were set: no request went there
    html = (tmp_path / "01_cmr_llm_benchmark.html").read_text()
    assert_clean_reader_page(html, tmp_path)
    for needle in ("smol-served", "rule baseline", "human reader", "Cochran", "2 retrieved (tfidf)",
                   "synthetic_cmr (train, 180 reports)",
                   "published (clinical CMR, 109 reports)", "Provenance", llama_server):
        assert needle in html, needle
    assert "on (loopback only)" in html  # the kernel ran under the network guard
    assert html.count("data:image/png") >= 2  # metric bars and confusion matrices are embedded
    nb = json.loads((tmp_path / "_executed" / "01_cmr_llm_benchmark.ipynb").read_text())
    text = json.dumps(nb).replace("\\n", "\n")
    # the accounting table: inputs = answers + failures for each model
    for name in ("smol-served",):
        m = re.search(rf"{name}\s+(\d+)\s+(\d+)\s+(\d+)", text)
        assert m and int(m.group(1)) == int(m.group(2)) + int(m.group(3)) == 14, name
    served = re.search(r"smol-served\s+14\s+(\d+)", text)
    assert served and int(served.group(1)) >= 12  # the server answered (not 14 recorded transport failures)

    res = run.load_results("01_cmr_llm_benchmark", tmp_path)
    check_study1_numbers(res)
    check_configurations(res, "smol-served")


def check_configurations(res: dict, model: str) -> None:
    """The prompt-configuration table (zero-shot and 2 retrieved; smoke profile): each row's
    accuracy recomputed from its saved answers; the retrieved row is the headline run itself (same prompts:
    the same answers, served from the cache)."""
    ref = {r["report_id"]: r["label"] for r in res["reference"]}
    table = {(r["model"], r["configuration"]): r for r in res["configurations"]}
    assert {c for m, c in table} >= {"zero-shot", "2 retrieved (tfidf)"}, table.keys()
    for key, rows in res["configuration_predictions"].items():
        m, spec = key.split(" | ")
        pred = {r["report_id"]: r["label"] for r in rows}
        assert pred.keys() == ref.keys()
        label = {"zero-shot": "zero-shot", "knn:2": "2 retrieved (tfidf)",
                 "few-shot/calibrated": "fixed few-shot, scoring calibrated"}[spec]
        row = table[(m, label)]
        assert row["accuracy"] == pytest.approx(np.mean([ref[i] == pred[i] for i in ref]), abs=1e-4)
        assert row["accuracy_low"] <= row["accuracy"] + 1e-9 <= row["accuracy_high"] + 2e-9
        assert row["seconds per report"] > 0 and row["failures"] >= 0
    headline = {r["report_id"]: r["label"] for r in res["predictions"][model]}
    retrieved = {r["report_id"]: r["label"] for r in res["configuration_predictions"][f"{model} | knn:2"]}
    assert retrieved == headline


def check_study1_numbers(res: dict) -> None:
    """The headline table and the McNemar tests, recomputed from the saved reference and answers with
    confusion counts written out here (no radpriv, no sklearn)."""
    ref = {r["report_id"]: r["label"] for r in res["reference"]}
    classes = sorted(set(ref.values()))
    assert sorted(res["class_set"]) == classes  # macro over the categories that occur in the reference
    table = {r["system"]: r for r in res["table"]}
    right = {}
    for name, rows in res["predictions"].items():
        pred = {r["report_id"]: r["label"] for r in rows}
        assert pred.keys() == ref.keys()
        ids = list(ref)
        tp = {c: sum(ref[i] == c and pred[i] == c for i in ids) for c in classes}
        fp = {c: sum(ref[i] != c and pred[i] == c for i in ids) for c in classes}
        fn = {c: sum(ref[i] == c and pred[i] != c for i in ids) for c in classes}
        f1 = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else 0.0 for c in classes]
        prec = [tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0 for c in classes]
        acc = sum(ref[i] == pred[i] for i in ids) / len(ids)
        assert table[name]["accuracy"] == pytest.approx(acc, abs=1e-4), name
        assert table[name]["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-4), name
        assert table[name]["macro_precision"] == pytest.approx(np.mean(prec), abs=1e-4), name
        assert table[name]["macro_f1_low"] <= table[name]["macro_f1"] + 1e-9 <= table[name]["macro_f1_high"] + 2e-9
        right[name] = np.array([ref[i] == pred[i] for i in ids])
    pairs = res["pairs"]
    assert res["comparator"] == "rule baseline" and all(p["system_a"] == "rule baseline" for p in pairs)
    assert len(pairs) == len(res["predictions"]) - 1
    for p in pairs:
        a, b = right[p["system_a"]], right[p["system_b"]]
        n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert (p["only_a_right"], p["only_b_right"]) == (n10, n01)
        if n10 + n01 == 0:  # no discordant pair: the two systems agree on every report
            expect = 1.0
        elif n10 + n01 < 25:
            expect = binomtest(n10, n10 + n01, 0.5).pvalue
        else:
            expect = chi2.sf((abs(n10 - n01) - 1) ** 2 / (n10 + n01), 1)
        assert p["p"] == pytest.approx(expect)
