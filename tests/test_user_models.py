"""Local models as people run them: a Hugging Face checkpoint on disk through the transformers backend,
a named llama.cpp chat format, and a server without log-probabilities in scoring mode."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from radpriv.cli import main
from radpriv.data import synthetic
from radpriv.llm.engine import label_frame
from radpriv.models.registry import ModelLoadError, ModelNotFetchedError, model_path, register_model
from radpriv.schemas import load_schema


@pytest.fixture(scope="module")
def smol_hf_dir():
    """SmolLM2-135M as a Hugging Face checkpoint directory: its GGUF weights dequantized to float32
    (the privacy audit's own conversion, cached)."""
    try:
        model_path("smollm2-135m")
    except ModelNotFetchedError as exc:
        pytest.skip(f"SmolLM2 not fetched ({exc})")
    from radpriv import paths
    from radpriv.audit.causal_lm import load_causal_lm

    load_causal_lm("smollm2-135m")
    (d,) = sorted((paths.cache_dir() / "audit").glob("smollm2-135m-*-hf"))
    return d


@pytest.fixture
def cmr_eval():
    return synthetic.generate("cmr", n=30, seed=2).query("split != 'train'").head(4).reset_index(drop=True)


@pytest.mark.slow
def test_hf_checkpoint_runs_through_transformers_and_agrees_with_llama_cpp(smol_hf_dir, cmr_eval, capsys):
    """The same weights two ways: the dequantized checkpoint (transformers) and the Q4_1 GGUF (llama.cpp)
    must give nearly the same category probabilities; the answers must parse; the CLI registers it."""
    assert main(["models", "register", "smol-hf", "--hf", str(smol_hf_dir), "--force"]) == 0
    assert "registered smol-hf (hf" in capsys.readouterr().out
    hf = label_frame(cmr_eval, "cmr", "smol-hf", mode="scoring", cache=False, progress=False)
    cpp = label_frame(cmr_eval, "cmr", "smollm2-135m", mode="scoring", cache=False, progress=False)
    assert hf.stats["backend"] == "transformers" and hf.stats["n_answers"] == 4
    cols = [f"p__{c}" for c in load_schema("cmr").ids]
    diff = np.abs(hf.answers[cols].to_numpy() - cpp.answers[cols].to_numpy())
    assert diff.max() < 0.06, diff.max()  # llama.cpp quantizes activations to 8 bits: small differences
    t = label_frame(cmr_eval, "cmr", "smol-hf", mode="template", cache=False, progress=False)
    assert t.stats["n_answers"] == 4 and set(t.answers.label) <= set(load_schema("cmr").ids)
    thumb = synthetic.generate("thumb", n=20, seed=1).head(2)
    m = label_frame(thumb, "thumb", "smol-hf", mode="scoring", cache=False, progress=False)
    assert m.stats["n_answers"] == 2


@pytest.mark.slow
def test_named_chat_format_is_used(cmr_eval, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    smol = model_path("smollm2-135m")
    register_model("smol-chatml", kind="gguf", path=smol, chat_format="chatml", progress=False)
    run = label_frame(cmr_eval, "cmr", "smol-chatml", cache=False, progress=False)
    assert run.stats["n_answers"] == 4
    from radpriv.llm.backends import get_backend
    from radpriv.models.registry import get_model

    b = get_backend(get_model("smol-chatml"))
    rendered = b.render([{"role": "user", "content": "hi"}])
    # llama.cpp's chatml format, not the GGUF's own template (which adds SmolLM's default system turn)
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") and "SmolLM" not in rendered
    assert "SmolLM" in get_backend(get_model("smollm2-135m")).render([{"role": "user", "content": "hi"}])
    register_model("smol-bad-format", kind="gguf", path=smol, chat_format="no-such-format", progress=False)
    with pytest.raises(ModelLoadError, match=r"unknown chat_format 'no-such-format' \(llama.cpp knows .*chatml"):
        label_frame(cmr_eval, "cmr", "smol-bad-format", cache=False, progress=False)


class _NoLogprobs(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that answers but never returns log-probabilities."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        content = '{"category": "normal"}' if body.get("max_tokens", 1) > 1 else "A"
        data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def test_scoring_against_a_server_without_logprobs_falls_back_to_template(cmr_eval, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _NoLogprobs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        register_model("nolp", kind="openai", endpoint=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                       served_model="m")
        run = label_frame(cmr_eval, "cmr", "nolp", mode="scoring", cache=False, progress=False)
    finally:
        srv.shutdown()
    assert run.stats["mode"] == "template" and "no log-probabilities" in run.stats["mode_fallback"]
    assert capsys.readouterr().out.count("fell back to template mode") == 1  # said once, not per report
    assert run.stats["n_answers"] == 4 and list(run.answers.label) == ["normal"] * 4
    assert "p__normal" not in run.answers.columns
