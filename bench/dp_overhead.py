"""What differential privacy costs in speed and memory, measured side by side in one run.

Configurations (all on the same reports, encoder and window settings):
  lora            non-private LoRA
  dp-lora         DP-SGD LoRA (opacus hooks: per-sample gradients of the adapters and head only)
  full            non-private full fine-tuning
  dp-full/hooks   DP-SGD full fine-tuning, per-sample gradients materialised by hooks
  dp-full/ghost   DP-SGD full fine-tuning with ghost clipping (per-sample norms without per-sample gradients)
  lora/top2       non-private LoRA on the top 2 layers over cached states of the 4 frozen layers below
  dp-lora/top2    the same with DP-SGD
  head            non-private linear head over cached pooled features of the frozen encoder
  dp-head         the same with DP-SGD

Speed is reports per second through the training steps; the frozen-trunk rows (top2, head) encode each report
once through the frozen layers before the first step, shown apart as "trunk s" and included in "total s".
Each DP row is compared with the non-private row of the same trainable part.

Each configuration trains in a fresh subprocess (so peak memory is its own), rounds interleave the
configurations (A B C D E, A B C D E, ...) so load changes on a shared machine hit all of them alike, and the
medians are compared. Peak memory: CUDA max allocated on a GPU; on CPU the peak resident set size of the
process minus its size after the model was built (the training increment). DP runs draw Poisson batches
of --batch-size reports on average and put at most --batch-size through the model at once (a larger draw is
split; ``TrainConfig.physical_batch_size``), so every configuration's largest forward pass has the same size.

    python bench/dp_overhead.py [--n 64] [--rounds 2] [--max-length 128] [--device cpu]

Targets (issue 5): DP-LoRA ≥ 0.9× the speed of non-private LoRA; ghost-clipped DP full fine-tuning peak
memory ≤ 1.5× non-private full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys

CONFIGS = {
    "lora": {"mode": "lora"},
    "dp-lora": {"mode": "dp-lora", "epsilon": 8.0},
    "full": {"mode": "full"},
    "dp-full/hooks": {"mode": "dp-full", "epsilon": 8.0, "grad_sample_mode": "hooks"},
    "dp-full/ghost": {"mode": "dp-full", "epsilon": 8.0, "grad_sample_mode": "ghost"},
    # the same with Poisson draws never split (peak memory then follows the largest draw): --configs to select
    "dp-lora/unsplit": {"mode": "dp-lora", "epsilon": 8.0, "physical_batch_size": 10**9},
    "dp-full/ghost/unsplit": {"mode": "dp-full", "epsilon": 8.0, "grad_sample_mode": "ghost", "physical_batch_size": 10**9},
    "lora/top2": {"mode": "lora", "top_layers": 2},
    "dp-lora/top2": {"mode": "dp-lora", "epsilon": 8.0, "top_layers": 2},
    "head": {"mode": "head"},
    "dp-head": {"mode": "dp-head", "epsilon": 8.0},
}
DEFAULT = ["lora", "dp-lora", "full", "dp-full/hooks", "dp-full/ghost", "lora/top2", "dp-lora/top2", "head", "dp-head"]
#: the non-private row each DP row is compared with (same trainable part)
BASELINE = {"dp-lora": "lora", "dp-full/hooks": "full", "dp-full/ghost": "full", "dp-lora/unsplit": "lora",
            "dp-full/ghost/unsplit": "full", "dp-lora/top2": "lora/top2", "dp-head": "head"}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker(name: str, args: dict, out) -> None:
    import warnings

    from radpriv.netguard import install_process_guard

    install_process_guard()  # a spawned process: its own guard

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    from radpriv.data import load_dataset
    from radpriv.dp import train as T
    from radpriv.evaluate.scoring import binarize
    from radpriv.kernel import peak_rss_bytes
    from radpriv.models import registry

    ds = load_dataset(args["dataset"])
    frame = ds.split("train").head(args["n"])
    texts, Y = frame.text.tolist(), binarize(frame, list(ds.schema.ids)).astype(np.float32)
    enc = str(registry.get_model("minilm-l6").local_path)
    cfg = T.TrainConfig(**CONFIGS[name], epochs=args["epochs"], batch_size=args["batch_size"],
                        max_length=args["max_length"], stride=16, max_chunks=1, device=args["device"], seed=0)
    # measure the baseline after the model exists: build once (weights cached by the OS), then train
    T.build_model(cfg, enc, Y.shape[1])
    base = _rss_mb()
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res = T.train(cfg, enc, texts, Y)
    peak_rss = peak_rss_bytes() / 2**20  # VmHWM (ru_maxrss would carry the parent's peak across spawn)
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and cfg.device.startswith("cuda") else None
    out.put({"config": name, "samples_per_s": res.samples_per_second, "trunk_s": res.trunk_seconds,
             "total_s": res.seconds,
             "peak_mb": cuda if cuda is not None else peak_rss - base, "memory": "cuda" if cuda is not None else "rss"})


def measure(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(name, args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{name}: worker failed with exit code {p.exitcode}")
    return q.get()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic_cxr")
    ap.add_argument("--n", type=int, default=64, help="training reports per run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", default=",".join(DEFAULT), help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    args = {"dataset": a.dataset, "n": a.n, "batch_size": a.batch_size, "max_length": a.max_length, "device": a.device,
            "epochs": a.epochs}
    names = a.configs.split(",")
    results = {n: [] for n in names}
    for r in range(a.rounds):
        for n in names:
            res = measure(n, args)
            results[n].append(res)
            print(f"round {r + 1} {n:22s} {res['samples_per_s']:9.2f} samples/s  peak +{res['peak_mb']:7.0f} MB", flush=True)
    med = {n: {k: statistics.median(x[k] for x in v) for k in ("samples_per_s", "peak_mb", "trunk_s", "total_s")}
           for n, v in results.items()}
    print(f"\n{'config':22s} {'samples/s':>10s} {'peak MB':>9s} {'trunk s':>8s} {'total s':>8s}   ({a.n} reports, "
          f"batch {a.batch_size}, {a.max_length} tokens, {a.epochs} epoch(s), {a.device}, median of {a.rounds} "
          f"interleaved rounds)")
    for n, m in med.items():
        print(f"{n:22s} {m['samples_per_s']:10.2f} {m['peak_mb']:9.0f} {m['trunk_s']:8.1f} {m['total_s']:8.1f}")
    ratios = {}
    for n in med:  # each DP configuration against the non-private row of the same trainable part
        base = BASELINE.get(n)
        if base in med:
            ratios[f"{n} / {base} speed"] = med[n]["samples_per_s"] / med[base]["samples_per_s"]
            ratios[f"{n} / {base} peak memory"] = med[n]["peak_mb"] / max(med[base]["peak_mb"], 1.0)
    if "full" in med:  # what the cached trunk buys: each frozen-trunk DP row against whole-encoder training
        for n in ("dp-lora/top2", "dp-head"):
            if n in med:
                ratios[f"{n} / full speed"] = med[n]["samples_per_s"] / med["full"]["samples_per_s"]
                ratios[f"{n} / full total time"] = med[n]["total_s"] / med["full"]["total_s"]
    print()
    for k, v in ratios.items():
        print(f"{k:40s} {v:6.2f}x")
    targets = {"dp-lora / lora speed": (">=", 0.9), "dp-full/ghost / full peak memory": ("<=", 1.5)}
    for k, (op, t) in targets.items():
        if k in ratios:
            ok = ratios[k] >= t if op == ">=" else ratios[k] <= t
            print(f"target {k} {op} {t}: {'met' if ok else 'NOT met'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": args, "runs": results, "median": med, "ratios": ratios}, f, indent=1)
    return 0


if __name__ == "__main__":
    from radpriv.netguard import install_process_guard

    install_process_guard()  # benchmarks send nothing off the machine: loopback only (+ $RADPRIV_ALLOW_HOSTS)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
