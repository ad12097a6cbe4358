"""DP-LoRA training on the real MiniLM encoder (tiny data): windows cover whole reports, per-sample
gradients over windows are exact, clipping holds, one DP step touches only LoRA and head weights."""

import math

import numpy as np
import pytest
import torch
import warnings

from radpriv.dp.train import TrainConfig, build_model, collate, predict_proba, train, windows
from radpriv.models import registry

ENC = registry.get_model("minilm-l6").local_path
TEXTS = ["No pleural effusion. Heart size normal.",
         "Large right pleural effusion with adjacent atelectasis. " * 12,  # long: several windows
         "Cardiomegaly. Small left effusion.", "Lungs are clear."]
Y = np.array([[0, 0], [1, 1], [1, 0], [0, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def tok():
    if not ENC.is_dir():
        pytest.skip("minilm-l6 not fetched (make models-test)")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(ENC), local_files_only=True)


def test_windows_cover_the_whole_report(tok):
    win = windows(tok, TEXTS, max_length=32, stride=8, max_chunks=50)
    ids = tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    chunks = win.chunks[1]
    assert len(chunks) > 3 and all(len(c) <= 32 for c in chunks)
    body = [c[1:-1] for c in chunks]
    assert body[0][:10] == ids[:10] and body[-1][-10:] == ids[-10:]  # first and last tokens are read
    rebuilt = body[0] + [t for b in body[1:] for t in b[8:]]  # drop the overlap of each later window
    assert rebuilt == ids
    assert win.truncated == 0 and len(win.chunks[0]) == 1


def test_truncation_is_counted(tok):
    win = windows(tok, TEXTS, max_length=32, stride=8, max_chunks=2)
    assert win.truncated == 1 and len(win.chunks[1]) == 2


def test_collate_shapes_and_masks(tok):
    win = windows(tok, TEXTS, max_length=32, stride=8, max_chunks=3)
    b = collate(win, [0, 1], tok.pad_token_id)
    assert b["input_ids"].shape == (2, 3, 32)
    assert b["attention_mask"][0, 1:].sum() == 0  # report 0 has one window: the others are padding
    assert b["position_ids"][1, 2, 5] == 5 and b["token_type_ids"].abs().sum() == 0


def test_sparse_windows_give_the_dense_result(tok):
    """Non-private models encode a window index only for the reports that have it (and trim trailing padding);
    the logits equal the dense path that DP-SGD uses, on a batch mixing one- and many-window reports."""
    cfg = TrainConfig(mode="lora", max_length=32, stride=8, max_chunks=6)
    torch.manual_seed(0)
    _, model = build_model(cfg, str(ENC), 2)
    assert model.dense is False and build_model(TrainConfig(mode="dp-lora", epsilon=1.0), str(ENC), 2)[1].dense
    model.eval()
    x = collate(windows(tok, TEXTS, cfg.max_length, cfg.stride, cfg.max_chunks), [0, 1, 2, 3], tok.pad_token_id)
    assert x["input_ids"].shape[1] > 1 and x["attention_mask"][:, -1, 0].sum() < 4  # some reports lack window K
    with torch.no_grad():
        sparse = model(**x)
        model.dense = True
        dense = model(**x)
    assert torch.allclose(sparse, dense, atol=1e-5)


@pytest.mark.parametrize("kw,msg", [
    ({"mode": "dp-lora"}, "needs a finite epsilon"),
    ({"mode": "lora", "epsilon": 1.0}, "non-private: epsilon must be inf"),
    ({"mode": "dp-full", "epsilon": 1.0, "grad_sample_mode": "ghost", "max_chunks": 4}, "needs max_chunks=1"),
    ({"mode": "sgd"}, "is not one of"),
    ({"physical_batch_size": 0}, "physical_batch_size must be positive, got 0"),
    ({"stride": 300, "max_length": 256}, "stride must be in"),
])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_config_roundtrips_json():
    c = TrainConfig(mode="dp-lora", epsilon=1.0, lora_targets=["query"])
    assert TrainConfig.from_json(c.to_json()) == c
    assert math.isinf(TrainConfig.from_json(TrainConfig().to_json()).epsilon)


def test_mode_config_applies_per_mode_overrides():
    from radpriv.dp.grid import mode_config

    base = {"epochs": 3, "batch_size": 32}
    by_mode = {"full": {"batch_size": 8, "lr": 2e-4}}
    full = mode_config(base, by_mode, "full", seed=1)
    assert (full.batch_size, full.lr, full.seed, full.epochs) == (8, 2e-4, 1, 3)
    dp = mode_config(base, by_mode, "dp-lora", epsilon=1.0)
    assert dp.batch_size == 32 and dp.epsilon == 1.0
    with pytest.raises(ValueError, match=r"train_by_mode names unknown modes \['ful'\]"):
        mode_config(base, {"ful": {"batch_size": 8}}, "full")


def _private(cfg, model, loader, noise=0.0):
    from opacus import PrivacyEngine
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PrivacyEngine().make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=noise,
                                            max_grad_norm=cfg.max_grad_norm, poisson_sampling=False)


def test_per_sample_gradients_sum_over_windows(tok):
    """opacus's per-sample gradient of a multi-window report equals that report's own gradient."""
    from torch.utils.data import DataLoader, TensorDataset
    from radpriv.dp.train import _per_sample_bce
    cfg = TrainConfig(mode="dp-lora", epsilon=1.0, max_length=32, stride=8, max_chunks=6, lora_dropout=0.0)
    torch.manual_seed(0)
    _, model = build_model(cfg, str(ENC), 2)
    ref = {n: p.detach().clone() for n, p in model.state_dict().items()}
    win = windows(tok, TEXTS, cfg.max_length, cfg.stride, cfg.max_chunks)
    loader = DataLoader(TensorDataset(torch.arange(4)), batch_size=4)
    gsm, opt, _ = _private(cfg, model, loader)
    x = collate(win, [0, 1, 2, 3], tok.pad_token_id)
    _per_sample_bce(gsm(**x), torch.tensor(Y)).mean().backward()
    name, p = next((n, p) for n, p in gsm.named_parameters() if p.requires_grad and "lora_A" in n)
    per_sample = p.grad_sample.clone()
    # the same report alone through a fresh, unwrapped copy of the model
    _, alone = build_model(cfg, str(ENC), 2)
    alone.load_state_dict(ref)
    x1 = collate(win, [1], tok.pad_token_id)
    (_per_sample_bce(alone(**x1), torch.tensor(Y[1:2])).sum() / 4).backward()  # mean over 4 → 1/4 each
    q = dict(alone.named_parameters())[name.removeprefix("_module.")]
    assert x["input_ids"].shape[1] > 1
    assert torch.allclose(per_sample[1], q.grad, atol=1e-6, rtol=1e-4)


def test_clipping_bounds_each_report(tok):
    from torch.utils.data import DataLoader, TensorDataset
    from radpriv.dp.train import _per_sample_bce
    cfg = TrainConfig(mode="dp-lora", epsilon=1.0, max_length=32, stride=8, max_chunks=4, max_grad_norm=0.01)
    _, model = build_model(cfg, str(ENC), 2)
    win = windows(tok, TEXTS, cfg.max_length, cfg.stride, cfg.max_chunks)
    gsm, opt, _ = _private(cfg, model, DataLoader(TensorDataset(torch.arange(4)), batch_size=1))
    for i in range(4):
        opt.zero_grad()
        (_per_sample_bce(gsm(**collate(win, [i], tok.pad_token_id)), torch.tensor(Y[i:i + 1])) * 100).mean().backward()
        raw = torch.sqrt(sum((p.grad_sample ** 2).sum() for p in opt.params))
        opt.pre_step()  # clip and accumulate (σ=0: no noise)
        clipped = torch.sqrt(sum((p.summed_grad ** 2).sum() for p in opt.params))
        assert raw > cfg.max_grad_norm  # the bound is really exercised
        assert clipped <= cfg.max_grad_norm * (1 + 1e-5)


def test_one_dp_step_changes_only_lora_and_head():
    cfg = TrainConfig(mode="dp-lora", epsilon=50.0, epochs=1, batch_size=4, max_length=32, stride=8, lr=1e-2)
    before = {n: p.detach().clone() for n, p in build_model(cfg, str(ENC), 2)[1].named_parameters()}
    torch.manual_seed(0)
    res = train(cfg, str(ENC), TEXTS, Y)
    after = dict(res.model.named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    # LoRA B starts at zero: a step moves it; base weights never move
    assert any("lora_B" in n for n in changed) and any(n.startswith("head.") for n in changed)
    assert all(("lora_" in n) or n.startswith("head.") for n in changed), sorted(changed)[:5]
    assert res.epsilon <= 50.0 and res.accounting["ok"]


@pytest.mark.slow
def test_dp_lora_learns_a_separable_task():
    """Guards against the opacus+peft failure where DP-LoRA trains with normal-looking loss but learns nothing."""
    rng = np.random.default_rng(0)
    pos = ["Moderate left pleural effusion.", "Small bilateral pleural effusions.", "Right pleural effusion noted."]
    neg = ["No pleural effusion.", "Lungs are clear.", "No acute cardiopulmonary process."]
    texts = [rng.choice(pos if i % 2 else neg) for i in range(120)]
    y = np.array([[i % 2] for i in range(120)], dtype=np.float32)
    cfg = TrainConfig(mode="dp-lora", epsilon=8.0, epochs=4, batch_size=24, max_length=32, stride=8, lr=5e-3)
    res = train(cfg, str(ENC), texts, y)
    p = predict_proba(res, pos + neg)[:, 0]
    assert p[:3].min() > p[3:].max(), p


@pytest.mark.slow
def test_distributed_dp_two_cpu_processes(tmp_path):
    """torchrun with 2 gloo processes: opacus's distributed DP wrapper keeps the ranks in step."""
    import json
    import subprocess
    import sys
    cfg = {"mode": "dp-lora", "epsilon": 8.0, "epochs": 1, "batch_size": 8, "max_length": 32, "stride": 8,
           "max_chunks": 2}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "radpriv.dp.launch", "--dataset", "synthetic_cxr", "--limit", "32", "--config", json.dumps(cfg),
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == 2 and r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-6)
    assert 0 < r0["epsilon"] <= 8.0 and r0["accounting"]["ok"]
    assert (tmp_path / "model.pt").exists()


def test_split_poisson_batches_train_the_same_model(enc_without_dropout, monkeypatch):
    """A Poisson batch split into physical batches of 2 (to bound memory) gives the model one big batch gives:
    the clipped per-report gradients are summed over the pieces before the one noisy step. Ghost clipping
    (two backward passes per piece, gradients kept across pieces) is the delicate case; hooks mode shares
    the same loader wrapper."""
    import radpriv.dp.train as T
    texts, y = TEXTS * 6, np.tile(Y, (6, 1))  # 24 reports, batch 6: q = 0.25 keeps the noise search short
    sizes = []
    real_collate = T.collate
    monkeypatch.setattr(T, "collate", lambda win, idx, pad: (sizes.append(len(idx)), real_collate(win, idx, pad))[1])
    runs = {}
    for physical in (6, 2):
        sizes.clear()
        cfg = TrainConfig(mode="dp-full", epsilon=2.0, epochs=1, batch_size=6, physical_batch_size=physical,
                          max_length=32, stride=8, max_chunks=1, grad_sample_mode="ghost", lr=1e-2)
        res = train(cfg, enc_without_dropout, texts, y)
        runs[physical] = (res, list(sizes))
    (big, big_sizes), (small, small_sizes) = runs[6], runs[2]
    assert max(small_sizes) == 2 and max(big_sizes) > 2 and sum(small_sizes) == sum(big_sizes)
    assert big.accounting["steps"] == small.accounting["steps"] and big.epsilon == small.epsilon
    torch.manual_seed(0)  # train() seeds, then builds: the same initial weights
    init = build_model(big.config, enc_without_dropout, y.shape[1])[1].state_dict()
    sb, ss = big.model.state_dict(), small.model.state_dict()
    assert not torch.allclose(sb["head.weight"], init["head.weight"], atol=1e-3)  # training really moved it
    for n in sb:
        assert torch.allclose(sb[n], ss[n], atol=1e-5, rtol=1e-4), n
