"""The LLM engine on a real model (SmolLM2-135M, the smallest) and a real llama.cpp server on 127.0.0.1."""

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from radpriv.data import synthetic
from radpriv.llm import AnswerCache
from radpriv.netguard import NetworkPolicyError, guard
from radpriv.llm.engine import few_shot_examples, label_frame
from radpriv.models.registry import ModelNotFetchedError, get_model, model_path, register_model
from radpriv.schemas import State, load_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    try:
        return model_path("smollm2-135m")
    except ModelNotFetchedError as exc:
        pytest.skip(f"SmolLM2 not fetched ({exc}); run `make models-test`")


@pytest.fixture(scope="module")
def cmr():
    df = synthetic.generate("cmr", n=40, seed=3)
    return df[df.split != "train"].head(4).reset_index(drop=True), df[df.split == "train"]


def test_template_mode_always_parses_into_the_schema(smol, cmr, tmp_path):
    ev, _ = cmr
    run = label_frame(ev, "cmr", "smollm2-135m", cache=AnswerCache(tmp_path / "c.sqlite"), progress=False)
    assert run.stats["n_inputs"] == 4 == run.stats["n_answers"] + run.stats["n_failures"]
    assert run.stats["n_failures"] == 0  # the grammar makes any other answer impossible
    assert set(run.answers.label) <= set(load_schema("cmr").ids)


def test_multilabel_template_and_scoring_modes(smol, tmp_path):
    df = synthetic.generate("thumb", n=20, seed=1).head(2)
    cache = AnswerCache(tmp_path / "c.sqlite")
    t = label_frame(df, "thumb", "smollm2-135m", mode="template", cache=False, progress=False)
    assert t.stats["n_failures"] == 0, t.failures.to_dict("records")
    s = label_frame(df, "thumb", "smollm2-135m", mode="scoring", cache=cache, progress=False)
    schema = load_schema("thumb")
    for run in (t, s):
        assert list(run.answers.columns[:1 + len(schema.ids)]) == ["report_id", *schema.ids]
        for _, row in run.answers.iterrows():  # parents propagated after parsing
            assert schema.propagate({f: row[f] for f in schema.ids}) == {f: State(row[f]) for f in schema.ids}
    # scoring probabilities sum to one per finding
    row = s.answers.iloc[0]
    total = sum(row[f"p_{o}__fracture"] for o in ("present", "absent", "uncertain"))
    assert total == pytest.approx(1.0, abs=1e-6)
    # scoring evaluates the report once plus a short question per finding: no answer tokens generated
    assert s.stats["completion_tokens_per_report"] == 0 and t.stats["completion_tokens_per_report"] > 20


def test_multilabel_scoring_reads_answer_prefixes_on_the_shared_report_state(smol, tmp_path):
    """llama.cpp multi-label scoring: report state evaluated once, then only "<label>:" per finding;
    the rewound-state probabilities equal those of a fresh evaluation of the whole sequence."""
    import numpy as np

    from radpriv.llm import prompts
    from radpriv.llm.backends import get_backend
    from radpriv.llm.decoding import log_softmax as _log_softmax
    from radpriv.llm.engine import build_messages

    schema = load_schema("ctrate18")
    df = synthetic.generate("ct", n=20, seed=2).head(3)
    run = label_frame(df, schema, "smollm2-135m", mode="scoring", cache=False, progress=False)
    assert run.stats["n_failures"] == 0 and run.stats["completion_tokens_per_report"] == 0
    b = get_backend(get_model("smollm2-135m"))
    msgs = build_messages(schema, "scoring", df.text.iloc[2])
    prefixes = [prompts.answer_prefix(schema, f) for f in schema.ids[:3]]
    opts = prompts.options(schema)
    sc = b.score_continuations(msgs, prefixes, opts)
    base = b.tokenize(b.render(msgs))
    prefix_tokens = sum(len(b.tokenize(p, special=False)) for p in prefixes)
    assert sc.prompt_tokens <= len(base) - b.count_tokens(prompts.instructions(schema, "scoring")) + prefix_tokens
    opt_tok = [b.tokenize(f" {o}", special=False)[0] for o in opts]
    for p, got in zip(prefixes, sc.logprobs):
        b.llm.reset()  # fresh state, whole sequence at once
        b.llm.eval(base + b.tokenize(p, special=False))
        want = _log_softmax(b._last_logits()[opt_tok])
        np.testing.assert_allclose([got[o] for o in opts], want, atol=0.05)
    # per report: the report's tokens plus chat markup plus a few tokens per finding, not a chat turn each
    q_all = sum(len(b.tokenize(prompts.answer_prefix(schema, f), special=False)) for f in schema.ids)
    assert q_all < 6 * len(schema.ids)
    total = run.stats["prompt_tokens_per_report"] * 3  # the first report also paid the shared prefix
    later = (total - len(base) - q_all) / 2  # reports 1 and 2 without it (the whole of report 3 is len(base) + q_all)
    assert later < max(b.count_tokens(t) for t in df.text[:2]) + 20 + q_all


def test_parallel_answer_prefixes_equal_one_by_one_scoring(smol):
    """Multi-label scoring evaluates every finding's answer prefix in one llama.cpp batch, each in its own
    sequence over the report's shared KV cells. One prefix per batch reproduces one-by-one scoring exactly
    (so no prefix sees another's tokens); a full batch differs only by the rounding of the batched kernels."""
    import numpy as np

    from radpriv.llm import prompts
    from radpriv.llm.backends import get_backend
    from radpriv.llm.engine import build_messages

    schema = load_schema("elbow")
    df = synthetic.generate("elbow", n=20, seed=4).head(2)
    b = get_backend(get_model("smollm2-135m"))
    assert b.parallel_prefixes
    prefixes = [prompts.answer_prefix(schema, f) for f in schema.ids]
    opts = prompts.options(schema)
    opt_tok = [b.tokenize(f" {o}", special=False)[0] for o in opts]
    for text in df.text:
        msgs = build_messages(schema, "scoring", text)
        # llama.cpp's numbers depend on how tokens were batched: every path starts from the same fresh state
        b.llm.reset()
        b.parallel_prefixes = False
        try:
            one_by_one = np.array([[lp[o] for o in opts] for lp in b.score_continuations(msgs, prefixes, opts).logprobs])
        finally:
            b.parallel_prefixes = True
        b.llm.reset()
        batched = np.array([[lp[o] for o in opts] for lp in b.score_continuations(msgs, prefixes, opts).logprobs])
        b.llm.reset()
        b._eval_from(b.tokenize(b.render(msgs)))
        n_base = b.llm.n_tokens
        suffixes = [b.tokenize(p, special=False) for p in prefixes]
        single = np.array([b._score_prefixes_parallel(n_base, [s], opt_tok, None)[0] for s in suffixes])
        np.testing.assert_array_equal(single, one_by_one)
        assert batched.shape == (len(schema.ids), 3)
        np.testing.assert_allclose(batched, one_by_one, atol=0.3)
        assert (batched.argmax(1) == one_by_one.argmax(1)).mean() >= 0.9
    # the single-sequence paths still work on the re-created context
    run = label_frame(df.head(1), "elbow", "smollm2-135m", mode="template", cache=False, progress=False)
    assert run.stats["n_failures"] == 0


def test_scoring_is_deterministic_and_reuses_the_shared_prefix(smol, cmr, tmp_path):
    ev, train = cmr
    fs = few_shot_examples(train, load_schema("cmr"))
    a = label_frame(ev, "cmr", "smollm2-135m", mode="scoring", few_shot=fs, cache=False, progress=False)
    b = label_frame(ev, "cmr", "smollm2-135m", mode="scoring", few_shot=fs, cache=False, progress=False)
    pd.testing.assert_frame_equal(a.answers, b.answers)
    # the instructions + few-shot turns are evaluated once: later reports evaluate far fewer tokens
    assert a.stats["prompt_tokens_per_report"] < 0.6 * a.stats["prompt_tokens_total_per_report"]
    with pytest.raises(ValueError, match="training split only"):
        few_shot_examples(ev, load_schema("cmr"))


def test_cache_hit_on_rerun_and_timeout_failure(smol, cmr, tmp_path):
    ev, _ = cmr
    cache = AnswerCache(tmp_path / "c.sqlite")
    first = label_frame(ev, "cmr", "smollm2-135m", mode="scoring", cache=cache, progress=False)
    again = label_frame(ev, "cmr", "smollm2-135m", mode="scoring", cache=cache, progress=False)
    assert again.stats["cache_hits"] == 4 and again.stats["newly_computed"] == 0
    pd.testing.assert_frame_equal(first.answers, again.answers)
    slow = label_frame(ev.head(2), "elbow", "smollm2-135m", mode="template", cache=False, timeout=0.01,
                       progress=False)
    assert slow.stats["n_failures"] == 2 and set(slow.failures.reason) == {"timeout"}
    assert slow.stats["n_inputs"] == slow.stats["n_answers"] + slow.stats["n_failures"]


def test_radpriv_label_resumes_after_kill_9(smol, tmp_path):
    """`radpriv label` killed with SIGKILL mid-run and run again ends with the same answers as an
    uninterrupted run: every answer is durable in the cache once written, and nothing half-written is read."""
    db = tmp_path / "resume.sqlite"
    cmd = [sys.executable, "-m", "radpriv.cli", "label", "--manifest", "synthetic_cmr", "--model", "smollm2-135m",
           "--mode", "scoring", "--split", "test", "--limit", "8", "--quiet"]
    t0 = time.time()
    proc = subprocess.Popen(cmd + ["--cache", str(db), "--out", str(tmp_path / "killed.csv")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a few answers are durable
        time.sleep(0.2)
        if db.exists() and len(AnswerCache(db)) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(AnswerCache(db))
    assert 0 < done_before < 8 and not (tmp_path / "killed.csv").exists()
    resumed = subprocess.run(cmd + ["--cache", str(db), "--out", str(tmp_path / "resumed.csv")], capture_output=True,
                             text=True, check=True)
    fresh = subprocess.run(cmd + ["--cache", str(tmp_path / "fresh.sqlite"), "--out", str(tmp_path / "fresh.csv")],
                           capture_output=True, text=True, check=True)
    a, b = pd.read_csv(tmp_path / "resumed.csv"), pd.read_csv(tmp_path / "fresh.csv")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 8 and "8 inputs = 8 answers + 0 failures" in resumed.stdout
    assert f"cache_hits={done_before}" in resumed.stdout and "cache_hits=0" in fresh.stdout
    print(f"kill -9 after {done_before} of 8 answers ({time.time() - t0:.0f} s in all); resumed run: {done_before} "
          f"from cache, {8 - done_before} computed; answers identical to an uninterrupted run")


def test_http_backend_against_a_real_llama_cpp_server(llama_server, cmr, tmp_path, monkeypatch):
    ev, _ = cmr
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    register_model("smol-served", kind="openai", endpoint=llama_server + "/v1", served_model="smollm2")
    with guard() as g:
        t = label_frame(ev, "cmr", "smol-served", mode="template", cache=False, progress=False, concurrency=2)
        s = label_frame(ev.head(2), "cmr", "smol-served", mode="scoring", cache=False, progress=False)
    assert t.stats["n_answers"] + t.stats["n_failures"] == 4 and t.stats["n_answers"] >= 3
    assert set(t.answers.label) <= set(load_schema("cmr").ids)
    assert s.stats["n_answers"] == 2
    assert sum(s.answers.iloc[0][f"p__{c}"] for c in load_schema("cmr").ids) == pytest.approx(1, abs=1e-6)
    assert not g.non_loopback  # the whole run stayed on loopback


class _BadServer(BaseHTTPRequestHandler):
    mode = "garbage"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "sleep":
            time.sleep(3)
        body = {"choices": [{"message": {"content": "this is {not json"}}], "usage": {}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_malformed_answers_and_slow_server_become_recorded_failures(cmr, tmp_path, monkeypatch):
    ev, _ = cmr
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    srv = HTTPServer(("127.0.0.1", 0), _BadServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    register_model("bad-server", kind="openai", endpoint=url, served_model="x")
    run = label_frame(ev.head(2), "cmr", "bad-server", cache=False, retries=1, progress=False)
    assert run.stats["n_failures"] == 2 and set(run.failures.reason) == {"invalid_json"}
    assert "after 2 attempts" in run.failures.detail.iloc[0]
    _BadServer.mode = "sleep"
    run = label_frame(ev.head(1), "cmr", "bad-server", cache=False, timeout=1, progress=False)
    assert list(run.failures.reason) == ["timeout"]
    srv.shutdown()


def test_guard_refuses_non_loopback_endpoint_unless_opted_in(tmp_path, monkeypatch):
    """Not opted in: refused before any report is read. Opted in: the engine goes as far as connecting,
    and this test session's interception stops the attempt before any packet leaves (a private address
    is a real hospital network)."""
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path))
    ev = synthetic.generate("cmr", n=20).head(1)
    register_model("remote", kind="openai", endpoint="http://10.1.2.3:8000/v1", served_model="m",
                   allow_hosts=["10.1.2.3"])
    with guard() as g:
        with pytest.raises(NetworkPolicyError, match="10.1.2.3"):
            label_frame(ev, "cmr", "remote", progress=False)
    assert not g.attempts  # refused by the endpoint check, before any socket call
    with guard(allow_hosts=["10.1.2.3"]) as g:
        with pytest.raises(NetworkPolicyError, match="intercepted"):
            label_frame(ev, "cmr", "remote", allow_hosts=["10.1.2.3"], timeout=2, cache=False, progress=False)
    assert g.intercepted and {a.host for a in g.attempts} == {"10.1.2.3"} and not g.left_machine


def _gbnf_greedy(b, prompt_tokens, fields) -> dict:
    """Greedy decoding by llama.cpp's own sampler under GBNF grammars written here, one per field: the JSON text
    the schema fixes (``{"k1": "``, ``", "k2": "``: keys in schema order, no whitespace freedom) is fed as its
    canonical tokens, then llama.cpp chooses the value under ``root ::= "v1" | "v2" | ...``. (One grammar for
    the whole object would let the model spell the fixed keys in non-canonical tokens, e.g. character by
    character, a different context from the one the engine feeds; measured on SmolLM2 it then drifts.)"""
    from llama_cpp import LlamaGrammar

    lit = json.dumps  # a GBNF string literal (same escapes as JSON for ASCII)
    seq, out = list(prompt_tokens), {}
    for i, (key, values) in enumerate(fields):
        seq += b.tokenize(("{" if i == 0 else '", ') + json.dumps(key) + ': "', special=False)
        grammar = LlamaGrammar.from_string("root ::= " + " | ".join(lit(v) for v in values) + "\n", verbose=False)
        b.llm.reset()
        res = b.llm.create_completion(prompt=list(seq), grammar=grammar, temperature=0.0, top_k=1, max_tokens=32, seed=0)
        value = res["choices"][0]["text"]
        assert value in values, value
        out[key] = value
        seq += b.tokenize(value, special=False)
    return out


def test_template_jump_forward_decoding_matches_a_fresh_greedy_reference(smol):
    """Template mode on llama.cpp feeds the JSON tokens the schema fixes in one batch per field and
    asks the model only where the schema leaves a choice. Its answer must equal greedy decoding
    restricted to the allowed values, recomputed from a fresh state at every choice (no KV reuse),
    for multi-token category ids (CMR, a trie of choices) and for several enum fields."""
    import numpy as np

    from radpriv.llm import prompts
    from radpriv.llm.backends import enum_object_fields, get_backend
    from radpriv.llm.engine import build_messages

    b = get_backend(get_model("smollm2-135m"))
    params = {"temperature": 0.0, "top_k": 1, "seed": 0}
    ct = load_schema("ctrate18")
    few = {"type": "object", "additionalProperties": False, "required": list(ct.ids[:3]),
           "properties": {f: {"type": "string", "enum": ["true", "false", "uncertain"]} for f in ct.ids[:3]}}
    cases = [(build_messages(load_schema("cmr"), "template", synthetic.generate("cmr", n=12, seed=5).text.iloc[0]),
              prompts.answer_schema(load_schema("cmr"))),
             (build_messages(ct, "template", synthetic.generate("ct", n=12, seed=5).text.iloc[0]), few)]
    for msgs, js in cases:
        fields = enum_object_fields(js)
        gen = b.generate_json(msgs, js, params)
        assert gen.decode_steps is not None and gen.decode_steps >= len(fields)  # jump-forward path taken
        answer = json.loads(gen.text)
        assert list(answer) == [k for k, _ in fields]
        prompt = b.tokenize(b.render(msgs))
        seq = list(prompt)
        ref = {}
        for i, (key, values) in enumerate(fields):
            seq += b.tokenize(('{' if i == 0 else '", ') + json.dumps(key) + ': "', special=False)
            cands = {v: b.tokenize(v, special=False) for v in values}
            depth = 0
            while len(cands) > 1:
                b.llm.reset()
                b.llm.eval(seq)
                allowed = sorted({t[depth] for t in cands.values()})
                pick = allowed[int(np.argmax(b._last_logits()[allowed]))]
                cands = {v: t for v, t in cands.items() if t[depth] == pick}
                seq.append(pick)
                depth += 1
            (value, toks), = cands.items()
            seq += toks[depth:]
            ref[key] = value
        assert answer == ref
        # the text is exactly the canonical tokens fed to the model
        assert b.tokenize(gen.text, special=False) == seq[len(prompt):] + b.tokenize('"}', special=False)
        # an independent path: llama.cpp's own grammar-constrained greedy sampler (GBNF written here, keys in
        # schema order, the engine's separators, no whitespace freedom) gives the same answer
        assert _gbnf_greedy(b, prompt, fields) == answer
    # other schemas keep grammar-constrained sampling
    assert enum_object_fields({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                               "additionalProperties": False}) is None


def test_template_records_value_probabilities_and_applies_a_value_bias(smol):
    """Template answers decoded in process carry, per field, each value's probability at the field's first
    choice; ``params['value_bias']`` shifts those log-probabilities before the choice. Both recomputed here from a
    fresh llama.cpp state per field (no KV reuse), following the answer the engine decoded."""
    import numpy as np
    from scipy.special import softmax

    from radpriv.llm.backends import enum_object_fields, get_backend
    from radpriv.llm.engine import build_messages

    b = get_backend(get_model("smollm2-135m"))
    ct = load_schema("ctrate18")
    js = {"type": "object", "additionalProperties": False, "required": list(ct.ids[:4]),
          "properties": {f: {"type": "string", "enum": ["true", "false", "uncertain"]} for f in ct.ids[:4]}}
    fields = enum_object_fields(js)
    msgs = build_messages(ct, "template", synthetic.generate("ct", n=12, seed=5).text.iloc[1])
    bias = {"true": 1.5, "uncertain": -0.7}
    for vb in ({}, bias):
        gen = b.generate_json(msgs, js, {"temperature": 0.0, "top_k": 1, "seed": 0, "value_bias": vb})
        answer = json.loads(gen.text)
        seq = b.tokenize(b.render(msgs))
        for i, (key, values) in enumerate(fields):
            seq += b.tokenize(('{' if i == 0 else '", ') + json.dumps(key) + ': "', special=False)
            first = [b.tokenize(v, special=False)[0] for v in values]
            assert len(set(first)) == len(values)  # one token decides each value here
            b.llm.reset()
            b.llm.eval(seq)
            lg = b._last_logits()[first].astype(float) + np.array([vb.get(v, 0.0) for v in values])
            p = softmax(lg)
            assert gen.field_probs[key] == pytest.approx(dict(zip(values, p)), abs=2e-3)
            assert answer[key] == values[int(np.argmax(lg))]
            seq += b.tokenize(answer[key], special=False)
    # a large enough bias decides every field
    gen = b.generate_json(msgs, js, {"temperature": 0.0, "top_k": 1, "seed": 0, "value_bias": {"false": 50.0}})
    assert set(json.loads(gen.text).values()) == {"false"}
    assert all(pr["false"] > 0.99 for pr in gen.field_probs.values())


def test_option_orders_average_the_per_order_letter_probabilities(smol, cmr, tmp_path):
    """label_frame_orders == the geometric mean of scoring runs with the categories listed in each order,
    computed here from runs of reordered schemas; the label is its argmax; seconds add up."""
    import numpy as np
    from dataclasses import replace

    from radpriv.llm.engine import label_frame_orders
    from radpriv.llm.prompts import option_orders

    ev, _ = cmr
    cache = AnswerCache(tmp_path / "c.sqlite")
    schema = load_schema("cmr")
    cols = [f"p__{c}" for c in schema.ids]
    run = label_frame_orders(ev, schema, "smollm2-135m", orders=3, cache=cache, progress=False)
    per = []
    for o in option_orders(len(schema.ids), 3):
        r = label_frame(ev, replace(schema, findings=tuple(schema.findings[i] for i in o)), "smollm2-135m",
                        mode="scoring", cache=False, progress=False)
        per.append(r.answers.set_index("report_id").loc[ev.report_id, cols].to_numpy(float))
    assert not np.allclose(per[0], per[2])  # the order changes what the model says
    g = np.exp(np.mean(np.log(per), axis=0))
    g /= g.sum(axis=1, keepdims=True)
    got = run.answers.set_index("report_id").loc[ev.report_id]
    np.testing.assert_allclose(got[cols].to_numpy(float), g, rtol=1e-6, atol=1e-9)
    assert list(got["label"]) == [schema.ids[j] for j in g.argmax(axis=1)]
    assert run.stats["option_orders"] == 3 and run.stats["n_answers"] + run.stats["n_failures"] == len(ev)
