"""LLM engine throughput vs a naive loop of per-report chat completions, side by side in one run.

For each model, on the same synthetic reports and with the same settings (threads, context, greedy
decoding, answer schema), three labelers run **interleaved in rounds** (the report list is cut into
``--rounds`` chunks; each chunk goes through every labeler, in a rotating order) so that load from
other processes hits all of them alike:

- ``naive``     a fresh llama.cpp state per report (``Llama.reset()``), one
                ``create_chat_completion`` with the template-mode messages and the answer schema as a
                grammar (``response_format={"type": "json_object", "schema": ...}``): no prefix reuse;
- ``template``  ``label_frame(mode="template")``: schema-enforced JSON by jump-forward decoding (the
                tokens the schema fixes are evaluated in one batch per field; the model is asked only
                for each value), shared prefix kept in the KV cache;
- ``scoring``   ``label_frame(mode="scoring")``: report evaluated once, one short question per finding,
                answer read from next-token log-probabilities.

The answer cache is disabled (``cache=False``). Each labeler has its own llama.cpp context, loaded
before timing (model loading is not counted; the shared prefix *is*: its one evaluation is part of the
engine's first chunk).

Printed per model and labeler: reports/s (wall clock) and CPU seconds per report (process CPU time: on
a machine shared with other jobs the wall clock mostly measures the scheduler, CPU time the work), prompt tokens evaluated per report, the report's own token
count (the report text alone, tokenised without any template), their ratio, generated tokens per
report, and the speed ratio engine/naive. For scoring mode, the evaluated tokens are also split into
the report state and the per-finding questions. Targets (issue 7): engine >= 2x naive; prompt tokens
evaluated <= 1.3x the report's tokens.

    python bench/llm_throughput.py                      # smollm2-135m and qwen2.5-coder-0.5b, 50 reports
    python bench/llm_throughput.py --models smollm2-135m --n 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from radpriv.data import load_dataset  # noqa: E402
from radpriv.llm import prompts  # noqa: E402
from radpriv.llm.backends import get_backend, unload  # noqa: E402
from radpriv.llm.engine import build_messages, label_frame, prefill_questions  # noqa: E402
from radpriv.models.registry import model_path, resolve_model  # noqa: E402

LABELERS = ("naive", "template", "scoring")
TARGET_SPEEDUP, TARGET_TOKEN_RATIO = 2.0, 1.3


def reports(corpus: str, n: int) -> tuple[pd.DataFrame, object]:
    ds = load_dataset(corpus if corpus.startswith("synthetic_") else f"synthetic_{corpus}")
    frame = ds.frame[ds.frame["split"] != "train"].head(n).reset_index(drop=True)  # never the training split
    if len(frame) < n:
        raise SystemExit(f"{ds.name} has only {len(frame)} evaluation reports")
    return frame, ds.schema


class Naive:
    """Per-report chat completion on a fresh llama.cpp state: what a straightforward script does."""

    def __init__(self, name: str, n_threads: int, n_ctx: int | None):
        import llama_cpp

        spec = resolve_model(name)
        self.llm = llama_cpp.Llama(model_path=str(model_path(spec)), n_ctx=int(n_ctx or spec.n_ctx or 4096),
                                   n_threads=n_threads, n_gpu_layers=0, seed=0, verbose=False)

    def run(self, frame, schema, params) -> dict:
        js = prompts.answer_schema(schema)
        ptok = ctok = failures = 0
        answers = {}
        t0, c0 = time.perf_counter(), time.process_time()
        for rid, text in zip(frame["report_id"], frame["text"]):
            self.llm.reset()  # no prefix reuse: every report starts from an empty state
            out = self.llm.create_chat_completion(
                messages=build_messages(schema, "template", text), response_format={"type": "json_object", "schema": js},
                temperature=params["temperature"], top_k=params["top_k"], max_tokens=params["max_tokens"],
                seed=params["seed"])
            usage = out.get("usage") or {}
            ptok += int(usage.get("prompt_tokens", 0))
            ctok += int(usage.get("completion_tokens", 0))
            try:
                answers[rid] = prompts.parse_answer(schema, json.loads(out["choices"][0]["message"]["content"]))
            except ValueError:
                failures += 1
        return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "prompt_tokens": ptok, "completion_tokens": ctok,
                "decode_steps": ctok, "failures": failures, "answers": answers}

    def close(self):
        self.llm.close()


def engine_run(frame, schema, name, mode, backend_opts, timeout) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    run = label_frame(frame, schema, name, mode=mode, cache=False, progress=False, timeout=timeout,
                      backend_opts=backend_opts)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = run.stats
    ans = {r["report_id"]: {f: r[f] for f in schema.ids} for r in run.answers.to_dict("records")}
    return {"seconds": secs, "cpu": cpu, "prompt_tokens": s["prompt_tokens_per_report"] * s["n_answers"],
            "completion_tokens": s["completion_tokens_per_report"] * s["n_answers"],
            "decode_steps": s["decode_steps_per_report"] * s["n_answers"],
            "failures": s["n_failures"], "answers": ans}


def question_tokens(backend, schema, text: str) -> int:
    """Tokens of the per-finding questions appended to one report's state in scoring mode."""
    if schema.task != "single" and prefill_questions(backend):  # "<label>:" as the start of the answer
        return sum(len(backend.tokenize(prompts.answer_prefix(schema, f), special=False)) for f in schema.ids)
    msgs = build_messages(schema, "scoring", text)
    base = backend.render(msgs, add_generation_prompt=False)
    n = 0
    for f in schema.ids:
        full = backend.render(msgs + [{"role": "user", "content": prompts.question(schema, f)}])
        n += len(backend.tokenize(full[len(base):]))
    return n


def bench_model(name: str, frame: pd.DataFrame, schema, rounds: int, n_threads: int, n_ctx: int | None,
                timeout: float) -> list[dict]:
    params = {"temperature": 0.0, "top_k": 1, "seed": 0, "max_tokens": 24 + 12 * len(schema.ids)}
    # one llama.cpp context per labeler (separate backends: modes have different shared prefixes)
    opts = {m: {"n_threads": n_threads, **({"n_ctx": n_ctx} if n_ctx else {}), "bench_labeler": m}
            for m in ("template", "scoring")}
    backends = {m: get_backend(resolve_model(name), **o) for m, o in opts.items()}  # load before timing
    naive = Naive(name, n_threads, n_ctx)
    tok = backends["template"]
    report_tokens = [tok.count_tokens(t) for t in frame["text"]]
    q_tokens = question_tokens(tok, schema, frame["text"].iloc[0])
    # the engine evaluates each mode's shared prefix (system instructions) once per run
    shared = {m: len(tok.tokenize(tok.render(build_messages(schema, m, "")[:1], add_generation_prompt=False)))
              for m in ("template", "scoring")}

    totals = {m: {"seconds": 0.0, "cpu": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "decode_steps": 0.0,
                  "failures": 0, "answers": {}}
              for m in LABELERS}
    chunks = np.array_split(np.arange(len(frame)), rounds)
    for r, idx in enumerate(chunks):
        chunk = frame.iloc[idx]
        order = LABELERS[r % 3:] + LABELERS[: r % 3]  # rotate who goes first
        for m in order:
            res = (naive.run(chunk, schema, params) if m == "naive"
                   else engine_run(chunk, schema, name, m, opts[m], timeout))
            for k in ("seconds", "cpu", "prompt_tokens", "completion_tokens", "decode_steps", "failures"):
                totals[m][k] += res[k]
            totals[m]["answers"].update(res["answers"])
        done = int(sum(len(c) for c in chunks[: r + 1]))
        print(f"  [{name}] round {r + 1}/{len(chunks)}: {done} reports; "
              + ", ".join(f"{m} {totals[m]['seconds'] / done:.1f} s/report ({totals[m]['cpu'] / done:.1f} s CPU, "
                          f"{totals[m]['prompt_tokens'] / done:.0f} prompt tok)" for m in LABELERS), file=sys.stderr,
              flush=True)
    naive.close()

    n = len(frame)
    rep = float(np.mean(report_tokens))
    rows = []
    for m in LABELERS:
        t = totals[m]
        ptok = t["prompt_tokens"] / n
        row = {"model": name, "labeler": m if m == "naive" else f"engine/{m}", "n": n,
               "reports_per_s": n / t["seconds"], "s_per_report": t["seconds"] / n,
               "cpu_reports_per_s": n / t["cpu"], "cpu_s_per_report": t["cpu"] / n,
               "report_tokens": rep, "prompt_tokens_eval": ptok, "token_ratio": ptok / rep,
               "completion_tokens": t["completion_tokens"] / n, "decode_steps": t["decode_steps"] / n,
               "failures": t["failures"]}
        # per report once the shared prefix is in the KV cache (what the n-th report costs)
        steady = ptok if m == "naive" else (t["prompt_tokens"] - shared[m]) / n
        row["steady_tokens"], row["steady_ratio"] = steady, steady / rep
        if m == "scoring":
            row["question_tokens"] = q_tokens
            row["report_state_ratio"] = (steady - q_tokens) / rep
        rows.append(row)
    base, cbase = rows[0]["reports_per_s"], rows[0]["cpu_reports_per_s"]
    for row in rows:
        row["speedup_vs_naive"] = row["reports_per_s"] / base
        row["cpu_speedup_vs_naive"] = row["cpu_reports_per_s"] / cbase
    # how often engine/template gives the naive loop's answer: same prompt and greedy choices, but the
    # naive grammar lets the model pick whitespace and llama.cpp's schema grammar orders the keys
    # alphabetically, while jump-forward writes the compact json.dumps form in the schema's order
    a, b = totals["naive"]["answers"], totals["template"]["answers"]
    common = [k for k in a if k in b]
    agree = np.mean([a[k][f] == b[k][f] for k in common for f in schema.ids]) if common else float("nan")
    rows[1]["label_agreement_with_naive"] = float(agree)
    unload(*backends.values())
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b", help="comma-separated registry names")
    ap.add_argument("--n", type=int, default=50, help="number of synthetic reports (validation+test splits)")
    ap.add_argument("--corpus", default="ct", help="synthetic corpus: ct (CT-RATE 18), cxr, cmr, clavicle, ...")
    ap.add_argument("--rounds", type=int, default=5, help="interleaving rounds (chunks of the report list)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RADPRIV_BENCH_THREADS", 0)) or None,
                    help="llama.cpp threads for every labeler (default: all cores)")
    ap.add_argument("--n-ctx", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=900.0, help="engine per-report timeout (s)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    threads = a.threads or max(1, os.cpu_count() or 1)
    frame, schema = reports(a.corpus, a.n)
    print(f"{len(frame)} synthetic {a.corpus} reports ({schema.name}, {len(schema.ids)} labels), "
          f"{threads} thread(s), {min(a.rounds, len(frame))} interleaved rounds, answer cache off", flush=True)
    rows = []
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        rows += bench_model(name, frame, schema, min(a.rounds, len(frame)), threads, a.n_ctx, a.timeout)
    df = pd.DataFrame(rows)
    cols = ["model", "labeler", "n", "reports_per_s", "s_per_report", "speedup_vs_naive", "cpu_s_per_report",
            "cpu_speedup_vs_naive", "prompt_tokens_eval",
            "report_tokens", "token_ratio", "steady_ratio", "completion_tokens", "decode_steps", "failures"]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(df[cols].to_string(index=False))
        extra = df[df.labeler == "engine/scoring"][["model", "question_tokens", "report_state_ratio"]]
        print("\nscoring mode: prompt tokens = report state + per-finding questions")
        print(extra.to_string(index=False))
        print("\nengine/template label agreement with naive (key order and whitespace differ, see code):",
              ", ".join(f"{r.model} {r.label_agreement_with_naive:.3f}" for r in df[df.labeler == "engine/template"].itertuples()))
    print(f"\ntargets: speedup >= {TARGET_SPEEDUP}x naive; prompt tokens evaluated <= {TARGET_TOKEN_RATIO}x report tokens")
    for r in df[df.labeler != "naive"].itertuples():
        print(f"  {r.model:22s} {r.labeler:15s} speed {'MET ' if r.speedup_vs_naive >= TARGET_SPEEDUP else 'MISS'} "
              f"({r.speedup_vs_naive:.2f}x wall, {r.cpu_speedup_vs_naive:.2f}x CPU time)  tokens {'MET ' if r.token_ratio <= TARGET_TOKEN_RATIO else 'MISS'} "
              f"({r.token_ratio:.2f}x over {r.n} reports incl. the one shared prefix; "
              f"{r.steady_ratio:.2f}x per report once it is cached)")
    if a.json:
        df.to_json(a.json, orient="records", indent=1)
    return 0


if __name__ == "__main__":
    from radpriv.netguard import install_process_guard

    install_process_guard()  # benchmarks send nothing off the machine: loopback only (+ $RADPRIV_ALLOW_HOSTS)
    sys.exit(main())
