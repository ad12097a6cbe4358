"""Jump-forward decoding of the engine's answer schemas, shared by the in-process backends.

Every answer schema of the engine is a JSON object whose fields each take one of a fixed set of
string values. The JSON tokens the schema fixes (braces, keys, quotes, separators) are appended in
one batched evaluation per field; the model is asked only where the schema leaves a choice, and only
among the tokens that continue an allowed value (values that share a first token are resolved token
by token). The answer is the compact ``json.dumps`` form the few-shot turns use, keys in schema order.
Equivalent to grammar-constrained decoding with that formatting, at about one decode step per field.

A backend supplies three callables: ``tokenize(text) -> ids`` (no special tokens), ``feed(ids)``
(evaluate ids on top of the current state) and ``logits() -> np.ndarray`` (next-token logits).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


class DecodeTimeout(TimeoutError):
    """The deadline passed between two fields."""


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x)
    return x - np.log(np.exp(x).sum())


def choose(logits: np.ndarray, temperature: float, top_k: int, rng) -> int:
    """Greedy (temperature 0 or top_k 1), else sampled from the top_k at ``temperature``."""
    if temperature <= 0 or top_k == 1 or len(logits) == 1:
        return int(np.argmax(logits))
    lp = log_softmax(logits / temperature)
    if top_k > 0:
        lp[np.argsort(lp)[:-top_k]] = -np.inf
    p = np.exp(lp - lp.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def values_decodable(value_tokens: Sequence[Sequence[int]]) -> bool:
    """No value's tokens are a prefix of another's (else the choice is not token by token)."""
    toks = [tuple(t) for t in value_tokens]
    return all(a == b or a != b[:len(a)] for a in toks for b in toks) and len(set(toks)) == len(toks)


@dataclass
class EnumAnswer:
    text: str
    answer_tokens: int   # tokens of the answer (fixed + chosen)
    decode_steps: int    # model calls that chose a token
    #: per field, the probability of each value at the field's first choice (after ``value_bias``), given the
    #: answer decoded so far; values that share their first token share that token's probability
    field_probs: dict[str, dict[str, float]] | None = None


def decode_enum_object(fields: Sequence[tuple[str, Sequence[str]]], tokenize: Callable[[str], list[int]],
                       value_tokens: Callable[[str], list[int]], feed: Callable[[list[int]], None],
                       logits: Callable[[], np.ndarray], params: dict, deadline: float | None = None,
                       lead: Sequence[int] = ()) -> EnumAnswer:
    """Decode ``{"key": "value", ...}`` for ``fields`` = [(key, allowed values), ...] (see module docstring).

    ``lead``: prompt tokens not yet evaluated; they go into the same evaluation as the answer's first fixed
    tokens (one batch instead of two: the prompt's tail and ``{"key": "`` are evaluated together).
    ``params["value_bias"]`` ({value: b}): added to the log-probability of each value's first token at every
    field's first choice (a per-value bias fitted on validation reports, :func:`radpriv.evaluate.fit_category_bias`)."""
    temperature, top_k = float(params.get("temperature", 0.0)), int(params.get("top_k", 1))
    value_bias = {str(k): float(v) for k, v in (params.get("value_bias") or {}).items()}
    probs: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(int(params.get("seed", 0)))
    answer: dict[str, str] = {}
    pending: list[int] = list(lead)  # prompt tail, then tokens fixed by the schema, not yet evaluated
    n_lead = len(pending)
    n_answer = n_choices = 0
    for i, (key, values) in enumerate(fields):
        if deadline is not None and time.monotonic() > deadline:
            raise DecodeTimeout(f"answered {i} of {len(fields)} fields before the timeout")
        pending += tokenize(('{' if i == 0 else '", ') + json.dumps(key) + ': "')
        cands = {v: value_tokens(v) for v in values}
        depth = 0
        while len(cands) > 1:   # the model chooses among the values still possible
            feed(pending)
            n_answer += len(pending) - n_lead
            pending, n_lead = [], 0
            allowed = sorted({t[depth] for t in cands.values()})
            lg = logits()[allowed].astype(np.float64)
            if depth == 0:
                first = {v: allowed.index(t[0]) for v, t in cands.items()}
                for v, b in value_bias.items():
                    if v in first:
                        lg[first[v]] += b
                p = np.exp(log_softmax(lg))
                probs[key] = {v: float(p[j]) for v, j in first.items()}
            pick = allowed[choose(lg, temperature, top_k, rng)]
            n_choices += 1
            cands = {v: t for v, t in cands.items() if t[depth] == pick}
            pending.append(pick)
            depth += 1
        (value, vt), = cands.items()
        pending += vt[depth:]
        answer[key] = value
    pending += tokenize('"}')
    n_answer += len(pending) - n_lead  # the closing tokens are part of the answer; not evaluated
    return EnumAnswer(text=json.dumps(answer), answer_tokens=n_answer, decode_steps=n_choices, field_probs=probs)
