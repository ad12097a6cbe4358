"""The memory budget of Study 3 training (``TrainConfig.memory_budget_gb``): the estimate of one training step's
memory, the reports per forward/backward pass it allows, that capping them trains the same model, and that a
real-length DP-LoRA run stays within budget (peak resident memory of a fresh process).

Calibration of :func:`radpriv.dp.train.estimate_pass_bytes` on MiniLM-L6 (one fresh process per row: peak
``ru_maxrss`` after one forward/backward/AdamW step on N=4 reports of K full windows of T tokens, minus the
resident size after the model was built and wrapped; torch 2.13 CPU, transformers 5.24 sdpa attention, opacus
1.6 hooks, dropout on; estimated = fixed + 4 × per report):

    mode     T   K   measured MB  estimated MB
    full     128 1       530          857
    full     256 1       771         1345
    full     128 4      1005         1466
    full     256 4      2203         2931   (N=1: 817 vs 1147; per report measured 462, estimated 595)
    lora     128 1       227          407
    lora     256 1       590          895
    lora     128 4       810         1016
    lora     256 4      2019         2481   (N=1: 521 vs 697; per report measured 499, estimated 595)
    dp-lora  128 1       266          409
    dp-lora  256 1       608          897
    dp-lora  128 4       842         1018
    dp-lora  256 4      2107         2483   (N=1: 532 vs 698; per report measured 525, estimated 595)
    dp-full  128 1      1032         1406
    dp-full  256 1      1116         1894
    dp-full  128 4      1592         2015
    dp-full  256 4      2721         3480   (N=1: 912 vs 1284; per report measured 603, estimated 732)
    dp-full ghost 128 1  637          857;  256 1: 945 vs 1345
"""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from radpriv.dp.train import (TrainConfig, build_model, estimate_pass_bytes, predict_logits, reports_per_pass, train,
                              windows)
from radpriv.models import registry

ENC = registry.get_model("minilm-l6").local_path
#: MiniLM-L6's sizes (the estimate reads nothing else of the encoder config)
MINILM = SimpleNamespace(num_hidden_layers=6, num_attention_heads=12, hidden_size=384, intermediate_size=1536,
                         vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)
TEXTS = ["No pleural effusion. Heart size normal.",
         "Large right pleural effusion with adjacent atelectasis. " * 12,  # several windows
         "Cardiomegaly. Small left effusion.", "Lungs are clear."]
Y = np.array([[0, 0], [1, 1], [1, 0], [0, 0]], dtype=np.float32)


def _needs_encoder():
    if not ENC.is_dir():
        pytest.skip("minilm-l6 not fetched (make models-test)")


# ---------------------------------------------------------------------------------------------- the estimate


def test_default_budget_caps_the_default_profile_below_its_batch():
    """Study 3's default settings (256-token windows × 4, Poisson batches of 32): 32 reports at once would need
    far more than the default 4 GB, so the budget really splits the pass; the whole encoder at 128 × 1 fits."""
    cfg = TrainConfig(mode="dp-lora", epsilon=1.0, batch_size=32, max_length=256, max_chunks=4)
    assert cfg.memory_budget_gb == 4.0
    fixed, per = estimate_pass_bytes(cfg, MINILM)
    assert fixed + 32 * per > 3 * cfg.memory_budget_gb * 1e9
    fit = reports_per_pass(cfg, MINILM)
    assert 1 <= fit < 32 and fixed + fit * per <= cfg.memory_budget_gb * 1e9 < fixed + (fit + 1) * per
    assert reports_per_pass(TrainConfig(mode="dp-lora", epsilon=1.0, max_length=128, max_chunks=1), MINILM) == 32
    # the data's own longest report and window count, when known, are what is budgeted
    assert reports_per_pass(cfg, MINILM, n_windows=2) > fit
    assert reports_per_pass(cfg, MINILM, n_windows=4, tokens=128) > fit
    assert reports_per_pass(cfg, MINILM, n_windows=9, tokens=999) == fit  # (never beyond max_chunks/max_length)


def test_estimate_follows_what_trains():
    """Per-sample gradients count in DP hooks mode only; a frozen trunk budgets only the layers that train;
    the head modes train a linear layer; no budget: no cap."""
    kw = dict(max_length=256, max_chunks=4)
    full = estimate_pass_bytes(TrainConfig(mode="full", **kw), MINILM)
    dp_full = estimate_pass_bytes(TrainConfig(mode="dp-full", epsilon=1.0, **kw), MINILM)
    lora = estimate_pass_bytes(TrainConfig(mode="lora", **kw), MINILM)
    top2 = estimate_pass_bytes(TrainConfig(mode="lora", top_layers=2, **kw), MINILM)
    head = estimate_pass_bytes(TrainConfig(mode="dp-head", epsilon=1.0, **kw), MINILM)
    assert dp_full[1] - full[1] > 22e6 * 4  # ~22.7M trainable parameters × 4 bytes per report
    assert full[0] > lora[0]  # gradients and AdamW state of the whole encoder
    assert top2[1] < lora[1] / 2 and head[1] < 1e6  # (a 64-label head's per-sample gradients: 0.2 MB)
    assert reports_per_pass(TrainConfig(mode="full", batch_size=8, memory_budget_gb=None, **kw), MINILM) == 8
    assert reports_per_pass(TrainConfig(mode="dp-lora", epsilon=1.0, physical_batch_size=3, **kw), MINILM) == 3


@pytest.mark.parametrize("mode,top", [("full", 0), ("lora", 0), ("dp-lora", 2), ("dp-full", 1), ("dp-head", 0)])
def test_trainable_parameter_count_is_the_models(mode, top):
    """The estimate counts trainable parameters from the encoder config alone: exactly the model's (64 labels)."""
    from radpriv.dp.train import _trainable_params

    _needs_encoder()
    cfg = TrainConfig(mode=mode, top_layers=top, **({"epsilon": 1.0} if mode.startswith("dp") else {}))
    _, model = build_model(cfg, str(ENC), 64)
    params = [p for p in model.parameters() if p.requires_grad]
    assert _trainable_params(cfg, MINILM) == (sum(p.numel() for p in params), max(p.numel() for p in params))


def test_budget_too_small_for_one_report_says_what_to_do():
    cfg = TrainConfig(mode="dp-lora", epsilon=1.0, max_length=256, max_chunks=4, memory_budget_gb=0.2)
    fixed, per = estimate_pass_bytes(cfg, MINILM)
    need = f"{(fixed + per) / 1e9:.2f} GB"
    with pytest.raises(ValueError) as e:
        reports_per_pass(cfg, MINILM)
    msg = str(e.value)
    for part in ("memory_budget_gb=0.2 is too small for one report", "dp-lora", "4 window(s) of 256 tokens",
                 f"needs about {need}", "Raise memory_budget_gb to at least 0.7", "lower max_length or max_chunks",
                 "memory_budget_gb=None"):
        assert part in msg, (part, msg)
    # the same settings with the windows of short reports fit
    assert reports_per_pass(cfg, MINILM, n_windows=1, tokens=64) >= 1


@pytest.mark.parametrize("budget", [0, -1.0, float("nan")])
def test_budget_must_be_positive(budget):
    with pytest.raises(ValueError, match="memory_budget_gb must be positive"):
        TrainConfig(memory_budget_gb=budget)


def test_budget_roundtrips_json():
    for b in (None, 2.5):
        c = TrainConfig(mode="dp-lora", epsilon=1.0, memory_budget_gb=b)
        assert TrainConfig.from_json(c.to_json()).memory_budget_gb == b


def test_train_refuses_a_budget_too_small_before_training():
    _needs_encoder()
    cfg = TrainConfig(mode="full", epochs=1, batch_size=4, max_length=32, stride=8, memory_budget_gb=0.05)
    with pytest.raises(ValueError, match="memory_budget_gb=0.05 is too small for one report"):
        train(cfg, str(ENC), TEXTS, Y)


def test_grid_key_leaves_the_budget_out():
    """The budget changes how many reports go through the encoder at once, not the result (up to float rounding,
    see below): the grid's cache key leaves it out, so a run cached under another budget is reused."""
    from radpriv.dp import grid

    _needs_encoder()
    s = grid.Split(TEXTS, Y)
    keys = {grid.run_key(TrainConfig(mode="lora", memory_budget_gb=b), str(ENC), s, s, s) for b in (None, 1.0, 4.0)}
    assert len(keys) == 1
    assert grid.run_key(TrainConfig(mode="lora", physical_batch_size=4), str(ENC), s, s, s) not in keys
    parts = grid.run_key_parts(TrainConfig(mode="lora"), str(ENC), s, s, s)
    assert "memory_budget_gb" not in parts["config"] and "version" not in parts["config"]


# ---------------------------------------------------------------------------------------------- same model


def _budget_for(cfg: TrainConfig, reports: int, n_windows: int, tokens: int) -> float:
    """A budget (GB) that lets exactly ``reports`` reports through at once."""
    fixed, per = estimate_pass_bytes(cfg, MINILM, n_windows, tokens)
    return (fixed + (reports + 0.5) * per) / 1e9


@pytest.mark.parametrize("mode,top", [("full", 0), ("lora", 2)])
def test_gradient_accumulation_trains_the_same_model(enc_without_dropout, monkeypatch, mode, top):
    """Non-private: a budget that lets 2 reports through at once splits each batch of 6 into micro-batches whose
    gradients add up to the batch's mean-loss gradient: the same weights and logits as one pass per batch (up to
    float rounding), and the same loss history."""
    import radpriv.dp.train as T

    texts, y = TEXTS * 6, np.tile(Y, (6, 1))
    kw = dict(mode=mode, top_layers=top, epochs=2, batch_size=6, max_length=32, stride=8, max_chunks=3, lr=1e-3)
    tok, _ = build_model(TrainConfig(**kw), enc_without_dropout, 2)
    win = windows(tok, texts, 32, 8, 3)
    n_windows, tokens = max(len(c) for c in win.chunks), max(len(c) for r in win.chunks for c in r)
    sizes = []
    real_forward = T.ReportClassifier.forward if not top else T.TopClassifier.forward

    def counting(self, *a, **k):
        out = real_forward(self, *a, **k)
        if self.training:
            sizes.append(len(out))
        return out

    monkeypatch.setattr(T.TopClassifier if top else T.ReportClassifier, "forward", counting)
    runs = {}
    for budget in (None, _budget_for(TrainConfig(**kw), 2, n_windows, tokens)):
        sizes.clear()
        res = train(TrainConfig(**kw, memory_budget_gb=budget), enc_without_dropout, texts, y)
        runs[budget is None] = (res, list(sizes))
    (whole, whole_sizes), (split, split_sizes) = runs[True], runs[False]
    assert whole.physical_batch == 6 and split.physical_batch == 2
    assert max(whole_sizes) == 6 and max(split_sizes) == 2 and sum(split_sizes) == sum(whole_sizes) == 48
    assert split.memory["bytes_per_report"] > 0 and split.memory["windows"] == n_windows
    torch.manual_seed(0)
    init = build_model(whole.config, enc_without_dropout, 2)[1].state_dict()
    sw, ss = whole.model.state_dict(), split.model.state_dict()
    assert not torch.allclose(sw["head.weight"], init["head.weight"], atol=1e-4)  # training really moved it
    # each tensor's difference between the two runs, relative to how far training moved it. Attention key biases
    # are left out: their exact gradient is zero (softmax ignores a shift shared by all keys), so AdamW, which
    # divides by the gradient's RMS, turns float rounding into full-size steps in both runs alike
    rel = {n: float((sw[n] - ss[n]).norm() / (sw[n] - init[n]).norm()) for n in sw
           if not torch.equal(sw[n], init[n]) and not n.endswith("attention.self.key.bias")}
    assert any(n.startswith("encoder.") for n in rel) and "head.weight" in rel
    worst = max(rel, key=rel.get)
    assert rel[worst] < 2e-3, (worst, rel[worst])
    lw, ls = (predict_logits(r.model, windows(tok, TEXTS, 32, 8, 3), tok.pad_token_id) for r in (whole, split))
    np.testing.assert_allclose(lw, ls, rtol=1e-3, atol=5e-4)
    assert [h["train_loss"] for h in whole.history] == pytest.approx([h["train_loss"] for h in split.history],
                                                                      rel=1e-5)


def test_budget_sets_the_dp_physical_batch(monkeypatch):
    """DP: the budget caps the physical batches a Poisson batch is split into (the logical batch is unchanged),
    and the run records the physical batch it used."""
    import radpriv.dp.train as T

    _needs_encoder()
    sizes = []
    real_collate = T.collate
    monkeypatch.setattr(T, "collate", lambda win, idx, pad: (sizes.append(len(idx)), real_collate(win, idx, pad))[1])
    kw = dict(mode="dp-lora", epsilon=50.0, epochs=1, batch_size=12, max_length=32, stride=8, max_chunks=3)
    budget = _budget_for(TrainConfig(**kw), 3, 3, 32)
    res = train(TrainConfig(**kw, memory_budget_gb=budget), str(ENC), TEXTS * 6, np.tile(Y, (6, 1)))
    assert res.physical_batch == 3 and sizes and max(sizes) <= 3
    assert res.accounting["sample_rate"] == pytest.approx(12 / 24)  # the logical (Poisson) batch is unchanged


def test_prediction_batches_fit_the_budget(monkeypatch):
    """The no-grad loops lower their batch under a small budget and give the same logits."""
    import radpriv.dp.train as T

    _needs_encoder()
    cfg = TrainConfig(mode="lora", max_length=32, stride=8, max_chunks=3)
    torch.manual_seed(0)
    tok, model = build_model(cfg, str(ENC), 2)
    win = windows(tok, TEXTS * 4, 32, 8, 3)
    assert T._inference_batch(MINILM, 256, 4, 32, 4.0) == 32  # the default budget leaves the default batch alone
    small = T._inference_batch(MINILM, 32, 1, 32, 0.01)
    assert 1 <= small < 16
    np.testing.assert_allclose(predict_logits(model, win, tok.pad_token_id, memory_budget_gb=0.01),
                               predict_logits(model, win, tok.pad_token_id, memory_budget_gb=None), atol=1e-5)
    seen = []
    real = T.collate
    monkeypatch.setattr(T, "collate", lambda w, idx, pad: (seen.append(len(idx)), real(w, idx, pad))[1])
    T.trunk_states(model, win, tok.pad_token_id, 2, memory_budget_gb=0.01)
    assert max(seen) < 16


# ---------------------------------------------------------------------------------------------- a real-length run

#: what a process holds beyond the step the budget covers: a second copy of the encoder (train() loads its own),
#: tokenizer and tokenized reports, opacus and the PRV accountant's noise search, allocator slack
RSS_MARGIN_GB = 0.8  # measured: 2.16 and 2.30 GB grown. (Inside the full suite it once read 4.3 GB: ru_maxrss then
# carried the pytest parent's peak across fork + exec; the child now reads its own VmHWM.)

_CHILD = r"""
import gc, json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from radpriv.data.synthetic import generate
from radpriv.dp.train import TrainConfig, build_model, estimate_pass_bytes, train
from radpriv.kernel import peak_rss_bytes
from radpriv.models import registry

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

args = json.loads(sys.argv[1])
enc = str(registry.get_model("minilm-l6").local_path)
# CT-RATE-length reports: synthetic CT reports (~1,500 characters) joined in twos and threes: ~2,000-4,500 characters
base = generate("ct", n=80, seed=0, canaries=False)["text"].astype(str).tolist()
texts = [base[i] + " " + base[i + 1] + (" " + base[i + 2] if i % 6 == 0 else "") for i in range(args["n"])]
texts = [t[: 1400 + (i * 97) % 1500] if i % 6 else t for i, t in enumerate(texts)]
Y = np.random.default_rng(0).integers(0, 2, (len(texts), 18)).astype(np.float32)
cfg = TrainConfig(**args["cfg"])
tok, model = build_model(cfg, enc, Y.shape[1])  # the loaded model: the baseline
baseline = rss()
res = train(cfg, enc, texts, Y)
peak = peak_rss_bytes()  # VmHWM: ru_maxrss would carry the pytest parent's peak across fork + exec
print("RESULT " + json.dumps({"baseline": baseline, "peak": peak, "physical_batch": res.physical_batch,
                              "memory": res.memory, "chars": float(np.mean([len(t) for t in texts])),
                              "epsilon": res.epsilon}))
"""


@pytest.mark.slow
def test_real_length_dp_lora_run_stays_within_its_budget():
    """DP-LoRA at Study 3's default settings (256-token windows × 4, Poisson batches of 32) on 64 reports of
    CT-RATE length in a fresh process: its peak resident memory stays below the model-loaded baseline + the
    budget + a stated margin, while the same step over a whole batch of 32 would need several times the budget
    (unbudgeted, this configuration held 15.2 GB on real CT reports)."""
    _needs_encoder()
    budget = 2.0
    cfg = {"mode": "dp-lora", "epsilon": 8.0, "epochs": 1, "batch_size": 32, "max_length": 256, "stride": 32,
           "max_chunks": 4, "memory_budget_gb": budget}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({"cfg": cfg, "n": 64})], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[len("RESULT "):])
    assert 1900 < out["chars"] < 3000 and out["memory"]["windows"] == 4 and out["memory"]["tokens"] == 256
    # the cap is really active: a whole Poisson batch at once is estimated well beyond the budget
    whole = out["memory"]["fixed_bytes"] + 32 * out["memory"]["bytes_per_report"]
    assert whole > 3 * budget * 1e9 and 1 <= out["physical_batch"] < 32
    grown = out["peak"] - out["baseline"]
    print(f"real-length dp-lora: baseline {out['baseline'] / 1e9:.2f} GB, peak {out['peak'] / 1e9:.2f} GB, grown "
          f"{grown / 1e9:.2f} GB (budget {budget} GB + margin {RSS_MARGIN_GB} GB), {out['physical_batch']} reports per "
          f"pass, whole batch of 32 estimated at {whole / 1e9:.1f} GB")
    assert grown < (budget + RSS_MARGIN_GB) * 1e9, (grown / 1e9, out)
    assert out["epsilon"] <= 8.0
