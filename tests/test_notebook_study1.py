"""Study 1 smoke run, once, for several checks: a result row per system, every report accounted for, a
real llama.cpp server on 127.0.0.1 as the model, and the privacy check (the proxy variables point at a
recorder, which must see 0 bytes; the kernel runs the network guard). The in-process llama.cpp path of
the notebook runs in tests/test_worked_example.py (Study 1 on a user's own data)."""

import json
import re

import pytest

from radpriv import run
from radpriv.llm.registry import register_model

pytestmark = pytest.mark.slow


def test_study1_smoke(tmp_path, llama_server, proxy_recorder):
    register_model("smol-served", kind="openai", endpoint=llama_server + "/v1", served_model="smollm2",
                   overwrite=True)
    before = proxy_recorder.bytes
    rec = run.execute("01_cmr_llm_benchmark", "smoke", out_dir=tmp_path,
                      overrides={"models": ["smol-served"]})
    assert rec["status"] == "ok"
    assert proxy_recorder.bytes == before == 0  # HTTP(S)_PROXY / ALL_PROXY were set: no request went there
    html = (tmp_path / "01_cmr_llm_benchmark.html").read_text()
    for needle in ("smol-served", "rule baseline", "human reader", "Cochran",
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
