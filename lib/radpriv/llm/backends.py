"""LLM backends: a small abstract interface and a registry (after opacus's accountant registry).

- ``llamacpp``  in-process llama.cpp (``llama-cpp-python``): answers of enum fields (every engine
  schema) by jump-forward decoding, any other JSON schema by a grammar compiled from it; the shared prefix (instructions, template, few-shot turns) stays in the KV
  cache and is evaluated once; scoring mode reads next-token log-probabilities on a saved state.
- ``openai``    any OpenAI-compatible chat-completions server (Ollama /v1, vLLM, llama.cpp server,
  LM Studio): structured output where the server has it, then jsonschema validation; scoring mode via
  ``logprobs``/``top_logprobs``. Every URL passes the network guard first.

Create one with :func:`create_backend(spec)`; register another with :func:`register_backend`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from radpriv.llm.netguard import check_endpoint
from radpriv.llm.registry import ModelSpec, model_path


class BackendError(RuntimeError):
    """A backend failed to produce an answer (recorded as a failure with this reason)."""


class BackendTimeout(BackendError):
    pass


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0          # prompt tokens evaluated for this answer (after prefix reuse)
    prompt_tokens_total: int = 0    # tokens of the whole prompt
    completion_tokens: int = 0
    seconds: float = 0.0
    decode_steps: int | None = None  # model calls that chose a token (jump-forward); None: one per completion token


def enum_object_fields(json_schema: dict) -> list[tuple[str, list[str]]] | None:
    """``[(key, allowed values), ...]`` when the schema is an object whose properties are all
    required string enums with no other properties (the engine's answer schemas); else None."""
    props, req = json_schema.get("properties"), json_schema.get("required")
    if json_schema.get("type") != "object" or not isinstance(props, dict) or not props or list(props) != list(req or ()):
        return None
    if json_schema.get("additionalProperties", True) is not False:
        return None
    out = []
    for key, sub in props.items():
        values = sub.get("enum") if isinstance(sub, dict) else None
        if (set(sub) - {"type", "enum", "description", "title"} or sub.get("type", "string") != "string"
                or not values or not all(isinstance(v, str) and v and '"' not in v and "\\" not in v for v in values)):
            return None
        out.append((key, list(values)))
    return out


@dataclass
class Scores:
    logprobs: list[dict[str, float]]   # per question: option -> normalised log-probability
    prompt_tokens: int = 0
    prompt_tokens_total: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """Answer a chat either by generating schema-valid JSON or by scoring fixed options."""

    name: str = "abstract"

    def __init__(self, spec: ModelSpec, **opts):
        self.spec = spec
        self.opts = opts

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @abstractmethod
    def generate_json(self, messages: list[dict], json_schema: dict, params: dict,
                      deadline: float | None = None) -> Generation:
        """Generate an answer to ``messages`` that satisfies ``json_schema`` (as text)."""

    @abstractmethod
    def score_options(self, messages: list[dict], questions: Sequence[str], options: Sequence[str],
                      deadline: float | None = None) -> Scores:
        """For each question appended after ``messages``, the log-probability of each option as the
        next token (normalised over the options)."""

    def count_tokens(self, text: str) -> int:  # pragma: no cover - overridden where possible
        return len(text.split())

    def close(self) -> None:
        pass


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(kind: str, cls: type[Backend]) -> None:
    _BACKENDS[kind] = cls


def create_backend(spec: ModelSpec, **opts) -> Backend:
    kind = "openai" if spec.kind == "openai" else spec.kind
    try:
        cls = _BACKENDS[kind]
    except KeyError:
        raise BackendError(f"no backend for model kind {spec.kind!r} (known: {', '.join(_BACKENDS)})") from None
    return cls(spec, **opts)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x)
    return x - np.log(np.exp(x).sum())


# ---------------------------------------------------------------------------------------------
# llama.cpp in process
# ---------------------------------------------------------------------------------------------
class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, spec: ModelSpec, n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, seed: int = 0, **opts):
        super().__init__(spec, **opts)
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama_cpp = llama_cpp
        path = model_path(spec)
        if n_gpu_layers is None:  # offload everything when llama.cpp was built with a GPU backend
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=int(n_ctx or spec.n_ctx or 4096),
                                   n_threads=n_threads or max(1, (os.cpu_count() or 2)), n_gpu_layers=n_gpu_layers,
                                   seed=seed, logits_all=False, verbose=False)
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{path}: the GGUF file has no chat template; register the model with a chat_format")
        eos = self.llm.detokenize([self.llm.token_eos()]).decode("utf-8", "ignore")
        bos = self.llm.detokenize([self.llm.token_bos()]).decode("utf-8", "ignore") if self.llm.token_bos() >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._formatter_open = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                                   add_generation_prompt=False)
        self._lock = threading.Lock()  # one llama context: calls are serialised
        self._grammars: dict[str, object] = {}
        self._option_tokens: dict[tuple, list[int]] = {}

    # ---- helpers --------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        fmt = self._formatter if add_generation_prompt else self._formatter_open
        return fmt(messages=messages).prompt

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, special=False))

    def _grammar(self, json_schema: dict):
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._llama_cpp.LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _eval_from(self, tokens: list[int]) -> int:
        """Evaluate ``tokens`` reusing the longest prefix already in the KV cache; returns tokens evaluated."""
        keep = self.llm.longest_token_prefix(self.llm._input_ids.tolist(), tokens)
        if keep == len(tokens):  # need at least one token evaluated to have fresh logits
            keep -= 1
        self.llm.n_tokens = keep
        self.llm.eval(tokens[keep:])
        return len(tokens) - keep

    def _last_logits(self) -> np.ndarray:
        n_vocab = self.llm.n_vocab()
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(n_vocab,)).copy()

    # ---- template mode --------------------------------------------------------------------
    def generate_json(self, messages, json_schema, params, deadline=None) -> Generation:
        fields = enum_object_fields(json_schema)
        if (fields is not None and params.get("decoding", "jump-forward") == "jump-forward"
                and all(self._values_decodable(v) for _, v in fields)):
            return self._generate_enum_object(messages, fields, params, deadline)
        return self._generate_grammar(messages, json_schema, params, deadline)

    def _generate_enum_object(self, messages, fields, params, deadline=None) -> Generation:
        """Schema-enforced JSON for an object of enum-valued fields (every answer schema of the
        engine), decoded with *jump-forward*: the tokens the schema fixes (braces, keys, quotes,
        separators) are appended in one batched evaluation per field instead of one decode step
        each; only where the schema leaves a choice is the model asked, restricted to the tokens
        that continue an allowed value (greedy, or sampled at ``temperature`` > 0). The answer is
        the compact ``json.dumps`` form the few-shot turns use. Equivalent to grammar-constrained
        decoding with that formatting, at a fraction of the decode steps (≈ one per field)."""
        tokens = self.tokenize(self.render(messages))
        answer_budget = sum(len(self.tokenize(json.dumps({k: max(v, key=len)}), special=False)) for k, v in fields)
        if len(tokens) + answer_budget + 8 > self.llm.n_ctx():
            raise BackendError(f"prompt of {len(tokens)} tokens + answer budget exceeds n_ctx={self.llm.n_ctx()}; "
                               "raise n_ctx or shorten the report")
        temperature, top_k = float(params.get("temperature", 0.0)), int(params.get("top_k", 1))
        rng = np.random.default_rng(int(params.get("seed", 0)))
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(tokens)
            n_prompt = self.llm.n_tokens
            answer: dict[str, str] = {}
            pending: list[int] = []     # tokens fixed by the schema, not yet evaluated
            n_answer = n_choices = 0
            try:
                for i, (key, values) in enumerate(fields):
                    if deadline is not None and time.monotonic() > deadline:
                        raise BackendTimeout(f"answered {i} of {len(fields)} fields before the timeout")
                    pending += self.tokenize(('{' if i == 0 else '", ') + json.dumps(key) + ': "', special=False)
                    cands = {v: self._value_tokens(v) for v in values}
                    depth = 0
                    while len(cands) > 1:   # the model chooses among the values still possible
                        self.llm.eval(pending)
                        n_answer += len(pending)
                        pending = []
                        allowed = sorted({t[depth] for t in cands.values()})
                        pick = allowed[self._choose(self._last_logits()[allowed], temperature, top_k, rng)]
                        n_choices += 1
                        cands = {v: t for v, t in cands.items() if t[depth] == pick}
                        pending.append(pick)
                        depth += 1
                    (value, vt), = cands.items()
                    pending += vt[depth:]
                    answer[key] = value
                pending += self.tokenize('"}', special=False)
                n_answer += len(pending)   # the closing tokens are part of the answer; not evaluated
            finally:
                self.llm.n_tokens = n_prompt  # the next call reuses the prompt state, not this answer
            secs = time.perf_counter() - t0
        text = json.dumps(answer)
        return Generation(text=text, prompt_tokens=evaluated, prompt_tokens_total=len(tokens),
                          completion_tokens=n_answer, seconds=secs, decode_steps=n_choices)

    def _values_decodable(self, values: Sequence[str]) -> bool:
        """No value's tokens are a prefix of another's (else the choice is not token by token)."""
        toks = [tuple(self._value_tokens(v)) for v in values]
        return all(a == b or a != b[:len(a)] for a in toks for b in toks) and len(set(toks)) == len(toks)

    def _value_tokens(self, value: str) -> list[int]:
        key = ("value", value)
        if key not in self._option_tokens:
            self._option_tokens[key] = self.tokenize(value, special=False)
        return self._option_tokens[key]

    @staticmethod
    def _choose(logits: np.ndarray, temperature: float, top_k: int, rng) -> int:
        if temperature <= 0 or top_k == 1 or len(logits) == 1:
            return int(np.argmax(logits))
        lp = _log_softmax(logits / temperature)
        if top_k > 0:
            lp[np.argsort(lp)[:-top_k]] = -np.inf
        p = np.exp(lp - lp.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    def _generate_grammar(self, messages, json_schema, params, deadline=None) -> Generation:
        """Any other JSON schema: sampled token by token under a grammar compiled from the schema."""
        prompt = self.render(messages)
        tokens = self.tokenize(prompt)
        if len(tokens) + int(params.get("max_tokens", 512)) > self.llm.n_ctx():
            raise BackendError(f"prompt of {len(tokens)} tokens + answer budget exceeds n_ctx={self.llm.n_ctx()}; "
                               "raise n_ctx or shorten the report")
        stop_at = deadline

        def stopping(_ids, _logits) -> bool:
            return stop_at is not None and time.monotonic() > stop_at

        with self._lock:
            t0 = time.perf_counter()
            reused = self.llm.longest_token_prefix(self.llm._input_ids.tolist(), tokens)
            out = self.llm.create_completion(
                prompt=tokens, grammar=self._grammar(json_schema), temperature=float(params.get("temperature", 0.0)),
                top_k=int(params.get("top_k", 1)), max_tokens=int(params.get("max_tokens", 512)),
                seed=int(params.get("seed", 0)), stopping_criteria=self._llama_cpp.StoppingCriteriaList([stopping]))
            secs = time.perf_counter() - t0
        if stop_at is not None and time.monotonic() > stop_at:
            try:  # the stopping criterion cut generation short: an incomplete answer is a timeout
                json.loads(out["choices"][0]["text"])
            except ValueError:
                raise BackendTimeout(f"no complete answer before the timeout ({secs:.1f} s)") from None
        usage = out.get("usage", {})
        return Generation(text=out["choices"][0]["text"], prompt_tokens=len(tokens) - min(reused, len(tokens) - 1),
                          prompt_tokens_total=len(tokens), completion_tokens=int(usage.get("completion_tokens", 0)),
                          seconds=secs)

    # ---- scoring mode ---------------------------------------------------------------------
    def _options_first_tokens(self, options: Sequence[str]) -> list[int]:
        key = tuple(options)
        if key not in self._option_tokens:
            first = [self.tokenize(o, special=False)[0] for o in options]
            if len(set(first)) != len(first):
                raise BackendError(f"options {list(options)} share a first token; use distinct option words")
            self._option_tokens[key] = first
        return self._option_tokens[key]

    def score_options(self, messages, questions, options, deadline=None) -> Scores:
        base = self.render(messages, add_generation_prompt=False)
        base_tokens = self.tokenize(base)
        opt_tok = self._options_first_tokens(options)
        out: list[dict[str, float]] = []
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(base_tokens)
            n_base = self.llm.n_tokens
            for q in questions:
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendTimeout(f"scored {len(out)} of {len(questions)} questions before the timeout")
                full = self.render(messages + [{"role": "user", "content": q}])
                if not full.startswith(base):
                    raise BackendError("chat template does not extend the report prefix; cannot reuse its state")
                suffix = self.tokenize(full[len(base):])
                self.llm.n_tokens = n_base          # rewind to the report state (KV beyond is dropped by eval)
                self.llm.eval(suffix)
                evaluated += len(suffix)
                lp = _log_softmax(self._last_logits()[opt_tok])
                out.append({o: float(v) for o, v in zip(options, lp)})
            self.llm.n_tokens = n_base
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=len(base_tokens), seconds=secs)

    def score_continuations(self, messages, prefixes, options, deadline=None) -> Scores:
        """Scoring with the questions in the assistant's voice: the report state ends with the
        assistant's turn opened; for each prefix (e.g. ``"Cardiomegaly:"``) the option words, each
        with a leading space, are scored as the next token. Only the prefix tokens (a few per
        finding) are evaluated on top of the shared report state, instead of a whole chat turn."""
        base_tokens = self.tokenize(self.render(messages, add_generation_prompt=True))
        opt_tok = self._options_first_tokens([f" {o}" for o in options])
        out: list[dict[str, float]] = []
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(base_tokens)
            n_base = self.llm.n_tokens
            for prefix in prefixes:
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendTimeout(f"scored {len(out)} of {len(prefixes)} questions before the timeout")
                suffix = self.tokenize(prefix, special=False)
                self.llm.n_tokens = n_base          # rewind to the report state (KV beyond is dropped by eval)
                self.llm.eval(suffix)
                evaluated += len(suffix)
                lp = _log_softmax(self._last_logits()[opt_tok])
                out.append({o: float(v) for o, v in zip(options, lp)})
            self.llm.n_tokens = n_base
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=len(base_tokens), seconds=secs)

    def close(self) -> None:
        self.llm.close()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# ---------------------------------------------------------------------------------------------
class OpenAIBackend(Backend):
    """Chat completions over HTTP. ``structured``: json_schema (vLLM, LM Studio, Ollama), json_object
    (llama.cpp's Python server: ``{"type": "json_object", "schema": ...}``) or none."""

    name = "openai"

    def __init__(self, spec: ModelSpec, allow_hosts: Sequence[str] = (), structured: str = "auto",
                 request_timeout: float = 600.0, **opts):
        super().__init__(spec, **opts)
        self.base = str(spec.endpoint).rstrip("/")
        check_endpoint(self.base, allow_hosts)
        self.allow_hosts = tuple(allow_hosts)
        self.structured = structured
        self.request_timeout = request_timeout
        self.api_key = os.environ.get(spec.api_key_env or "", "") if spec.api_key_env else ""

    def _post(self, path: str, body: dict, deadline: float | None) -> dict:
        url = f"{self.base}{path}"
        check_endpoint(url, self.allow_hosts)
        timeout = self.request_timeout if deadline is None else max(0.1, deadline - time.monotonic())
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except TimeoutError as exc:
            raise BackendTimeout(f"{url}: no answer within {timeout:.1f} s") from exc
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise BackendError(f"{url}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise BackendTimeout(f"{url}: no answer within {timeout:.1f} s") from None
            raise BackendError(f"{url}: {exc.reason}") from None
        except json.JSONDecodeError as exc:
            raise BackendError(f"{url}: the server's reply is not JSON ({exc})") from None

    def _formats(self, json_schema: dict) -> list[dict | None]:
        js = {"type": "json_schema", "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        jo = {"type": "json_object", "schema": json_schema}
        order = {"json_schema": [js], "json_object": [jo], "none": [None]}.get(self.structured, [js, jo, None])
        return order

    def generate_json(self, messages, json_schema, params, deadline=None) -> Generation:
        last: Exception | None = None
        for fmt in self._formats(json_schema):
            body = {"model": self.spec.served_model, "messages": messages, "temperature": params.get("temperature", 0.0),
                    "max_tokens": params.get("max_tokens", 512), "seed": params.get("seed", 0)}
            if fmt is not None:
                body["response_format"] = fmt
            t0 = time.perf_counter()
            try:
                out = self._post("/chat/completions", body, deadline)
            except BackendTimeout:
                raise
            except BackendError as exc:  # e.g. the server does not know this response_format: try the next
                last = exc
                if ": HTTP " not in str(exc) or self.structured != "auto":
                    raise
                continue
            self.structured = "json_schema" if fmt and fmt["type"] == "json_schema" else (
                "json_object" if fmt else "none")
            try:
                text = out["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise BackendError(f"unexpected reply shape: {str(out)[:300]}") from None
            usage = out.get("usage") or {}
            return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              prompt_tokens_total=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              seconds=time.perf_counter() - t0)
        raise BackendError(f"the server accepted no structured-output format: {last}")

    def score_options(self, messages, questions, options, deadline=None) -> Scores:
        out, t0, ptok = [], time.perf_counter(), 0
        for q in questions:
            body = {"model": self.spec.served_model, "messages": messages + [{"role": "user", "content": q}],
                    "temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 20}
            reply = self._post("/chat/completions", body, deadline)
            try:
                top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise BackendError("the server returned no top_logprobs; scoring mode needs a server with logprobs "
                                   "(llama.cpp server, vLLM); use template mode otherwise") from None
            lp = {o: -np.inf for o in options}
            for item in top:
                tok = str(item.get("token", "")).strip().lower()
                for o in options:
                    if tok and o.lower().startswith(tok) and item["logprob"] > lp[o]:
                        lp[o] = float(item["logprob"])
            vals = np.array([lp[o] for o in options])
            if np.all(np.isinf(vals)):
                raise BackendError(f"none of the options {list(options)} among the top log-probabilities")
            vals = np.where(np.isinf(vals), np.min(vals[~np.isinf(vals)]) - 10, vals)
            out.append({o: float(v) for o, v in zip(options, _log_softmax(vals))})
            ptok += int((reply.get("usage") or {}).get("prompt_tokens", 0))
        return Scores(logprobs=out, prompt_tokens=ptok, prompt_tokens_total=ptok, seconds=time.perf_counter() - t0)


register_backend("gguf", LlamaCppBackend)
register_backend("openai", OpenAIBackend)


_LOADED: dict[tuple, Backend] = {}
_LOADED_LOCK = threading.Lock()


def get_backend(spec: ModelSpec, **opts) -> Backend:
    """A shared backend per (model, options): loading a model once per process, not per call."""
    key = (spec.model_id, spec.kind, json.dumps(opts, sort_keys=True, default=str))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = create_backend(spec, **opts)
        return _LOADED[key]


def unload_all() -> None:
    with _LOADED_LOCK:
        for b in _LOADED.values():
            b.close()
        _LOADED.clear()

