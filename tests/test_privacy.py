"""Privacy on every path: the CLI through a real llama.cpp server with proxy variables set, refused
endpoints, model faults raised before the first report, transport faults recorded per report, and
answer-cache keys that hold everything that changes an answer.

No test here sends a packet off this machine (see conftest: interception and the proxy recorder)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from radpriv.data import synthetic
from radpriv.netguard import guard
from radpriv.llm.engine import answer_key, build_messages, label_frame
from radpriv.models.registry import (ModelLoadError, ModelNotFetchedError, ModelSpec, VerificationError, model_path, register_model)
from radpriv.schemas import load_schema


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "radpriv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def ev():
    return synthetic.generate("cmr", n=30, seed=2).query("split != 'train'").head(3).reset_index(drop=True)


@pytest.fixture
def smol():
    try:
        return model_path("smollm2-135m")
    except ModelNotFetchedError as exc:
        pytest.skip(f"SmolLM2 not fetched ({exc}); run `make models-test`")


# ------------------------------------------------------------------------------ the CLI, proxies set


@pytest.mark.slow
def test_radpriv_label_through_a_real_server_sends_nothing_to_the_proxy(llama_server, proxy_recorder, tmp_path):
    env = {"RADPRIV_CACHE": str(tmp_path)}
    out = _cli("models", "register", "srv", "--endpoint", llama_server + "/v1", "--served-model", "smollm2", env=env)
    assert out.returncode == 0, out.stderr
    before = proxy_recorder.bytes
    out = _cli("label", "--manifest", "synthetic_cmr", "--model", "srv", "--split", "test", "--limit", "3",
               "--out", str(tmp_path / "l.csv"), "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    assert proxy_recorder.bytes == before == 0          # HTTP_PROXY/HTTPS_PROXY/ALL_PROXY are set in this session
    assert "3 inputs = 3 answers + 0 failures" in out.stdout
    assert "0 non-loopback" in out.stdout and len(pd.read_csv(tmp_path / "l.csv")) == 3


def test_cli_refuses_a_private_address_before_any_attempt(tmp_path):
    env = {"RADPRIV_CACHE": str(tmp_path)}
    out = _cli("models", "register", "lan", "--endpoint", "http://10.0.0.5/v1", "--served-model", "m",
               "--allow-host", "10.0.0.5", env=env)
    assert out.returncode == 0, out.stderr
    out = _cli("label", "--manifest", "synthetic_cmr", "--model", "lan", "--limit", "1", "--out",
               str(tmp_path / "x.csv"), env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line, = out.stderr.strip().splitlines()  # one line
    assert line.startswith("error: refusing endpoint http://10.0.0.5/v1: 10.0.0.5 is not this machine (loopback)")
    assert "--allow-host 10.0.0.5" in line
    out = _cli("models", "register", "cred", "--endpoint", "https://user:secret@gpu.lan/v1", "--served-model", "m",
               env=env)
    assert out.returncode == 2 and "credentials in a URL" in out.stderr and "secret" not in out.stderr


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    env = {"RADPRIV_CACHE": str(tmp_path)}
    out = _cli("label", "--manifest", str(tmp_path / "nope.yaml"), "--model", "smollm2-135m", "--out", "x.csv", env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")
    out = _cli("--debug", "label", "--manifest", str(tmp_path / "nope.yaml"), "--model", "smollm2-135m", "--out",
               "x.csv", env=env)
    assert out.returncode != 0 and "Traceback" in out.stderr


# ------------------------------------------------------------------------------ model faults raise


def test_unfetched_model_raises_before_the_first_report(ev, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFetchedError, match=r"model 'smollm2-135m' is not fetched yet .*radpriv models fetch"):
        label_frame(ev, "cmr", "smollm2-135m", cache=False, progress=False)
    out = _cli("label", "--manifest", "synthetic_cmr", "--model", "smollm2-135m", "--out", str(tmp_path / "x.csv"),
               env={"RADPRIV_MODELS": str(tmp_path / "empty")})
    assert out.returncode == 2 and out.stderr.startswith("error: model 'smollm2-135m' is not fetched yet")


@pytest.mark.slow
def test_model_file_with_one_byte_changed_is_refused(smol, ev, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    f = tmp_path / "copy.gguf"
    shutil.copyfile(smol, f)
    register_model("copy", kind="gguf", path=f, progress=False)
    with open(f, "r+b") as fh:  # one byte in the middle of the weights
        fh.seek(f.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(VerificationError, match="sha256"):
        label_frame(ev, "cmr", "copy", cache=False, progress=False)


def test_unreadable_gguf_is_a_model_error(ev, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    f = tmp_path / "broken.gguf"
    f.write_bytes(b"GGUF" + os.urandom(4096))
    register_model("broken", kind="gguf", path=f, progress=False)
    with pytest.raises(ModelLoadError, match=r"model 'broken': llama.cpp cannot load .* not a readable GGUF"):
        label_frame(ev, "cmr", "broken", cache=False, progress=False)


def _with_template(src, dst, template: str):
    """A copy of a GGUF with another chat template (gguf's own metadata tool; tensors unchanged)."""
    out = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(src), str(dst), "--force",
                          "--chat-template", template], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return dst


RAISING = "{{ raise_exception('this template is broken') }}"
# Gemma-2 style: no system role, strict user/assistant alternation (ChatML tokens so SmolLM2 can read it)
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
             "roles must alternate user/assistant/user/assistant/...') }}{% endif %}<|im_start|>{{ m['role'] }}\n"
             "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.slow
def test_chat_template_that_raises_is_a_model_error_and_a_no_system_template_works(smol, ev, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    register_model("raising", kind="gguf", path=_with_template(smol, tmp_path / "raising.gguf", RAISING),
                   progress=False)
    with pytest.raises(ModelLoadError, match=r"model 'raising': its chat template fails .*this template is broken"):
        label_frame(ev, "cmr", "raising", cache=False, progress=False)
    register_model("nosys", kind="gguf", path=_with_template(smol, tmp_path / "nosys.gguf", NO_SYSTEM),
                   progress=False)
    train = synthetic.generate("cmr", n=30, seed=2).query("split == 'train'")
    from radpriv.llm.engine import few_shot_examples

    run = label_frame(ev, "cmr", "nosys", cache=False, progress=False)  # zero-shot: a system turn folded
    assert run.stats["n_answers"] == 3, run.failures.to_dict("records")
    s = label_frame(ev, "cmr", "nosys", mode="scoring", cache=False, progress=False,  # few-shot: strict alternation
                    few_shot=few_shot_examples(train, load_schema("cmr")))
    assert s.stats["n_answers"] == 3


# ------------------------------------------------------------------------------ transport faults recorded


class _Faulty(BaseHTTPRequestHandler):
    """A server that fails each request in turn in another way, then answers properly."""

    plan: list = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        what = _Faulty.plan.pop(0) if _Faulty.plan else "ok"
        if what == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if what == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://10.9.9.9/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = {"500": (500, {"error": {"message": "model crashed"}}), "nochoices": (200, {"id": "x"}),
                        "ok": (200, {"choices": [{"message": {"content": '{"category": "normal"}'}}]})}[what]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_transport_faults_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    df = synthetic.generate("cmr", n=30, seed=2).head(5).reset_index(drop=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    register_model("faulty", kind="openai", endpoint=f"http://127.0.0.1:{srv.server_address[1]}/v1",
                   served_model="m")
    _Faulty.plan = ["close", "500", "nochoices", "redirect"]  # reports 1-4 fail, report 5 is answered
    try:
        with guard() as g:
            run = label_frame(df, "cmr", "faulty", cache=False, retries=0, progress=False,
                              backend_opts={"structured": "json_schema"})
    finally:
        srv.shutdown()
    assert run.stats["n_inputs"] == 5 == run.stats["n_answers"] + run.stats["n_failures"]
    assert list(run.failures.reason) == ["connection_error", "http_error", "bad_reply", "redirect_refused"]
    assert "model crashed" in run.failures.detail.iloc[1] and "10.9.9.9" in run.failures.detail.iloc[3]
    assert list(run.answers.label) == ["normal"]
    assert not any(a.host == "10.9.9.9" for a in g.attempts)  # the redirect was not followed


# ------------------------------------------------------------------------------ complete cache keys


def test_answer_cache_key_changes_with_every_ingredient():
    cmr, thumb = load_schema("cmr"), load_schema("thumb")
    spec = ModelSpec(name="a", kind="gguf", path="/x.gguf", sha256="a" * 64)
    srv = ModelSpec(name="s", kind="openai", endpoint="http://127.0.0.1:1/v1", served_model="m")
    msgs = build_messages(cmr, "template", "Normal study.")
    params = {"temperature": 0.0, "top_k": 1, "seed": 0, "max_tokens": 100}
    base = answer_key(spec, "llamacpp", cmr, "template", msgs, params)
    assert base == answer_key(spec, "llamacpp", cmr, "template", list(msgs), dict(params))  # stable
    import dataclasses

    from radpriv.llm import engine, prompts

    variants = {
        "model sha256": answer_key(dataclasses.replace(spec, sha256="b" * 64), "llamacpp", cmr, "template", msgs,
                                   params),
        "backend": answer_key(spec, "openai", cmr, "template", msgs, params),
        "chat format": answer_key(dataclasses.replace(spec, chat_format="chatml"), "llamacpp", cmr, "template", msgs,
                                  params),
        "prompt": answer_key(spec, "llamacpp", cmr, "template", build_messages(cmr, "template", "Normal study!"),
                             params),
        "mode": answer_key(spec, "llamacpp", cmr, "scoring", msgs, params),
        "decoding params": answer_key(spec, "llamacpp", cmr, "template", msgs, {**params, "temperature": 0.5}),
        "decoding method": answer_key(spec, "llamacpp", cmr, "template", msgs, {**params, "decoding": "grammar"}),
        "served-model digest": answer_key(srv, "openai", cmr, "template", msgs, params, model_digest="sha256:1"),
    }
    variants["no digest"] = answer_key(srv, "openai", cmr, "template", msgs, params)
    tmsgs = build_messages(thumb, "scoring", "No fracture.")
    score = answer_key(spec, "llamacpp", thumb, "scoring", tmsgs, params)
    orig_prefix, orig_question, orig_opts = prompts.answer_prefix, prompts.question, prompts.options
    try:
        prompts.answer_prefix = lambda s, f: orig_prefix(s, f) + " "
        variants["answer prefixes"] = answer_key(spec, "llamacpp", thumb, "scoring", tmsgs, params)
        prompts.answer_prefix = orig_prefix
        prompts.question = lambda s, f=None: orig_question(s, f) + "?"
        variants["scoring questions"] = answer_key(spec, "openai", thumb, "scoring", tmsgs, params)
        prompts.question = orig_question
        prompts.options = lambda s: list(reversed(orig_opts(s)))
        variants["option words"] = answer_key(spec, "llamacpp", thumb, "scoring", tmsgs, params)
    finally:
        prompts.answer_prefix, prompts.question, prompts.options = orig_prefix, orig_question, orig_opts
    old = engine.TOP_LOGPROBS
    try:
        s1 = answer_key(srv, "openai", thumb, "scoring", tmsgs, params)
        engine.TOP_LOGPROBS = 5
        variants["top logprobs"] = answer_key(srv, "openai", thumb, "scoring", tmsgs, params)
        assert variants["top logprobs"] != s1
    finally:
        engine.TOP_LOGPROBS = old
    old = engine.POSTPROCESS_VERSION
    try:
        engine.POSTPROCESS_VERSION = old + 1
        variants["post-processing version"] = answer_key(spec, "llamacpp", thumb, "scoring", tmsgs, params)
    finally:
        engine.POSTPROCESS_VERSION = old
    import copy

    reparented = copy.deepcopy(thumb)  # (load_schema may share its object: never mutate that one)
    child = next(f for f in reparented.findings if f.parent)
    object.__setattr__(child, "parent", None)
    variants["schema parents"] = answer_key(spec, "llamacpp", reparented, "scoring", tmsgs, params)
    keys = [base, score, *variants.values()]
    assert len(set(keys)) == len(keys), [k for k, v in variants.items() if v in (base, score)]
