"""Label a report frame with a local LLM: the batch runner behind Studies 1 and 2 and ``radpriv label``.

``label_frame(frame, schema, model, mode=...)`` returns a :class:`LabelRun`:

- ``answers``   report_id + a State column per finding (or ``label``), plus probabilities in scoring
                mode (``p_present__<id>``, ``p_uncertain__<id>``, ``p_absent__<id>``; ``p__<category>``);
- ``failures``  report_id, reason, detail. Reasons: ``invalid_json`` (no valid answer after the retries),
                ``timeout``, ``too_long`` (report + prompt exceed the context), ``connection_error`` /
                ``http_error`` / ``bad_reply`` / ``redirect_refused`` (a server's transport faults),
                ``backend_error`` (any other backend failure);
- ``stats``     inputs, answers, failures, cache hits, tokens and seconds per report, model id, backend.

Inputs = answers + failures, always (asserted, and said in the log). Every answer is cached on
:func:`answer_key` (model sha256 or served-model digest, backend, the full prompt including scoring
questions and answer prefixes, option words, decoding parameters, schema, post-processing version) as
soon as it exists, so a re-run is free and an interrupted run (even ``kill -9``) resumes and ends with
identical results.

Faults of the model itself (not fetched, sha256 mismatch, unreadable file, a chat template that fails)
raise before the first report; transport faults of a server are recorded per report. The whole run is
under the network guard (:func:`radpriv.netguard.guard`) with ``allow_hosts``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from radpriv.progress import tqdm

from radpriv.llm import prompts
from radpriv.llm.backends import Backend, BackendError, BackendTimeout, get_backend
from radpriv.llm.cache import AnswerCache
from radpriv.netguard import NetworkPolicyError, check_endpoint, guard, policy_error_in
from radpriv.models.registry import ModelLoadError, ModelSpec, RegistryError, model_path, resolve_model
from radpriv.schemas import Schema, State, load_schema

log = logging.getLogger("radpriv.llm")
MODES = ("template", "scoring")
few_shot_examples = prompts.few_shot_examples
#: bump when parsing an answer or propagating it to parent findings changes (part of every cache key)
POSTPROCESS_VERSION = 2
#: top log-probabilities asked of a server in scoring mode
TOP_LOGPROBS = 20


class InvalidAnswer(ValueError):
    """The model's answer did not parse against the schema after every retry (recorded per report)."""


@dataclass
class LabelRun:
    answers: pd.DataFrame
    failures: pd.DataFrame
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        s = self.stats
        return (f"{s['n_inputs']} inputs = {s['n_answers']} answers + {s['n_failures']} failures "
                f"({s['cache_hits']} from cache) with {s['model']} [{s['backend']}, {s['mode']}]")


def build_messages(schema: Schema, mode: str, report_text: str,
                   few_shot: Sequence[tuple[str, dict]] | None = None) -> list[dict]:
    """System instructions + few-shot turns (the shared prefix) + this report."""
    msgs = [{"role": "system", "content": prompts.instructions(schema, mode)}]
    for text, answer in few_shot or ():
        msgs.append({"role": "user", "content": prompts.user_message(text)})
        if mode == "template":
            msgs.append({"role": "assistant", "content": json.dumps(answer)})
        elif schema.task == "single":
            msgs.append({"role": "assistant",
                         "content": f"Noted: {prompts.CATEGORY_LETTERS[schema.ids.index(answer['category'])]}."})
        else:  # the format scoring reads: "<label>: present|absent|uncertain", one finding per line
            msgs.append({"role": "assistant", "content": prompts.scoring_example_answer(schema, answer)})
    msgs.append({"role": "user", "content": prompts.user_message(report_text)})
    return msgs


def _answer_template(backend: Backend, schema: Schema, msgs: list[dict], params: dict, retries: int,
                     deadline: float) -> dict:
    js = prompts.answer_schema(schema)
    errors, tokens = [], {"prompt_tokens": 0, "prompt_tokens_total": 0, "completion_tokens": 0, "decode_steps": 0}
    conversation = list(msgs)
    for attempt in range(retries + 1):
        gen = backend.generate_json(conversation, js, params, deadline=deadline)
        for k in tokens:
            v = getattr(gen, k)
            tokens[k] += gen.completion_tokens if v is None else v  # decode_steps None: one per token
        try:
            labels = prompts.parse_answer(schema, json.loads(gen.text))
            probs = prompts.template_probs(schema, gen.field_probs) if gen.field_probs else {}
            return {"labels": labels, "raw": gen.text, "attempts": attempt + 1, **tokens,
                    **({"probs": probs} if probs else {})}
        except (json.JSONDecodeError, ValueError) as exc:
            errors.append(f"attempt {attempt + 1}: {exc}")
            conversation = msgs + [{"role": "assistant", "content": gen.text},
                                   {"role": "user", "content": f"That answer is invalid ({exc}). Answer again with "
                                                               "valid JSON that follows the instructions."}]
    raise InvalidAnswer("; ".join(errors))


IN_PROCESS = ("llamacpp", "transformers")


def backend_name_of(spec: ModelSpec) -> str:
    """The backend that runs a model: a server, a Hugging Face directory, or llama.cpp (GGUF)."""
    return {"openai": "openai", "hf": "transformers"}.get(spec.kind, "llamacpp")


def prefill_questions(backend: Backend | str) -> bool:
    """Multi-label scoring asks each finding as the start of the assistant's answer (a few tokens on
    the shared report state) where the backend can continue a turn: the in-process backends."""
    name = backend if isinstance(backend, str) else getattr(backend, "name", "")
    return name in IN_PROCESS


def _answer_scoring(backend: Backend, schema: Schema, msgs: list[dict], deadline: float) -> dict:
    opts = prompts.options(schema)
    asked = scoring_prompts(schema, backend.name)  # the same questions / prefixes the cache key holds
    if "answer_prefixes" in asked:
        sc = backend.score_continuations(msgs, asked["answer_prefixes"], opts, deadline=deadline)
    else:
        sc = backend.score_options(msgs, asked["questions"], opts, deadline=deadline)
    if schema.task == "single":
        probs = {cat: math.exp(sc.logprobs[0][letter]) for cat, letter in zip(schema.ids, opts)}
        labels = {"label": max(probs, key=probs.get)}
        p = {f"p__{c}": v for c, v in probs.items()}
    if schema.task != "single":
        states, p = {}, {}
        for fid, lp in zip(schema.ids, sc.logprobs):
            pr = {o: math.exp(v) for o, v in lp.items()}
            states[fid] = State(max(pr, key=pr.get))
            for o, v in pr.items():
                p[f"p_{o}__{fid}"] = v
        labels = {k: v.value for k, v in schema.propagate(states).items()}
    return {"labels": labels, "probs": p, "attempts": 1, "prompt_tokens": sc.prompt_tokens,
            "prompt_tokens_total": sc.prompt_tokens_total, "completion_tokens": 0}


def scoring_prompts(schema: Schema, backend_name: str) -> dict:
    """What scoring mode appends to the report state: the questions (or answer prefixes) and options."""
    opts = prompts.options(schema)
    if schema.task == "single":
        return {"questions": [prompts.question(schema)], "options": opts}
    if prefill_questions(backend_name):
        return {"answer_prefixes": [prompts.answer_prefix(schema, f) for f in schema.ids],
                "options": [f" {o}" for o in opts]}
    return {"questions": [prompts.question(schema, f) for f in schema.ids], "options": opts}


def answer_key(spec: ModelSpec, backend_name: str, schema: Schema, mode: str, messages: list[dict],
               params: dict, model_digest: str | None = None) -> str:
    """The answer-cache key: everything that changes an answer.

    The model (file sha256, or endpoint + served model + the server's digest of it where it reports one),
    the backend, a user's chat-format override, the full prompt (messages, and in scoring mode the
    questions or answer prefixes and the option words, plus the top-logprobs asked of a server), the
    answer schema and the label schema (its findings and parents), the decoding parameters and method,
    and the post-processing version (parsing, parent propagation)."""
    extra: dict[str, Any] = {"mode": mode, "postprocess": POSTPROCESS_VERSION,
                             "schema": schema.to_dict(), "chat_format": getattr(spec, "chat_format", None)}
    if model_digest:
        extra["served_model_digest"] = model_digest
    if mode == "scoring":
        extra["scoring"] = scoring_prompts(schema, backend_name)
        if "answer_prefixes" in extra["scoring"] and backend_name == "llamacpp":
            extra["prefix_batching"] = "parallel-sequences"  # batched kernels round differently from one by one
        if backend_name not in IN_PROCESS:
            extra["top_logprobs"] = TOP_LOGPROBS
    elif backend_name in IN_PROCESS:  # jump-forward decoding of the fixed JSON tokens
        extra["decoding"] = params.get("decoding", "jump-forward")
        # 2: the prompt's tail and the first fixed answer tokens in one batch; 3: answers record each field's
        # value probabilities (what template calibration fits on)
        extra["decoding_version"] = 3
    return AnswerCache.key(spec.model_id, backend_name, messages, prompts.answer_schema(schema),
                           {**params, **extra})


def _model_fault(spec: ModelSpec, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(f"model {spec.name!r} cannot answer: {exc}. Check the file "
                          f"(`radpriv models path {spec.name} --full`), or register it again with a working "
                          "--chat-format; nothing was labelled")


def label_frame(frame: pd.DataFrame, schema: Schema | str, model: str | ModelSpec, mode: str = "template",
                cache: AnswerCache | bool | None = None, timeout: float = 120.0, retries: int = 2,
                concurrency: int = 1, allow_hosts: Sequence[str] = (), few_shot=None, params: dict | None = None,
                progress: bool = True, limit: int | None = None, backend_opts: dict | None = None) -> LabelRun:
    """Label every report of ``frame`` (columns report_id, text) with ``model``. See the module docstring.

    ``few_shot``: None (zero-shot), a list of (report text, JSON answer) pairs shown before every report, or a
    retriever (:class:`radpriv.llm.retrieval.ExampleRetriever`) that gives each report its own examples.

    Runs under the network guard: only loopback, plus ``allow_hosts`` / ``$RADPRIV_ALLOW_HOSTS`` by name."""
    allow_hosts = tuple([allow_hosts] if isinstance(allow_hosts, str) else (allow_hosts or ()))
    with guard(allow_hosts):
        return _label_frame(frame, schema, model, mode, cache, timeout, retries, concurrency, allow_hosts, few_shot,
                            params, progress, limit, backend_opts)


class NoProbabilities(ValueError):
    """Scoring answers without category probabilities (a server that reports no log-probabilities)."""


def label_frame_orders(frame: pd.DataFrame, schema: Schema | str, model: str | ModelSpec, orders: int = 3,
                       **kwargs) -> LabelRun:
    """Single-label scoring averaged over ``orders`` orders of the categories (:func:`prompts.option_orders`):
    each order lists the categories under other letters, so a model's preference for a letter or a position
    is spread over different categories. Per report the category probabilities of the orders are averaged
    (geometric mean, renormalised; ``p__<category>`` columns) and the label is the most probable category.
    Costs ``orders`` scoring runs (each cached on its own prompt). A report that fails in any order is a
    failure (with that order's reason); ``stats`` add the orders' seconds per report. ``kwargs``: as
    :func:`label_frame` (mode is scoring)."""
    schema = schema if isinstance(schema, Schema) else load_schema(schema)
    if schema.task != "single":
        raise ValueError(f"option orders average single-label scoring; {schema.name} is multi-label")
    if kwargs.pop("mode", "scoring") != "scoring":
        raise ValueError("option orders average scoring mode (the letters' probabilities); use mode='scoring'")
    ids, runs = list(schema.ids), []
    for o in prompts.option_orders(len(ids), int(orders)):
        runs.append(label_frame(frame, replace(schema, findings=tuple(schema.findings[i] for i in o)), model,
                                mode="scoring", **kwargs))
    cols = [f"p__{c}" for c in ids]
    for r in runs:
        if not set(cols) <= set(r.answers.columns):
            raise NoProbabilities(f"{r.stats['model']}: option orders need the categories' probabilities and this "
                                  f"backend gives none ({r.stats.get('mode_fallback') or 'no p__ columns'}); "
                                  "use template mode, or a backend that reports log-probabilities")
    fail = pd.concat([r.failures for r in runs], ignore_index=True).drop_duplicates("report_id")
    failed = set(fail["report_id"].astype(str))
    keep = [rid for rid in frame["report_id"].astype(str) if rid not in failed]
    logp = sum(np.log(np.clip(r.answers.assign(report_id=r.answers["report_id"].astype(str)).set_index("report_id")
                              .loc[keep, cols].to_numpy(float), 1e-12, 1.0)) for r in runs) / len(runs)
    p = np.exp(logp - logp.max(axis=1, keepdims=True))  # (no rows left: shape (0, n) throughout)
    p = p / p.sum(axis=1, keepdims=True)
    answers = pd.DataFrame(p, columns=cols).assign(report_id=keep, label=[ids[j] for j in p.argmax(axis=1)])
    stats = {**runs[0].stats, "option_orders": len(runs), "n_answers": len(answers), "n_failures": len(fail),
             "seconds_per_report": round(sum(r.stats["seconds_per_report"] for r in runs), 3),
             "cache_hits": sum(r.stats["cache_hits"] for r in runs),
             **{k: round(sum(r.stats[k] for r in runs), 1) for k in ("prompt_tokens_per_report",
                                                                       "prompt_tokens_total_per_report")},
             "failure_reasons": fail["reason"].value_counts().to_dict()}
    return LabelRun(answers[["report_id", "label", *cols]], fail.reset_index(drop=True), stats)


def _label_frame(frame, schema, model, mode, cache, timeout, retries, concurrency, allow_hosts, few_shot, params,
                 progress, limit, backend_opts) -> LabelRun:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    schema = schema if isinstance(schema, Schema) else load_schema(schema)
    spec = resolve_model(model)
    if spec.kind == "openai":
        check_endpoint(spec.endpoint, allow_hosts)  # refuse before any report is read
    else:
        model_path(spec, progress=False)  # not fetched / sha256 mismatch: raise before the first report
    params = {"temperature": 0.0, "top_k": 1, "seed": 0, "max_tokens": 24 + 12 * len(schema.ids), **(params or {})}
    # (the prompt and the answer columns follow `mode`, which a server without log-probabilities changes)
    if cache is None or cache is True:
        cache = AnswerCache()
    use_cache = isinstance(cache, AnswerCache)  # (an empty cache is falsy: never test it with `if cache`)
    rows = frame if limit is None else frame.head(int(limit))
    backend_name = backend_name_of(spec)
    backend: Backend | None = None

    def get_b() -> Backend:
        nonlocal backend
        if backend is None:
            opts = dict(backend_opts or {})
            if spec.kind == "openai":
                opts["allow_hosts"] = allow_hosts
            try:
                backend = get_backend(spec, **opts)
            except (RegistryError, ModelLoadError, NetworkPolicyError, ValueError):
                raise  # (a ValueError here: an endpoint with credentials, a bad option)
            except Exception as exc:  # an unreadable file, a missing chat template, ...
                raise _model_fault(spec, exc) from exc
        return backend

    items = list(zip(rows["report_id"].astype(str), rows["text"].astype(str)))
    digest, fallback = None, None
    if spec.kind == "openai" and items:
        digest = get_b().served_model_digest()
        if mode == "scoring" and not get_b().supports_logprobs():
            fallback = (f"{spec.name}: the server returns no log-probabilities, so scoring mode fell back to "
                        "template mode (the model writes the JSON answer)")
            log.warning(fallback)
            print(f"note: {fallback}")  # said once, in the notebook and on the terminal
            mode = "template"
    per_report = hasattr(few_shot, "examples_for")
    if per_report:  # retrieved examples (llm.retrieval.ExampleRetriever): one set per report
        shots = few_shot.examples_for([t for _, t in items])
        messages = {rid: build_messages(schema, mode, text, ex) for (rid, text), ex in zip(items, shots)}
    else:
        messages = {rid: build_messages(schema, mode, text, few_shot) for rid, text in items}
    keys = {rid: answer_key(spec, backend_name, schema, mode, messages[rid], params, digest)
            for rid, _ in items} if use_cache else {}
    cached = {rid: cache.get(k) for rid, k in keys.items()} if use_cache else {}  # one look-up per report
    todo = [rid for rid, _ in items if cached.get(rid) is None]
    if todo:  # the model must load and its chat template must render before the first report is labelled
        try:
            get_b().check_messages(messages[todo[0]])
        except (RegistryError, ModelLoadError):
            raise
        except Exception as exc:
            raise _model_fault(spec, exc) from exc
    answers: dict[str, dict] = {}
    failures: list[dict] = []
    hits = 0
    t_start = time.perf_counter()

    def work(item: tuple[str, str]) -> tuple[str, dict | None, dict | None, bool]:
        rid, _text = item
        msgs = messages[rid]
        key = keys.get(rid)
        if cached.get(rid) is not None:
            return rid, cached[rid], None, True
        deadline = time.monotonic() + timeout
        try:
            b = get_b()
            res = (_answer_template(b, schema, msgs, params, retries, deadline) if mode == "template"
                   else _answer_scoring(b, schema, msgs, deadline))
        except (NetworkPolicyError, RegistryError, ModelLoadError):
            raise
        except InvalidAnswer as exc:
            return rid, None, {"reason": "invalid_json", "detail": f"after {retries + 1} attempts: {exc}"}, False
        except BackendTimeout as exc:
            return rid, None, {"reason": "timeout", "detail": str(exc)}, False
        except BackendError as exc:
            policy = policy_error_in(exc)
            if policy is not None:
                raise policy from exc
            reason = "too_long" if "exceeds n_ctx" in str(exc) else getattr(exc, "reason", "backend_error")
            return rid, None, {"reason": reason, "detail": str(exc)}, False
        res["seconds"] = round(time.perf_counter() - (deadline - timeout), 4)
        if use_cache:
            cache.put(key, res, model_id=spec.model_id, backend=backend_name)
        return rid, res, None, False

    bar = tqdm(total=len(items), disable=not progress, desc=f"{spec.name} ({mode})", unit="report")
    try:
        if concurrency > 1:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                results = pool.map(work, items)
                for out in results:
                    rid, res, fail, hit = out
                    _collect(rid, res, fail, hit, answers, failures, bar)
                    hits += hit
        else:
            for item in items:
                rid, res, fail, hit = work(item)
                _collect(rid, res, fail, hit, answers, failures, bar)
                hits += hit
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    n = len(items)
    assert n == len(answers) + len(failures), "every input must end as an answer or a recorded failure"
    recs = []
    for rid, _ in items:
        if rid in answers:
            a = answers[rid]
            recs.append({"report_id": rid, **a["labels"], **a.get("probs", {})})
    label_cols = ["label"] if schema.task == "single" else list(schema.ids)
    if schema.task == "single":
        prob_cols = [f"p__{c}" for c in schema.ids]
    else:
        prob_cols = [f"p_{o}__{f}" for f in schema.ids for o in prompts.SCORING_OPTIONS]
    # template answers decoded in process also carry each field's value probabilities (jump-forward decoding)
    with_probs = mode == "scoring" or any("probs" in a for a in answers.values())
    cols = ["report_id", *label_cols] + (prob_cols if with_probs else [])
    ans_df = pd.DataFrame(recs, columns=cols)
    fail_df = pd.DataFrame(failures, columns=["report_id", "reason", "detail"])
    tok = lambda k: sum(a.get(k, 0) for a in answers.values())  # noqa: E731
    stats = {
        "model": spec.name, "model_id": spec.model_id, "backend": backend_name, "mode": mode,
        "served_model_digest": digest, "mode_fallback": fallback,
        "n_inputs": n, "n_answers": len(answers), "n_failures": len(failures), "cache_hits": hits,
        "seconds": round(seconds, 2),
        "seconds_per_report": round(sum(a.get("seconds", 0) for a in answers.values()) / max(len(answers), 1), 3),
        "prompt_tokens_per_report": round(tok("prompt_tokens") / max(len(answers), 1), 1),
        "prompt_tokens_total_per_report": round(tok("prompt_tokens_total") / max(len(answers), 1), 1),
        "completion_tokens_per_report": round(tok("completion_tokens") / max(len(answers), 1), 1),
        "decode_steps_per_report": round(tok("decode_steps") / max(len(answers), 1), 1),
        "newly_computed": len(answers) - hits,
        "failure_reasons": fail_df["reason"].value_counts().to_dict(),
        "params": params,
        "shots": few_shot.describe() if per_report else {"shots": f"{len(few_shot)} fixed" if few_shot else "zero-shot"},
    }
    run = LabelRun(ans_df, fail_df, stats)
    log.info(run.summary())
    return run


def _collect(rid, res, fail, hit, answers, failures, bar) -> None:
    if res is not None:
        answers[rid] = {**res, "_hit": hit}
    else:
        failures.append({"report_id": rid, **fail})
    bar.update(1)
    bar.set_postfix(failures=len(failures), refresh=False)


def as_dict(run: LabelRun) -> dict[str, Any]:
    return {"stats": run.stats, "answers": run.answers.to_dict("records"), "failures": run.failures.to_dict("records")}
