"""LLM labeling time against the model's physical floor on this machine, and the slowdown when two
labeling jobs share the CPU, side by side in one run.

**Floor.** For each model, llama.cpp's raw prompt-evaluation throughput is measured directly: a fresh
context evaluates a block of report tokens in one call (``Llama.eval``), median of ``--reps``. A
report's floor is its own tokens (the report text alone) divided by that throughput: the least time
any labeler that reads the report once can take. The engine then labels the same evaluation reports
(answer cache off, the shared instruction/few-shot prefix evaluated once before timing) in each
mode, and the bench prints seconds per report, the floor, their ratio (issue 18 target: <= 1.3),
prompt tokens evaluated per report and decode steps per report (each decode step costs about as
much as evaluating a whole small batch of prompt tokens, so a long JSON answer sits above the floor).

**Contention.** One labeling job alone, then the same job with a second, identical labeling job
started beside it (separate processes, each with llama.cpp's default thread count), once with
``OMP_WAIT_POLICY=ACTIVE`` (OpenMP workers spin while they wait: the old behaviour) and once with
``PASSIVE`` (what radpriv sets now). Two jobs on two cores should each take about twice as long
("in proportion"); spinning workers make it several-fold.

    python bench/llm_floor.py                                    # every bundled GGUF model that is fetched
    python bench/llm_floor.py --models smollm2-135m --n 12 --contention-n 8
    python bench/llm_floor.py --json floor.json

Run it on an otherwise idle machine: it is itself the one heavy job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TARGET_RATIO = 1.3
DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
#: (mode, corpus, few-shot) configurations: Study 1's single-label CMR task and Study 2's multi-label template
CONFIGS = (("template", "cmr", True), ("scoring", "cmr", True), ("scoring", "cmr", False),
           ("template", "elbow", True), ("scoring", "elbow", True))


def _evaluation_reports(corpus: str, n: int):
    from radpriv.data import load_dataset

    ds = load_dataset(f"synthetic_{corpus}")
    frame = ds.frame[ds.frame["split"] == "test"].head(n).reset_index(drop=True)  # never the training split
    return ds, frame


def eval_throughput(backend, tokens: list[int], reps: int) -> float:
    """Raw prompt evaluation on a fresh context: tokens per second (median of ``reps``)."""
    llm = backend.llm
    rates = []
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        rates.append(len(tokens) / (time.perf_counter() - t0))
    llm.reset()
    return statistics.median(rates)


def decode_step_seconds(backend, tokens: list[int], reps: int) -> float:
    """One single-token evaluation on top of a report-sized state (what each decode step costs)."""
    llm = backend.llm
    llm.reset()
    llm.eval(tokens)
    n = llm.n_tokens
    times = []
    for _ in range(reps):
        llm.n_tokens = n
        t0 = time.perf_counter()
        llm.eval(tokens[:1])
        times.append(time.perf_counter() - t0)
    llm.reset()
    return statistics.median(times)


def floor_rows(model: str, n: int, reps: int) -> list[dict]:
    from radpriv.llm.backends import get_backend
    from radpriv.llm.engine import few_shot_examples, label_frame
    from radpriv.models.registry import resolve_model

    spec = resolve_model(model)
    backend = get_backend(spec)
    rows = []
    block = None
    for mode, corpus, shots in CONFIGS:
        ds, frame = _evaluation_reports(corpus, n)
        if block is None:  # ~256 tokens of report text: the size of one report's prompt evaluation
            ids = []
            for text in frame["text"]:
                ids += backend.tokenize(text, special=False)
                if len(ids) >= 256:
                    break
            block = ids[:256]
            tps = eval_throughput(backend, block, reps)
            step = decode_step_seconds(backend, block, reps)
        report_tokens = statistics.mean(backend.count_tokens(t) for t in frame["text"])
        few = few_shot_examples(ds.split("train"), ds.schema, seed=0) if shots else None
        # warm: the shared prefix (instructions + examples) is evaluated once per study run, not per report
        label_frame(frame.head(1), ds.schema, spec, mode=mode, few_shot=few, cache=False, progress=False)
        run = label_frame(frame.iloc[1:], ds.schema, spec, mode=mode, few_shot=few, cache=False, progress=False)
        s = run.stats
        floor = report_tokens / tps
        rows.append({"model": model, "task": f"{corpus} ({ds.schema.task})", "mode": mode,
                     "examples": "few-shot" if shots else "zero-shot", "reports": s["n_answers"],
                     "eval_tok_s": round(tps, 1), "decode_step_s": round(step, 3),
                     "report_tokens": round(report_tokens, 1), "floor_s": round(floor, 3),
                     "s_per_report": s["seconds_per_report"], "ratio": round(s["seconds_per_report"] / floor, 2),
                     "evaluated_tokens": s["prompt_tokens_per_report"],
                     "decode_steps": s["decode_steps_per_report"], "failures": s["n_failures"]})
    return rows


# ------------------------------------------------------------------------------------------------------
# contention: a worker process labels reports and prints its wall time
# ------------------------------------------------------------------------------------------------------
def worker(model: str, n: int, offset: int) -> None:
    from radpriv.data import load_dataset
    from radpriv.llm.engine import few_shot_examples, label_frame

    ds = load_dataset("synthetic_cmr")
    frame = ds.frame[ds.frame["split"] != "train"].iloc[offset:offset + n].reset_index(drop=True)
    few = few_shot_examples(ds.split("train"), ds.schema, seed=0)
    label_frame(frame.head(1), ds.schema, model, mode="template", few_shot=few, cache=False, progress=False)
    t0 = time.perf_counter()
    label_frame(frame.iloc[1:], ds.schema, model, mode="template", few_shot=few, cache=False, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t0, "omp": os.environ.get("OMP_WAIT_POLICY")}), flush=True)


def _spawn(model: str, n: int, offset: int, policy: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    return subprocess.Popen([sys.executable, __file__, "--worker", model, "--n", str(n), "--offset", str(offset)],
                            env=env, stdout=subprocess.PIPE, text=True)


def _seconds(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"worker failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def contention_rows(model: str, n: int) -> list[dict]:
    rows = []
    for policy in ("ACTIVE", "PASSIVE"):
        alone = _seconds(_spawn(model, n, 0, policy))
        a, b = _spawn(model, n, 0, policy), _spawn(model, n, n, policy)
        beside, other = _seconds(a), _seconds(b)
        rows.append({"model": model, "OMP_WAIT_POLICY": policy, "reports": n - 1, "alone_s": round(alone, 1),
                     "beside_s": round(beside, 1), "second_job_s": round(other, 1),
                     "slowdown": round(beside / alone, 2)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated registered model names (default: fetched bundled GGUFs)")
    ap.add_argument("--n", type=int, default=16, help="evaluation reports per configuration (the first warms the prefix)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--contention-n", type=int, default=10, help="reports per contention job (0: skip)")
    ap.add_argument("--contention-model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--json", help="write every row to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.n, args.offset)
        return 0
    import pandas as pd

    from radpriv.netguard import install_process_guard
    from radpriv.models.registry import RegistryError, model_path

    install_process_guard()

    def fetched(name: str) -> bool:
        try:
            model_path(name, progress=False)
            return True
        except RegistryError:
            return False

    names = args.models.split(",") if args.models else [m for m in DEFAULT_MODELS if fetched(m)]
    print(f">> {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, models: {', '.join(names)}")
    rows = []
    for name in names:
        rows += floor_rows(name, args.n, args.reps)
    floor = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("\nSeconds per report against the floor (report tokens / raw prompt-evaluation throughput):")
        print(floor.to_string(index=False))
    cont = pd.DataFrame()
    if args.contention_n > 1:
        cont = pd.DataFrame(contention_rows(args.contention_model, args.contention_n))
        print("\nOne labeling job alone vs with a second labeling job beside it (2 jobs on "
              f"{os.cpu_count()} cores; proportional sharing is ~2x):")
        print(cont.to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"floor": rows, "contention": cont.to_dict("records")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
