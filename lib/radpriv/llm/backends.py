"""LLM backends: a small abstract interface and a registry (after opacus's accountant registry).

- ``llamacpp``  in-process llama.cpp (``llama-cpp-python``): answers of enum fields (every engine
  schema) by jump-forward decoding, any other JSON schema by a grammar compiled from it; the shared prefix (instructions, template, few-shot turns) stays in the KV
  cache and is evaluated once; scoring mode reads next-token log-probabilities on a saved state.
- ``openai``    any OpenAI-compatible chat-completions server (Ollama /v1, vLLM, llama.cpp server,
  LM Studio): structured output where the server has it, then the engine parses and checks the answer; scoring mode via
  ``logprobs``/``top_logprobs``. Every URL passes the network guard first.

Create one with :func:`create_backend(spec)`; register another with :func:`register_backend`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from radpriv.llm.decoding import DecodeTimeout, decode_enum_object, log_softmax, values_decodable

# the exceptions live in radpriv.llm.errors (no import cycle with radpriv.llm.http); re-exported here
from radpriv.llm.errors import BackendError, BackendTimeout, TransportError  # noqa: F401
from radpriv.llm.http import JSONClient, refuse_url_credentials
from radpriv.netguard import check_endpoint
from radpriv.models.registry import ModelLoadError, ModelSpec, model_path


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0          # prompt tokens evaluated for this answer (after prefix reuse)
    prompt_tokens_total: int = 0    # tokens of the whole prompt
    completion_tokens: int = 0
    seconds: float = 0.0
    decode_steps: int | None = None  # model calls that chose a token (jump-forward); None: one per completion token
    field_probs: dict | None = None  # jump-forward only: per field, each value's probability at its choice


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

    def check_messages(self, messages: list[dict]) -> None:
        """Raise before the first report if this conversation cannot be sent (in-process: the template)."""

    def served_model_digest(self) -> str | None:
        """A digest of the served model where a server reports one (cache key); None for local files."""
        return None

    def supports_logprobs(self) -> bool:
        """Whether scoring mode can read next-token log-probabilities from this backend."""
        return True

    def close(self) -> None:
        pass


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(kind: str, cls: type[Backend]) -> None:
    _BACKENDS[kind] = cls


def create_backend(spec: ModelSpec, **opts) -> Backend:
    kind = "openai" if spec.kind == "openai" else spec.kind
    if kind == "hf" and "hf" not in _BACKENDS:
        import radpriv.llm.hf_backend  # noqa: F401  (registers itself; imports torch + transformers)
    try:
        cls = _BACKENDS[kind]
    except KeyError:
        raise BackendError(f"no backend for model kind {spec.kind!r} (known: {', '.join(_BACKENDS)})") from None
    return cls(spec, **opts)


def fold_system_turn(messages: list[dict]) -> list[dict]:
    """The same chat for templates without a system role or with strict user/assistant alternation:
    the system text becomes the start of the first user turn, and consecutive turns of one role merge."""
    out: list[dict] = []
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    for m in messages:
        if m["role"] == "system":
            continue
        content = m["content"]
        if system and m["role"] == "user" and not any(o["role"] == "user" for o in out):
            content = f"{system}\n\n{content}"
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": f"{out[-1]['content']}\n\n{content}"}
        else:
            out.append({"role": m["role"], "content": content})
    return out


# ---------------------------------------------------------------------------------------------
# llama.cpp in process
# ---------------------------------------------------------------------------------------------
class ChatTemplateMixin:
    """Rendering a chat with the model's own template, for the in-process backends (which define
    ``_render_raw(messages, add_generation_prompt)`` and ``spec``)."""

    #: the template refuses a system turn or needs strict user/assistant alternation: fold the
    #: instructions into the first user turn and merge consecutive user turns (decided on first render)
    fold_system: bool | None = None

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text of a chat. A template that refuses the system turn (or requires strict
        alternation) gets the instructions folded into the first user turn (:func:`fold_system_turn`)."""
        if self.fold_system is None:
            try:
                out = self._render_raw(messages, add_generation_prompt)
                self.fold_system = False
                return out
            except Exception as first:
                try:
                    out = self._render_raw(fold_system_turn(messages), add_generation_prompt)
                except Exception:
                    raise ModelLoadError(f"model {self.spec.name!r}: its chat template fails on this conversation "
                                         f"({type(first).__name__}: {first}); register the model again with a "
                                         "working chat format (--chat-format for GGUF files)") from None
                self.fold_system = True
                return out
        return self._render_raw(fold_system_turn(messages) if self.fold_system else messages, add_generation_prompt)

    def check_messages(self, messages: list[dict]) -> None:
        """Render a conversation once before the first report: a failing template is a model fault."""
        self.render(messages)


class LlamaCppBackend(ChatTemplateMixin, Backend):
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
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=int(n_ctx or spec.n_ctx or 4096),
                                       n_threads=n_threads or max(1, (os.cpu_count() or 2)),
                                       n_gpu_layers=n_gpu_layers, seed=seed, logits_all=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"model {spec.name!r}: llama.cpp cannot load {path} ({exc}); the file is not a "
                                 "readable GGUF model: fetch it again or register a working file") from None
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        eos = self.llm.detokenize([self.llm.token_eos()]).decode("utf-8", "ignore")
        bos = self.llm.detokenize([self.llm.token_bos()]).decode("utf-8", "ignore") if self.llm.token_bos() >= 0 else ""
        self._format = None      # a named llama.cpp chat format (registration's chat_format), else the template
        if spec.chat_format:
            from llama_cpp import llama_chat_format

            name = str(spec.chat_format).lower()
            found = [getattr(llama_chat_format, f"format_{n}") for n in (name.replace("-", "_"), name.replace("-", ""))
                     if hasattr(llama_chat_format, f"format_{n}")]
            if not found:
                known = sorted(n[len("format_"):] for n in dir(llama_chat_format) if n.startswith("format_"))
                raise ModelLoadError(f"model {spec.name!r}: unknown chat_format {spec.chat_format!r} (llama.cpp knows "
                                     f"{', '.join(known)}); register it again with one of those, or without "
                                     "--chat-format to use the GGUF's own template")
            self._format = found[0]
        elif not template:
            raise ModelLoadError(f"model {spec.name!r}: {path} has no chat template; register the model with "
                                 "--chat-format NAME (e.g. chatml, llama-3, gemma)")
        else:
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            self._formatter_open = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                                       add_generation_prompt=False)
        self.fold_system = None
        self.parallel_prefixes = self._enable_sequences()
        self._lock = threading.Lock()  # one llama context: calls are serialised
        self._grammars: dict[str, object] = {}
        self._option_tokens: dict[tuple, list[int]] = {}

    #: parallel sequences of the context: scoring-mode answer prefixes evaluated in one batch (seq 0 is the report)
    N_SEQ = 32

    def _enable_sequences(self) -> bool:
        """Re-create the llama.cpp context with ``N_SEQ`` sequences over one unified KV cache (llama-cpp-python's
        ``Llama`` makes one sequence), so scoring mode can evaluate every finding's answer prefix on top of the
        shared report state in one batch. Single-sequence results are unchanged; False (sequential scoring)
        where the build does not allow it."""
        import llama_cpp._internals as internals

        llm = self.llm
        try:
            params = llm.context_params
            params.n_seq_max, params.kv_unified = self.N_SEQ, True
            ctx = internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except (AttributeError, ValueError, RuntimeError):
            return False
        old, llm._ctx = llm._ctx, ctx
        old.close()
        return True

    # ---- helpers --------------------------------------------------------------------------
    def _render_raw(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if self._format is not None:  # llama.cpp's named formats always end with the assistant's turn opened
            return self._format(messages=messages).prompt
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
                and all(values_decodable([self._value_tokens(x) for x in v]) for _, v in fields)):
            return self._generate_enum_object(messages, fields, params, deadline)
        return self._generate_grammar(messages, json_schema, params, deadline)

    def _generate_enum_object(self, messages, fields, params, deadline=None) -> Generation:
        """Schema-enforced JSON for an object of enum-valued fields (every answer schema of the
        engine), by jump-forward decoding (:func:`radpriv.llm.decoding.decode_enum_object`)."""
        tokens = self.tokenize(self.render(messages))
        answer_budget = sum(len(self.tokenize(json.dumps({k: max(v, key=len)}), special=False)) for k, v in fields)
        if len(tokens) + answer_budget + 8 > self.llm.n_ctx():
            raise BackendError(f"prompt of {len(tokens)} tokens + answer budget exceeds n_ctx={self.llm.n_ctx()}; "
                               "raise n_ctx or shorten the report")
        with self._lock:
            t0 = time.perf_counter()
            # the prompt's tail (after the longest prefix already in the KV cache) is evaluated in one batch with
            # the answer's first fixed tokens; at least one prompt token is, so the logits are this prompt's
            keep = min(self.llm.longest_token_prefix(self.llm._input_ids.tolist(), tokens), len(tokens) - 1)
            self.llm.n_tokens = keep
            evaluated, n_prompt = len(tokens) - keep, len(tokens)
            try:
                ans = decode_enum_object(fields, lambda t: self.tokenize(t, special=False), self._value_tokens,
                                         self.llm.eval, self._last_logits, params, deadline, lead=tokens[keep:])
            except DecodeTimeout as exc:
                raise BackendTimeout(str(exc)) from None
            finally:  # the next call reuses the prompt state (if it was evaluated), not this answer
                self.llm.n_tokens = n_prompt if self.llm.n_tokens >= n_prompt else keep
            secs = time.perf_counter() - t0
        return Generation(text=ans.text, prompt_tokens=evaluated, prompt_tokens_total=len(tokens),
                          completion_tokens=ans.answer_tokens, seconds=secs, decode_steps=ans.decode_steps,
                          field_probs=ans.field_probs)

    def _value_tokens(self, value: str) -> list[int]:
        key = ("value", value)
        if key not in self._option_tokens:
            self._option_tokens[key] = self.tokenize(value, special=False)
        return self._option_tokens[key]

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
        """Each question as a user turn after ``messages``; the report's tokens stay in the KV cache and
        only the tokens after the longest shared prefix are evaluated for each question."""
        opt_tok = self._options_first_tokens(options)
        prompts = [self.tokenize(self.render(messages + [{"role": "user", "content": q}])) for q in questions]
        for tokens in prompts:
            if len(tokens) + 1 > self.llm.n_ctx():
                raise BackendError(f"prompt of {len(tokens)} tokens exceeds n_ctx={self.llm.n_ctx()}; "
                                   "raise n_ctx or shorten the report")
        with self._lock:
            t0 = time.perf_counter()
            out, evaluated = self._score_each(prompts, self._eval_from, opt_tok, options, deadline)
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=max(map(len, prompts), default=0),
                      seconds=secs)

    def _score_each(self, token_lists, evaluate, opt_tok: list[int], options: Sequence[str],
                    deadline: float | None) -> tuple[list[dict[str, float]], int]:
        """The one scoring loop: for each token list, ``evaluate(tokens)`` (returns the tokens it evaluated),
        then the log-probabilities of the options' first tokens at the last position."""
        out: list[dict[str, float]] = []
        evaluated = 0
        for tokens in token_lists:
            if deadline is not None and time.monotonic() > deadline:
                raise BackendTimeout(f"scored {len(out)} of {len(token_lists)} questions before the timeout")
            evaluated += evaluate(tokens)
            lp = log_softmax(self._last_logits()[opt_tok])
            out.append({o: float(v) for o, v in zip(options, lp)})
        return out, evaluated

    def score_continuations(self, messages, prefixes, options, deadline=None) -> Scores:
        """Scoring with the questions in the assistant's voice: the report state ends with the
        assistant's turn opened; for each prefix (e.g. ``"Cardiomegaly:"``) the option words, each
        with a leading space, are scored as the next token. Only the prefix tokens (a few per
        finding) are evaluated on top of the shared report state, instead of a whole chat turn."""
        base_tokens = self.tokenize(self.render(messages, add_generation_prompt=True))
        opt_tok = self._options_first_tokens([f" {o}" for o in options])
        suffixes = [self.tokenize(prefix, special=False) for prefix in prefixes]
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(base_tokens)
            n_base = self.llm.n_tokens
            if self.parallel_prefixes:
                out = [{o: float(v) for o, v in zip(options, lp)}
                       for lp in self._score_prefixes_parallel(n_base, suffixes, opt_tok, deadline)]
                evaluated += sum(map(len, suffixes))
            else:
                def after_report(suffix: list[int]) -> int:
                    self.llm.n_tokens = n_base  # rewind to the report state (KV beyond is dropped by eval)
                    self.llm.eval(suffix)
                    return len(suffix)

                out, n = self._score_each(suffixes, after_report, opt_tok, options, deadline)
                evaluated += n
            self.llm.n_tokens = n_base
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=len(base_tokens), seconds=secs)

    def _score_prefixes_parallel(self, n_base: int, suffixes: list[list[int]], opt_tok: list[int],
                                 deadline: float | None) -> list[np.ndarray]:
        """Log-probabilities of ``opt_tok`` after each suffix, every suffix on top of the report state (sequence
        0, ``n_base`` tokens): each suffix gets its own sequence sharing the report's KV cells (no copy of the
        report is evaluated), and as many suffixes as fit in one llama.cpp batch are evaluated together. Equal
        to evaluating them one after the other up to the rounding of llama.cpp's batched kernels."""
        import llama_cpp

        llm, ctx = self.llm, self.llm._ctx
        batch = llm._batch.batch
        n_vocab = llm.n_vocab()
        out: list[np.ndarray] = []
        i = 0
        while i < len(suffixes):
            if deadline is not None and time.monotonic() > deadline:
                raise BackendTimeout(f"scored {len(out)} of {len(suffixes)} questions before the timeout")
            chunk, n = [], 0
            while i < len(suffixes) and len(chunk) < self.N_SEQ - 1 and n + len(suffixes[i]) <= llm.n_batch:
                chunk.append(suffixes[i])
                n += len(suffixes[i])
                i += 1
            if not chunk:
                raise BackendError(f"an answer prefix of {len(suffixes[i])} tokens exceeds the batch of {llm.n_batch}")
            last, j = [], 0
            for seq, suffix in enumerate(chunk, start=1):
                llama_cpp.llama_memory_seq_cp(ctx.memory, 0, seq, -1, -1)  # shares the report's cells
                for pos, tok in enumerate(suffix):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j] = tok, n_base + pos, 1
                    batch.seq_id[j][0], batch.logits[j] = seq, pos == len(suffix) - 1
                    j += 1
                last.append(j - 1)
            batch.n_tokens = j
            try:
                ctx.decode(llm._batch)
                for idx in last:
                    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, idx), shape=(n_vocab,))
                    out.append(log_softmax(row[opt_tok].copy()))
            finally:
                for seq in range(1, len(chunk) + 1):
                    llama_cpp.llama_memory_seq_rm(ctx.memory, seq, -1, -1)
        return out

    def close(self) -> None:
        self.llm.close()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP
# ---------------------------------------------------------------------------------------------
class OpenAIBackend(Backend):
    """Chat completions over HTTP. ``structured``: json_schema (vLLM, LM Studio, Ollama), json_object
    (llama.cpp's Python server: ``{"type": "json_object", "schema": ...}``) or none; ``auto`` tries
    them in that order, moving on only when the server rejects the format (HTTP 400/404/415/422).

    Every request goes through :class:`radpriv.llm.http.JSONClient` (one per backend, connections
    reused, thread-safe): the URL passes the network policy, proxy variables and ``.netrc`` are
    ignored, redirects are refused, and the per-report ``deadline`` bounds the whole exchange.
    ``proxy``: an explicit proxy URL (loopback or opted in by name), the only way a proxy is used.
    Faults raise :class:`TransportError` (``reason`` connection_error / http_error / bad_reply /
    redirect_refused) or :class:`BackendTimeout`.
    """

    name = "openai"
    #: HTTP statuses with which a server rejects a ``response_format`` it does not support
    FORMAT_REJECTED = frozenset({400, 404, 415, 422})

    def __init__(self, spec: ModelSpec, allow_hosts: Sequence[str] = (), structured: str = "auto",
                 request_timeout: float = 600.0, proxy: str | None = None, **opts):
        super().__init__(spec, **opts)
        self.base = str(spec.endpoint).rstrip("/")
        refuse_url_credentials(self.base)
        check_endpoint(self.base, allow_hosts)
        self.allow_hosts = tuple(allow_hosts)
        self.structured = structured
        self.request_timeout = request_timeout
        self.api_key = os.environ.get(spec.api_key_env or "", "") if spec.api_key_env else ""
        self._http = JSONClient(allow_hosts=self.allow_hosts, proxy=proxy, timeout=request_timeout,
                                headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else None)

    def _post(self, path: str, body: dict, deadline: float | None) -> dict:
        return self._http.post_json(f"{self.base}{path}", body, deadline)

    def _formats(self, json_schema: dict) -> list[dict | None]:
        js = {"type": "json_schema", "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        jo = {"type": "json_object", "schema": json_schema}
        order = {"json_schema": [js], "json_object": [jo], "none": [None]}.get(self.structured, [js, jo, None])
        return order

    def generate_json(self, messages, json_schema, params, deadline=None) -> Generation:
        last: TransportError | None = None
        url = f"{self.base}/chat/completions"
        for fmt in self._formats(json_schema):
            body = {"model": self.spec.served_model, "messages": messages, "temperature": params.get("temperature", 0.0),
                    "max_tokens": params.get("max_tokens", 512), "seed": params.get("seed", 0)}
            if fmt is not None:
                body["response_format"] = fmt
            t0 = time.perf_counter()
            try:
                out = self._post("/chat/completions", body, deadline)
            except TransportError as exc:  # the server does not know this response_format: try the next
                # llama.cpp's Python server answers an unknown response_format with a 500 validation error
                rejected = exc.status in self.FORMAT_REJECTED or (exc.status == 500 and "response_format" in str(exc))
                if exc.reason != "http_error" or not rejected or self.structured != "auto":
                    raise
                last = exc
                continue
            self.structured = "json_schema" if fmt and fmt["type"] == "json_schema" else (
                "json_object" if fmt else "none")
            try:
                text = out["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise TransportError(f"POST {url}: the reply has no choices[0].message.content (not a chat completion): "
                                     f"{' '.join(str(out).split())[:300]}", "bad_reply", url=url) from None
            if not isinstance(text, str):
                raise TransportError(f"POST {url}: choices[0].message.content is not text: {str(text)[:200]}",
                                     "bad_reply", url=url)
            usage = out.get("usage") or {}
            return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              prompt_tokens_total=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              seconds=time.perf_counter() - t0)
        raise TransportError(f"the server accepted no structured-output format: {last}", "http_error",
                             url=url, status=last.status if last is not None else None)

    def score_options(self, messages, questions, options, deadline=None) -> Scores:
        out, t0, ptok = [], time.perf_counter(), 0
        for q in questions:
            body = {"model": self.spec.served_model, "messages": messages + [{"role": "user", "content": q}],
                    "temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 20}
            reply = self._post("/chat/completions", body, deadline)
            if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list) or not reply["choices"]:
                raise TransportError(f"POST {self.base}/chat/completions: the reply has no choices: "
                                     f"{' '.join(str(reply).split())[:300]}", "bad_reply",
                                     url=f"{self.base}/chat/completions")
            try:
                top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise NoLogprobs("the server returned no top_logprobs; scoring mode needs a server with logprobs "
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
            out.append({o: float(v) for o, v in zip(options, log_softmax(vals))})
            ptok += int((reply.get("usage") or {}).get("prompt_tokens", 0))
        return Scores(logprobs=out, prompt_tokens=ptok, prompt_tokens_total=ptok, seconds=time.perf_counter() - t0)

    def supports_logprobs(self, timeout: float = 30.0) -> bool:
        """Whether the server returns next-token log-probabilities (scoring mode needs them). Asked once with
        a content-free question (no report text). A transport fault answers True: the reports will say."""
        body = {"model": self.spec.served_model, "messages": [{"role": "user", "content": "Answer A or B."}],
                "temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}
        try:
            reply = self._post("/chat/completions", body, time.monotonic() + timeout)
            return bool(reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"])
        except BackendError:
            return True
        except (KeyError, IndexError, TypeError):
            return False

    #: fields of a /v1/models entry that change from call to call (vLLM, llama.cpp's server), not the model
    _VOLATILE_MODEL_FIELDS = frozenset({"created", "permission", "permissions"})

    def served_model_digest(self, timeout: float = 5.0) -> str | None:
        """A digest of the model the server serves as ``served_model``, where the server reports one;
        else None. Never raises: a fault, a 404 or an unknown model gives None.

        * **Ollama** (endpoint ``{root}/v1``): ``GET {root}/api/tags`` lists ``models[*]`` with
          ``name`` / ``model`` and ``digest``; the entry matching ``served_model`` (or
          ``served_model + ":latest"``) gives its ``digest`` as reported (a hex sha256 of the manifest).
          (``/api/show`` has no top-level digest, so it is not used.) An empty digest (llama.cpp's
          server answers /api/tags with ``digest: ""``) falls through to the next probe.
        * **OpenAI-style servers** (vLLM, llama.cpp's server, LM Studio): ``GET {base}/models``; for
          the entry whose ``id == served_model``, ``"sha256:" +`` the sha256 of its canonical JSON
          (``sort_keys``, compact), leaving out fields that change per call (``created``,
          ``permission(s)``). llama.cpp's server lists the model file path as ``id`` (and size/params
          under ``meta``), so a different file gives a different digest; a server that reports only
          the name gives a digest that changes only with what it reports.

        Each probe waits at most ``timeout`` seconds; every call probes again (backends are shared
        per process and the server may swap the model between runs: call once per run, not per
        report). The engine puts it in the answer-cache key, so answers from a different model
        behind the same name are not reused.
        """
        served = str(self.spec.served_model)
        names = {served, served if ":" in served else f"{served}:latest"}

        def fetch(url: str):
            try:
                return self._http.get_json(url, deadline=time.monotonic() + timeout)
            except Exception:  # noqa: BLE001 - a probe: any fault means "no digest here"
                return None

        if self.base.endswith("/v1"):
            tags = fetch(f"{self.base[:-3]}/api/tags")
            models = tags.get("models") if isinstance(tags, dict) else None
            for entry in models if isinstance(models, list) else ():
                if (isinstance(entry, dict) and {entry.get("name"), entry.get("model")} & names
                        and isinstance(entry.get("digest"), str) and entry["digest"].strip()):
                    return entry["digest"].strip()
        listing = fetch(f"{self.base}/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        for entry in data if isinstance(data, list) else ():
            if isinstance(entry, dict) and entry.get("id") == served:
                stable = {k: v for k, v in entry.items() if k not in self._VOLATILE_MODEL_FIELDS}
                try:
                    canon = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
                except (TypeError, ValueError):
                    return None
                return "sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()
        return None

    def close(self) -> None:
        self._http.close()


class NoLogprobs(BackendError):
    """A server that returns no log-probabilities (scoring mode falls back to template mode)."""

    reason = "no_logprobs"


register_backend("gguf", LlamaCppBackend)
register_backend("openai", OpenAIBackend)


_LOADED: dict[tuple, Backend] = {}
_LOADED_LOCK = threading.Lock()


def get_backend(spec: ModelSpec, **opts) -> Backend:
    """A shared backend per (model, options): loading a model once per process, not per call."""
    # everything that changes how the model answers: the same file with another chat format is another backend
    key = (spec.model_id, spec.kind, spec.chat_format, spec.n_ctx, spec.endpoint, spec.served_model,
           json.dumps(opts, sort_keys=True, default=str))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = create_backend(spec, **opts)
        return _LOADED[key]


def unload(*backends: Backend) -> None:
    """Close these shared backends and forget them: the next :func:`get_backend` loads the model again."""
    with _LOADED_LOCK:
        for key in [k for k, v in _LOADED.items() if any(v is b for b in backends)]:
            _LOADED.pop(key).close()


def unload_all() -> None:
    """Close every shared backend of this process."""
    with _LOADED_LOCK:
        for b in _LOADED.values():
            b.close()
        _LOADED.clear()

