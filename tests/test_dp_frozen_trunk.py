"""Frozen-trunk training on the real MiniLM encoder: the top layers over cached states of the layers below give
exactly the whole model's logits and per-report gradients; only the top layers and the head move; the head
modes train a linear layer over cached pooled features; the validation search keeps the best candidate."""

import warnings

import numpy as np
import pytest
import torch

from radpriv.dp import grid
from radpriv.dp.train import (TopClassifier, TrainConfig, build_model, collate, predict_cached, predict_logits, train,
                              trunk_states, windows)
from radpriv.models import registry

ENC = registry.get_model("minilm-l6").local_path
TEXTS = ["No pleural effusion. Heart size normal.",
         "Large right pleural effusion with adjacent atelectasis. " * 12,  # several windows
         "Cardiomegaly. Small left effusion.", "Lungs are clear."]
Y = np.array([[0, 0], [1, 1], [1, 0], [0, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def enc():
    if not ENC.is_dir():
        pytest.skip("minilm-l6 not fetched (make models-test)")
    return str(ENC)


@pytest.mark.parametrize("mode,top", [("lora", 2), ("full", 1), ("dp-lora", 3), ("head", 0)])
def test_top_over_cached_states_gives_the_whole_models_logits(enc, mode, top):
    cfg = TrainConfig(mode=mode, top_layers=top, max_length=32, stride=8, max_chunks=6,
                      **({"epsilon": 1.0} if mode.startswith("dp") else {}))
    torch.manual_seed(0)
    tok, model = build_model(cfg, enc, 2)
    with torch.no_grad():  # move LoRA B off zero and the head off its init, so the top layers really matter
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    win = windows(tok, TEXTS, cfg.max_length, cfg.stride, cfg.max_chunks)
    assert max(len(c) for c in win.chunks) > 1
    whole = predict_logits(model, win, tok.pad_token_id)
    cached = predict_cached(TopClassifier(model, top), trunk_states(model, win, tok.pad_token_id, top))
    np.testing.assert_allclose(cached, whole, atol=2e-5)


def test_per_report_gradient_over_cached_states_is_the_whole_models(enc):
    """opacus's per-report gradients through the cached path equal those through the whole (uncached) classifier,
    for every report of a batch (one of them spans several windows): the DP step computes the same thing."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from radpriv.dp.train import _per_sample_bce

    def per_sample(module, inputs):
        opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm, _, _ = PrivacyEngine().make_private(module=module, optimizer=opt, data_loader=DataLoader(
                TensorDataset(torch.arange(4)), batch_size=4), noise_multiplier=0.0, max_grad_norm=1.0,
                poisson_sampling=False)
        _per_sample_bce(gsm(**inputs), torch.tensor(Y)).mean().backward()
        return gsm

    cfg = TrainConfig(mode="dp-lora", epsilon=1.0, top_layers=2, max_length=32, stride=8, max_chunks=6)
    torch.manual_seed(0)
    tok, model = build_model(cfg, enc, 2)
    _no_dropout(model)  # train mode (opacus hooks only record in train mode), no dropout: one function both ways
    ref = {n: p.detach().clone() for n, p in model.state_dict().items()}
    win = windows(tok, TEXTS, cfg.max_length, cfg.stride, cfg.max_chunks)
    assert max(len(c) for c in win.chunks) > 1
    trunk = trunk_states(model, win, tok.pad_token_id, 2)
    _no_dropout(model)
    cached = per_sample(TopClassifier(model, 2), trunk.batch([0, 1, 2, 3]))
    _, whole = build_model(cfg, enc, 2)
    whole.load_state_dict(ref)
    _no_dropout(whole)
    names = {id(p): n for n, p in model.named_parameters()}
    whole_gsm = per_sample(whole, collate(win, [0, 1, 2, 3], tok.pad_token_id))
    want = {n.removeprefix("_module."): p.grad_sample for n, p in whole_gsm.named_parameters() if p.requires_grad}
    got = {names[id(p)]: p.grad_sample for p in cached.parameters() if p.requires_grad}
    assert set(got) == set(want) and any(".layer.4." in n for n in got) and any(n.startswith("head.") for n in got)
    for n in want:
        assert got[n].shape[0] == 4
        assert torch.allclose(got[n], want[n], atol=1e-7, rtol=1e-4), n


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.train()


@pytest.mark.parametrize("mode,top", [("dp-lora", 1), ("dp-head", 0)])
def test_frozen_trunk_run_moves_only_the_top_and_the_head(enc, mode, top):
    cfg = TrainConfig(mode=mode, epsilon=50.0, top_layers=top, epochs=2, batch_size=4, max_length=32, stride=8)
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in build_model(cfg, enc, 2)[1].named_parameters()}
    torch.manual_seed(0)
    res = train(cfg, enc, TEXTS, Y, TEXTS, Y)
    changed = {n for n, p in res.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("head.") for n in changed)
    if mode == "dp-head":
        assert all(n.startswith("head.") for n in changed), sorted(changed)
    else:  # LoRA of the last layer (index 5 of MiniLM-L6's six) only
        assert any("lora_B" in n for n in changed)
        assert all(n.startswith("head.") or ("lora_" in n and ".layer.5." in n) for n in changed), sorted(changed)
    assert res.epsilon <= 50.0 and res.accounting["ok"] and len(res.history) == 2


@pytest.mark.parametrize("kw,msg", [
    ({"mode": "lora", "top_layers": -1}, "top_layers must be >= 0, got -1"),
    ({"mode": "dp-head", "epsilon": 1.0, "grad_sample_mode": "ghost", "max_chunks": 1},
     "ghost clipping is supported for whole-encoder runs only"),
])
def test_frozen_trunk_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_more_top_layers_than_the_encoder_has_is_refused(enc):
    with pytest.raises(ValueError, match="top_layers 9 exceeds the encoder's 6 layers"):
        build_model(TrainConfig(mode="lora", top_layers=9), enc, 2)


def test_validation_search_keeps_the_best_candidate_and_says_so(enc):
    rng = np.random.default_rng(0)
    pos = ["Moderate left pleural effusion.", "Small bilateral pleural effusions.", "Right pleural effusion noted."]
    neg = ["No pleural effusion.", "Lungs are clear.", "No acute cardiopulmonary process."]

    def split(n, off):
        texts = [rng.choice(pos if (i + off) % 2 else neg) for i in range(n)]
        return grid.Split(texts, np.array([[(i + off) % 2] for i in range(n)], dtype=np.float32))

    tr, va, te = split(40, 0), split(12, 1), split(12, 0)
    cands = [{"lr": 1e-5}, {"lr": 0.05}]
    runs = grid.run_grid(tr, va, te, enc, ["dp-head"], [8.0], [0], n_resamples=20, progress=False,
                         base={"epochs": 20, "batch_size": 20, "max_length": 16, "stride": 4, "max_chunks": 1},
                         search={"dp-head": cands})
    row = runs.iloc[0]
    vals = [s["val_weighted_f1"] for s in row["search"]]
    assert row["candidates"] == 2 and row["chosen"] == cands[int(np.argmax(vals))]
    assert row["val_weighted_f1"] == max(vals)  # (ties: the first candidate, as max() keeps it)
    assert row["config"]["lr"] == row["chosen"]["lr"]  # the row's numbers are the chosen run's
    note = grid.search_note(runs)
    assert "among 2 candidates" in note and "not covered by the ε" in note
    with pytest.raises(ValueError, match=r"search names unknown modes \['dp-heads'\]"):
        grid.run_grid(tr, va, te, enc, ["dp-head"], [8.0], [0], search={"dp-heads": cands}, progress=False)
