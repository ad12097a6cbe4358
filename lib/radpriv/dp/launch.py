"""Multi-process (torchrun) training of one configuration: DP-SGD across GPUs, or across CPU processes (gloo).

    torchrun --nproc_per_node 2 -m radpriv.dp.launch --dataset synthetic_cxr --config '{"mode": "dp-lora", "epsilon": 8}' --out run/

Each rank trains on its own Poisson sample of the reports (opacus's distributed sampler) and opacus's
``DifferentiallyPrivateDistributedDataParallel`` averages the clipped gradients; noise is added once. Every rank
writes ``rank<N>.json`` (ε, loss history, a checksum of its trainable weights: equal on all ranks after training);
rank 0 also writes the merged weights to ``model.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv=None) -> int:
    import torch
    import torch.distributed as dist

    from radpriv.data import load_dataset
    from radpriv.dp.grid import Split
    from radpriv.dp.train import TrainConfig, train
    from radpriv.models import registry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="manifest name or path (multi-label)")
    ap.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    ap.add_argument("--encoder", default="minilm-l6", help="registered encoder name or local checkpoint directory")
    ap.add_argument("--limit", type=int, default=None, help="at most this many training reports")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    cfg = TrainConfig(**json.loads(a.config))
    use_cuda = cfg.device.startswith("cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        cfg.device = f"cuda:{local}"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        ds = load_dataset(a.dataset)
        frame = ds.split("train")
        frame = frame.head(a.limit) if a.limit else frame
        sp = Split.from_frame(frame, list(ds.schema.ids))
        enc = a.encoder if Path(a.encoder).is_dir() else str(registry.get_model(a.encoder).local_path)
        res = train(cfg, enc, sp.texts, sp.Y)
        checksum = float(sum(p.detach().double().sum() for p in res.model.parameters() if p.requires_grad))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "world_size": dist.get_world_size(), "epsilon": res.epsilon, "accounting": res.accounting,
            "history": res.history, "checksum": checksum, "n_train": res.n_train}, default=float))
        if rank == 0:
            torch.save(res.state_dict(), out / "model.pt")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
