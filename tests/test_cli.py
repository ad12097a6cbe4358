"""The `radpriv` command line: listings, registration, argument errors, labeling."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from radpriv import paths
from radpriv.cli import failures_path, main

REAL_MODELS = paths.models_dir()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RADPRIV_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)
    return tmp_path


@pytest.fixture
def real_smol(monkeypatch):
    """The fetched models directory (SmolLM2 in it), or a skip naming the fix."""
    import radpriv.llm.engine  # noqa: F401  (a broken engine must fail the suite, never skip it)
    monkeypatch.setenv("RADPRIV_MODELS", str(REAL_MODELS))
    if not (REAL_MODELS / "smollm2-135m-instruct.Q4_1.gguf").exists():
        pytest.skip("smollm2-135m not fetched (run `make models`)")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_fast_to_import_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "radpriv.cli", "--help"], capture_output=True, text=True, check=True)
    assert "models" in out.stdout and "label" in out.stdout and "--allow-host" in out.stdout
    code = ("import sys, radpriv.cli; radpriv.cli.build_parser(); "
            "print(sorted(m for m in ('pandas','torch','llama_cpp','radpriv.llm') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_models_list_shows_bundled_models_and_status(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "KIND", "ROLE", "SIZE", "STATUS"]
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "minilm-l6"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert "not fetched" in row
    assert "radpriv models fetch NAME" in out
    code, out, _ = run(capsys, "models", "list", "--role", "encoder", "--json")
    import json

    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["minilm-l6"] and rows[0]["status"] == "not fetched"


def test_models_list_marks_fetched_models_ready(capsys, real_smol):
    code, out, _ = run(capsys, "models", "list")
    row = next(line for line in out.splitlines() if line.startswith("smollm2-135m "))
    assert " ready " in row
    code, out, _ = run(capsys, "models", "path", "smollm2-135m")
    assert code == 0 and out.strip().endswith("smollm2-135m-instruct.Q4_1.gguf")


def test_register_list_path_remove_round_trip(capsys, isolated):
    f = isolated / "mine.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    code, out, _ = run(capsys, "models", "register", "my-model", "--gguf", str(f), "--n-ctx", "2048")
    assert code == 0 and "registered my-model (gguf" in out
    code, out, _ = run(capsys, "models", "list")
    row = next(line for line in out.splitlines() if line.startswith("my-model "))
    assert " ready " in row and str(f) in row
    code, out, _ = run(capsys, "models", "path", "my-model")
    assert out.strip() == str(f.resolve())
    code, _, err = run(capsys, "models", "register", "my-model", "--gguf", str(f))
    assert code == 2 and "already registered" in err and "--force" in err
    code, out, _ = run(capsys, "models", "remove", "my-model")
    assert code == 0
    code, _, err = run(capsys, "models", "path", "my-model")
    assert code == 2 and "no model named 'my-model'" in err


def test_register_remote_endpoint_needs_opt_in(capsys):
    code, _, err = run(capsys, "models", "register", "gpu", "--endpoint", "http://gpu-server.lan:8000/v1",
                       "--served-model", "qwen2.5-32b")
    assert code == 2 and "--allow-host gpu-server.lan" in err
    code, out, _ = run(capsys, "models", "register", "gpu", "--endpoint", "http://gpu-server.lan:8000/v1",
                       "--served-model", "qwen2.5-32b", "--allow-host", "gpu-server.lan")
    assert code == 0 and "every labeling run must name it again: --allow-host gpu-server.lan" in out
    code, out, _ = run(capsys, "models", "register", "local", "--endpoint", "http://127.0.0.1:11434/v1",
                       "--served-model", "llama3.1")
    assert code == 0 and "model id http://127.0.0.1:11434/v1|llama3.1" in out


def test_label_refuses_remote_server_before_reading_reports(capsys, isolated):
    run(capsys, "models", "register", "gpu", "--endpoint", "http://gpu-server.lan:8000/v1", "--served-model", "m",
        "--allow-host", "gpu-server.lan")
    out = isolated / "labels.csv"
    code, _, err = run(capsys, "label", "--manifest", "/nonexistent/manifest.yaml", "--model", "gpu", "--out", str(out))
    assert code == 2 and "refusing endpoint" in err and "--allow-host gpu-server.lan" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["models", "register", "x"], "one of the arguments --gguf --hf --endpoint is required"),
    (["models", "register", "x", "--gguf", "a.gguf", "--hf", "d"], "not allowed with argument"),
    (["models", "register", "x", "--endpoint", "http://127.0.0.1:1/v1"], "--endpoint needs --served-model"),
    (["models", "register", "x", "--gguf", "a.gguf", "--served-model", "m"], "go with --endpoint"),
    (["models", "fetch"], "give model NAME(s) or --defaults"),
    (["models", "frobnicate"], "invalid choice: 'frobnicate'"),
    (["label", "--manifest", "synthetic_cmr", "--out", "x.csv"], "the following arguments are required: --model"),
    (["label", "--manifest", "m", "--model", "smollm2-135m", "--out", "x.csv", "--limit", "0"], "must be at least 1"),
    (["label", "--manifest", "m", "--model", "smollm2-135m", "--out", "x.csv", "--timeout", "soon"],
     "expected seconds"),
    (["label", "--manifest", "m", "--model", "smollm2-135m", "--out", "x.csv", "--mode", "freestyle"],
     "invalid choice: 'freestyle'"),
    (["label", "--manifest", "m", "--model", "smollm2-135m", "--out", "labels.json"], "expected a .csv"),
    (["data", "generate", "mri"], "unknown corpus 'mri'"),
])
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err


def test_errors_name_what_to_do(capsys, isolated):
    code, _, err = run(capsys, "models", "path", "qwen2.5-coder-1.5b")
    assert code == 2 and err.startswith("error:") and "radpriv models fetch qwen2.5-coder-1.5b" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "label", "--manifest", "synthetic_cmr", "--model", "qwen2.5-coder-1.5b", "--out", "x.csv")
    assert code == 2 and "radpriv models fetch qwen2.5-coder-1.5b" in err  # before any data is loaded
    f = isolated / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    run(capsys, "models", "register", "m", "--gguf", str(f))
    code, _, err = run(capsys, "label", "--manifest", "no_such_manifest", "--model", "m", "--out", "x.csv")
    assert code == 2 and "no manifest named 'no_such_manifest'" in err


def test_data_list_and_generate(capsys, isolated):
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and "synthetic_cmr" in out and "byo_csv" in out
    dest = isolated / "cmr.csv"
    code, out, _ = run(capsys, "data", "generate", "cmr", "--n", "12", "--out", str(dest))
    assert code == 0 and "wrote 12" in out
    df = pd.read_csv(dest)
    assert len(df) == 12 and {"report_id", "text", "split", "label"} <= set(df.columns)


def test_failures_path():
    assert str(failures_path("out/labels.csv")) == "out/labels.failures.csv"


@pytest.mark.slow
def test_label_end_to_end_with_smollm2(capsys, isolated, real_smol):
    """Real model, real engine: every input is accounted for and no non-loopback connection is opened."""
    out = isolated / "labels.csv"
    argv = ["label", "--manifest", "synthetic_cmr", "--model", "smollm2-135m", "--out", str(out), "--limit", "3",
            "--split", "test", "--quiet"]
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    answers, failures = pd.read_csv(out), pd.read_csv(failures_path(out)) if failures_path(out).stat().st_size > 1 \
        else pd.DataFrame()
    assert f"3 inputs = {len(answers)} answers + {len(failures)} failures" in stdout
    assert len(answers) + len(failures) == 3
    assert "0 non-loopback, 0 refused" in stdout
    # a re-run is served from the cache and gives the same answers
    code, stdout2, _ = run(capsys, *argv)
    assert code == 0 and pd.read_csv(out).equals(answers)


def test_label_orders_refusals_name_the_flag_and_the_fix(capsys, isolated, real_smol):
    """--orders goes with --mode scoring and a single-label schema, and asks for a possible number of orders;
    each refusal is one line, before any model is loaded."""
    base = ["label", "--model", "smollm2-135m", "--out", str(isolated / "o.csv"), "--limit", "2", "--quiet"]
    code, _, err = run(capsys, *base, "--manifest", "synthetic_cmr", "--orders", "3")
    assert code == 2 and "--orders 3: option orders average scoring mode" in err and "add --mode scoring" in err
    code, _, err = run(capsys, *base, "--manifest", "synthetic_thumb", "--orders", "3", "--mode", "scoring")
    assert code == 2 and "schema thumb is multi-label" in err and "drop --orders" in err
    code, _, err = run(capsys, *base, "--manifest", "synthetic_cmr", "--orders", "40", "--mode", "scoring")
    assert code == 2 and "--orders 40: orders=40: 7 categories have 1 to" in err and "schema cmr" in err
    assert not (isolated / "o.csv").exists()


@pytest.mark.slow
def test_label_orders_with_smollm2_writes_averaged_probabilities(capsys, isolated, real_smol):
    out = isolated / "orders.csv"
    code, stdout, err = run(capsys, "label", "--manifest", "synthetic_cmr", "--model", "smollm2-135m", "--out",
                            str(out), "--limit", "3", "--split", "test", "--quiet", "--mode", "scoring", "--orders", "3")
    assert code == 0, err
    a = pd.read_csv(out)
    cols = [c for c in a.columns if c.startswith("p__")]
    assert len(a) == 3 and len(cols) == 7 and "option_orders=3" in stdout
    assert np.allclose(a[cols].sum(axis=1), 1.0)
    assert a["label"].tolist() == [cols[j][3:] for j in a[cols].to_numpy().argmax(axis=1)]
