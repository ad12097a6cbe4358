"""A Hugging Face checkpoint on disk as an LLM backend (``radpriv models register NAME --hf DIR``).

``transformers`` loads the directory offline (``local_files_only``) after the registry has verified
its weights' sha256; the tokenizer's chat template renders the conversation (folded into the first
user turn where the template refuses a system role). Template mode uses the same jump-forward
decoding as llama.cpp (:mod:`radpriv.llm.decoding`); scoring mode reads next-token log-probabilities.
The KV cache of the longest shared prefix (instructions, few-shot turns, the report) is reused
between calls. CPU by default; ``device="cuda"`` (or ``auto``, the default) uses a GPU when present.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from radpriv.llm.backends import (Backend, BackendError, BackendTimeout, ChatTemplateMixin, Generation, Scores,
                                  enum_object_fields, register_backend)
from radpriv.llm.decoding import DecodeTimeout, decode_enum_object, log_softmax, values_decodable
from radpriv.models.registry import ModelLoadError, ModelSpec, model_path


class TransformersBackend(ChatTemplateMixin, Backend):
    name = "transformers"

    def __init__(self, spec: ModelSpec, device: str = "auto", n_ctx: int | None = None, **opts):
        super().__init__(spec, **opts)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        path = model_path(spec)  # verified (sha256 of the weights) before anything is loaded
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        try:
            self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(self.device)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelLoadError(f"model {spec.name!r}: transformers cannot load {path} ({exc}); the directory needs "
                                 "config.json, tokenizer files and weights of a causal language model") from None
        self.lm.eval()
        if not getattr(self.tok, "chat_template", None):
            raise ModelLoadError(f"model {spec.name!r}: {path} has no chat template (tokenizer_config.json "
                                 "`chat_template`); use an instruction-tuned checkpoint")
        self.n_ctx = int(n_ctx or spec.n_ctx or getattr(self.lm.config, "max_position_embeddings", 4096) or 4096)
        self.fold_system = None
        self._lock = threading.Lock()
        self._ids: list[int] = []     # tokens whose keys/values are in the cache
        self._cache = None
        self._last: np.ndarray | None = None
        self._value_tok: dict[str, list[int]] = {}

    # ---- prompts --------------------------------------------------------------------------
    def _render_raw(self, messages, add_generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        # the rendered template already holds the special tokens as text: never add another BOS
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _value_tokens(self, value: str) -> list[int]:
        if value not in self._value_tok:
            self._value_tok[value] = self.tokenize(value)
        return self._value_tok[value]

    # ---- model state ----------------------------------------------------------------------
    def _feed(self, ids: list[int]) -> None:
        if not ids:
            return
        torch = self._torch
        with torch.inference_mode():
            out = self.lm(input_ids=torch.tensor([ids], device=self.device), cache=self._cache, use_cache=True)
        self._cache = out["cache"]
        self._ids = self._ids + list(ids)
        self._last = out.logits[0, -1].float().cpu().numpy()

    def _eval_from(self, tokens: list[int]) -> int:
        """Evaluate ``tokens`` reusing the longest prefix already in the cache; returns tokens evaluated."""
        from transformers import DynamicCache

        keep = 0
        for a, b in zip(self._ids, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # at least one token evaluated: fresh logits
        if self._cache is None or keep <= 0:
            self._cache, self._ids = DynamicCache(), []
            keep = 0
        else:
            self._rewind(keep)
        self._feed(tokens[keep:])
        return len(tokens) - keep

    def _rewind(self, n: int) -> None:
        """Keep the first ``n`` tokens of the cache (transformers 5: ``crop(-k)`` drops the last k)."""
        drop = len(self._ids) - n
        if drop > 0:
            self._cache.crop(-drop)
            self._ids = self._ids[:n]

    # ---- template mode --------------------------------------------------------------------
    def generate_json(self, messages, json_schema, params, deadline=None) -> Generation:
        fields = enum_object_fields(json_schema)
        if fields is None or not all(values_decodable([self._value_tokens(v) for v in vals]) for _, vals in fields):
            raise BackendError(f"model {self.spec.name!r} (transformers): only answer schemas of enum fields are "
                               "supported (every schema of the engine is one)")
        tokens = self.tokenize(self.render(messages))
        if len(tokens) + 16 * len(fields) > self.n_ctx:
            raise BackendError(f"prompt of {len(tokens)} tokens + answer budget exceeds n_ctx={self.n_ctx}; "
                               "shorten the report")
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(tokens)
            n_prompt = len(self._ids)
            try:
                ans = decode_enum_object(fields, self.tokenize, self._value_tokens, self._feed, lambda: self._last,
                                         params, deadline)
            except DecodeTimeout as exc:
                raise BackendTimeout(str(exc)) from None
            finally:
                self._rewind(n_prompt)  # the next call reuses the prompt state, not this answer
            secs = time.perf_counter() - t0
        return Generation(text=ans.text, prompt_tokens=evaluated, prompt_tokens_total=len(tokens),
                          completion_tokens=ans.answer_tokens, seconds=secs, decode_steps=ans.decode_steps,
                          field_probs=ans.field_probs)

    # ---- scoring mode ---------------------------------------------------------------------
    def _first_tokens(self, options: Sequence[str]) -> list[int]:
        first = [self.tokenize(o)[0] for o in options]
        if len(set(first)) != len(first):
            raise BackendError(f"options {list(options)} share a first token; use distinct option words")
        return first

    def score_options(self, messages, questions, options, deadline=None) -> Scores:
        opt = self._first_tokens(options)
        out, evaluated, n_total = [], 0, 0
        with self._lock:
            t0 = time.perf_counter()
            for q in questions:
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendTimeout(f"scored {len(out)} of {len(questions)} questions before the timeout")
                tokens = self.tokenize(self.render(messages + [{"role": "user", "content": q}]))
                evaluated += self._eval_from(tokens)
                n_total = max(n_total, len(tokens))
                lp = log_softmax(self._last[opt])
                out.append({o: float(v) for o, v in zip(options, lp)})
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=n_total, seconds=secs)

    def score_continuations(self, messages, prefixes, options, deadline=None) -> Scores:
        """The findings as the start of the assistant's answer on the shared report state (see llama.cpp's)."""
        base = self.tokenize(self.render(messages))
        opt = self._first_tokens([f" {o}" for o in options])
        out = []
        with self._lock:
            t0 = time.perf_counter()
            evaluated = self._eval_from(base)
            n_base = len(self._ids)
            for prefix in prefixes:
                if deadline is not None and time.monotonic() > deadline:
                    raise BackendTimeout(f"scored {len(out)} of {len(prefixes)} questions before the timeout")
                self._rewind(n_base)
                suffix = self.tokenize(prefix)
                self._feed(suffix)
                evaluated += len(suffix)
                lp = log_softmax(self._last[opt])
                out.append({o: float(v) for o, v in zip(options, lp)})
            self._rewind(n_base)
            secs = time.perf_counter() - t0
        return Scores(logprobs=out, prompt_tokens=evaluated, prompt_tokens_total=len(base), seconds=secs)

    def close(self) -> None:
        self._cache = None


register_backend("hf", TransformersBackend)
