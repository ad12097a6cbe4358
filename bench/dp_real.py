"""Study 3 on real reports: the DP rows beside the non-private ones, settings chosen on validation only.

A development check (issue 19) on ../shared/data/ct_rate_annotated (800 manually annotated CT-RATE reports,
manifest ``ct_rate_annotated_dev``: train 480, validation 160, test 160). Nothing here is tuned on the test
part: the public stage's size is a command-line choice, the DP head's settings are chosen per ε among
``--candidates`` by validation weighted F1 (radpriv.dp.grid.run_grid's ``search``), and the test part is scored
once per run. Printed side by side from one run: per row validation and test weighted F1 (test with its 95 %
bootstrap CI), ε achieved (opacus PRV, cross-checked against dp_accounting), training seconds, and the peak
resident memory of this process.

Rows: TF-IDF + logistic regression; DP linear model over public TF-IDF features (each ε); the public-only
model (the public stage's own classifier, no private report); DP head at each ε from the public init (and,
with ``--random-init``, from the pretrained encoder without the public stage); with ``--full``, non-private full
fine-tuning of the whole encoder (the time every DP run should stay under; ~15 min here).

    RADPRIV_SHARED_DATA=/path/to/shared/data python bench/dp_real.py [--public-n 1200] [--full]

Every training run is cached (radpriv.dp.grid): a second invocation prints the same numbers in seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from radpriv.data import DataError  # noqa: E402
from radpriv.dp import grid  # noqa: E402
from radpriv.dp.train import TrainConfig, build_model, predict_logits, windows  # noqa: E402
from radpriv.evaluate.scoring import choose_thresholds  # noqa: E402
from radpriv.studies import study3  # noqa: E402

#: DP head candidates (chosen between on validation F1, per ε): large expected batches, many epochs, small
#: clipping norms (Li et al. 2022; De et al. 2022)
CANDIDATES = [dict(epochs=50, batch_size=120, max_grad_norm=0.1, lr=0.02),
              dict(epochs=100, batch_size=60, max_grad_norm=0.1, lr=0.01),
              dict(epochs=50, batch_size=120, max_grad_norm=0.05, lr=0.02),
              dict(epochs=50, batch_size=240, max_grad_norm=0.1, lr=0.02)]
BASE = dict(epochs=2, batch_size=32, max_length=256, stride=32, max_chunks=4)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def public_only(state: dict, enc: str, val: grid.Split, test: grid.Split) -> dict:
    """The public stage's own classifier on validation and test (thresholds chosen on validation)."""
    cfg = TrainConfig(mode="full", **BASE)
    tok, model = build_model(cfg, enc, val.Y.shape[1], state)
    pad = tok.pad_token_id or 0
    pv, pt = (1 / (1 + np.exp(-predict_logits(model, windows(tok, s.texts, cfg.max_length, cfg.stride,
                                                              cfg.max_chunks), pad))) for s in (val, test))
    th = choose_thresholds(val.Y, pv, rule="f1")
    return {"val_weighted_f1": grid.f1_scores(val.Y, pv, th, n_resamples=0)["weighted_f1"],
            **grid.f1_scores(test.Y, pt, th, 1000, 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default="ct_rate_annotated_dev")
    ap.add_argument("--public-n", type=int, default=1200, help="synthetic public reports of the target schema")
    ap.add_argument("--public-top-layers", type=int, default=2)
    ap.add_argument("--public-epochs", type=int, default=3)
    ap.add_argument("--epsilons", default="1,10")
    ap.add_argument("--random-init", action="store_true", help="also the DP head without the public stage")
    ap.add_argument("--full", action="store_true", help="also non-private full fine-tuning (~15 min)")
    args = ap.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    t0 = time.time()
    try:
        data = study3.load([args.manifest], "minilm-l6", public_n=args.public_n)
    except DataError as exc:
        print(f"dp_real: {exc}\n(set RADPRIV_SHARED_DATA to the folder holding ct_rate_annotated/)", file=sys.stderr)
        return 2
    name = args.manifest
    sp, public = data.splits[name], data.public[name]
    base = dict(BASE)
    public_train = {"top_layers": args.public_top_layers, "epochs": args.public_epochs}
    modes = ["dp-head"] + (["full"] if args.full else [])
    by_mode = {"full": {"batch_size": 8}}
    g = study3.run_grid(data, study3.baselines(data, epsilons, [0]), modes, epsilons, [0], train=base,
                        train_by_mode=by_mode, public_train=public_train,
                        search={"dp-head": CANDIDATES}, random_init_modes=["dp-head"] if args.random_init else [],
                        n_resamples=1000)
    pcfg = grid.public_config(base, by_mode, public_train=public_train)  # the config run_grid trained and cached
    state, _ = grid.public_pretrain(pcfg, data.encoder_path, public, sp["validation"])
    rows = [{"mode": "public only", "init": "public", "epsilon": 0.0, **public_only(state, data.encoder_path,
                                                                                      sp["validation"], sp["test"])}]
    runs = g.allruns.to_dict("records") + rows
    table = pd.DataFrame([{
        "row": r["mode"] + (" (public init)" if r.get("init") == "public" and r["mode"] != "public only" else ""),
        "ε": r["epsilon"], "ε achieved": r.get("achieved_epsilon"),
        "val wF1": r.get("val_weighted_f1"),
        "test wF1 [95% CI]": f"{r['weighted_f1']:.3f} [{r['weighted_f1_lo']:.3f}, {r['weighted_f1_hi']:.3f}]",
        "settings": r.get("chosen") if isinstance(r.get("chosen"), dict) and r.get("chosen") else "",
        "train s": r.get("train_seconds")} for r in runs])
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 80)
    print(f"{name}: train {len(sp['train'].texts)}, validation {len(sp['validation'].texts)}, "
          f"test {len(sp['test'].texts)} reports; public stage: {args.public_n} synthetic reports, "
          f"top {args.public_top_layers} layers, {args.public_epochs} epochs")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    note = g.search_note
    if note:
        print(note)
    print(f"peak resident memory {peak_gb():.2f} GB; wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
