"""A causal LM fine-tuned on report text with LoRA, without or with DP-SGD, for the canary audit.

Model: any local Hugging Face causal LM; by default SmolLM2-135M-Instruct read from the bundled GGUF
(``smollm2-135m``) -- transformers dequantizes the GGUF tensors to float32. The dequantized model is
saved once under ``$RADPRIV_CACHE/audit/`` (keyed on the GGUF's sha256) so later loads are fast.

CPU budget trick (exact, not an approximation): LoRA adapters go on the **top** ``top_layers`` decoder
layers only. The layers below are frozen and receive no gradient, so their output for a training
sequence never changes: it is computed **once** and cached, and every epoch runs only the top layers,
the final norm and the (frozen) LM head. Gradients, per-sample clipping and noise are exactly those of
training the full LoRA model. DP-SGD is opacus (Poisson sampling, ``make_private_with_epsilon``, PRV
accountant, ``grad_sample_mode="hooks"``): peft's LoRA ``lora_A``/``lora_B`` are plain ``nn.Linear``
modules, which opacus hooks; every step checks that each trainable parameter received a per-sample
gradient, and the result records how far the LoRA weights moved (``lora_B`` starts at zero).

Training text: by default the ``IMPRESSION:`` section of each report to the end (where the synthetic
corpus puts its canaries), truncated from the left to ``max_length`` tokens, plus EOS.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CANARY_PREFIX = "Internal record number"


@dataclass
class LMConfig:
    """One causal-LM fine-tuning run. Validated on creation; round-trips to JSON."""

    dp: bool = field(default=False, metadata={"help": "train with DP-SGD (opacus)"})
    epsilon: float = field(default=math.inf, metadata={"help": "target ε when dp (finite, > 0)"})
    delta: float | None = field(default=None, metadata={"help": "δ; default 1/(10·N)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "per-sample clipping norm C (DP only)"})
    epochs: int = field(default=4, metadata={"help": "passes over the training sequences"})
    batch_size: int = field(default=8, metadata={"help": "(expected, under DP Poisson sampling) batch size"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    max_length: int = field(default=64, metadata={"help": "tokens per training sequence (left-truncated)"})
    section: str = field(default="IMPRESSION:", metadata={"help": "train on the text from this marker on ('' = whole report)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_targets: tuple = field(default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                                metadata={"help": "LoRA target modules"})
    top_layers: int = field(default=6, metadata={"help": "LoRA on the last N decoder layers (the rest frozen and cached)"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self):
        if self.dp and not (0 < self.epsilon < math.inf):
            raise ValueError(f"dp=True needs a finite epsilon > 0, got {self.epsilon}")
        for name in ("epochs", "batch_size", "max_length", "lora_r", "top_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LMConfig.{name} must be positive, got {getattr(self, name)}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def label(self) -> str:
        return f"DP ε={self.epsilon:g}" if self.dp else "non-private"

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["epsilon"] = None if math.isinf(self.epsilon) else self.epsilon
        return json.dumps(d, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_causal_lm(model: str = "smollm2-135m"):
    """(tokenizer, model) in float32, eval mode. ``model``: a registry name or a local HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from radpriv import paths
    from radpriv.models import registry

    p = Path(model)
    if p.is_dir():
        src, kw = p, {}
    else:
        spec = registry.get_model(model)
        path = spec.local_path
        if path is None or not path.exists():
            raise FileNotFoundError(f"model {model!r} is not fetched ({path}); run `radpriv models fetch {model}`")
        if spec.kind == "gguf":
            cached = paths.cache_dir() / "audit" / f"{spec.name}-{(spec.sha256 or 'local')[:12]}-hf"
            if (cached / "config.json").exists() and (cached / "tokenizer_config.json").exists():
                src, kw = cached, {}
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                    lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
                tmp = cached.with_name(cached.name + ".partial")
                tmp.mkdir(parents=True, exist_ok=True)
                # transformers refuses save_pretrained on a GGUF-loaded model; the tensors are plain float32
                from safetensors.torch import save_file

                sd = {k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"}
                save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
                cfg = lm.config.to_dict()
                cfg.pop("quantization_config", None)
                (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
                tok.save_pretrained(tmp)
                if cached.exists():
                    import shutil

                    shutil.rmtree(cached)
                tmp.rename(cached)
                src, kw = cached, {}
        else:
            src, kw = path, {}
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True, **kw)
    lm = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, dtype=torch.float32, **kw)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    lm.eval()
    return tok, lm


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def section_text(text: str, section: str) -> str:
    i = text.find(section) if section else -1
    return (text[i:] if i >= 0 else text).strip()


def encode_sequences(tok, texts, max_length: int, section: str = "IMPRESSION:"):
    """Right-padded ids and labels (-100 on padding); sequences keep their END (left truncation)."""
    rows = []
    for t in texts:
        ids = tok(section_text(t, section), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(ids[-max_length:])
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(r)] = torch.tensor(r)
    return ids, labels


# ---------------------------------------------------------------------------------------------
# trunk / top split
# ---------------------------------------------------------------------------------------------
def _inner(lm):
    """The LlamaForCausalLM-like module under an optional peft wrapper."""
    return lm.base_model.model if hasattr(lm, "peft_config") else lm


class TopLM(nn.Module):
    """Decoder layers ``start:``, final norm and LM head of a causal LM, fed cached hidden states."""

    def __init__(self, lm, start: int):
        super().__init__()
        inner = _inner(lm)
        self.layers = nn.ModuleList(list(inner.model.layers)[start:])
        self.norm = inner.model.norm
        self.rotary = inner.model.rotary_emb
        self.lm_head = inner.lm_head

    def forward(self, hidden):
        pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        pe = self.rotary(hidden, position_ids=pos)
        h = hidden
        for layer in self.layers:  # attention_mask=None: causal SDPA; padding is on the right and masked in the loss
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
        return self.lm_head(self.norm(h))


_TRUNK_CACHE: dict = {}


def cached_trunk_hidden(base_lm, lm, ids: torch.Tensor, start: int) -> torch.Tensor:
    """:func:`trunk_hidden`, memoised per (base model, start layer, ids): every run fine-tuned from the same
    base with LoRA above ``start`` shares the frozen layers, so their outputs are computed once."""
    import hashlib

    key = (id(base_lm), start, tuple(ids.shape), hashlib.sha256(ids.numpy().tobytes()).hexdigest())
    if key not in _TRUNK_CACHE:
        if len(_TRUNK_CACHE) > 8:
            _TRUNK_CACHE.clear()
        _TRUNK_CACHE[key] = trunk_hidden(lm, ids, start)
    return _TRUNK_CACHE[key]


@torch.no_grad()
def trunk_hidden(lm, ids: torch.Tensor, start: int, batch_size: int = 16) -> torch.Tensor:
    """Hidden states after decoder layers ``[0, start)`` (frozen), for right-padded ``ids``."""
    inner = _inner(lm)
    outs = []
    for i in range(0, len(ids), batch_size):
        x = ids[i: i + batch_size]
        h = inner.model.embed_tokens(x)
        pos = torch.arange(x.shape[1]).unsqueeze(0)
        pe = inner.model.rotary_emb(h, position_ids=pos)
        for layer in list(inner.model.layers)[:start]:
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
        outs.append(h)
    return torch.cat(outs)


def per_sample_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy per sequence (padding ignored)."""
    lg, lb = logits[:, :-1], labels[:, 1:]
    ce = nn.functional.cross_entropy(lg.transpose(1, 2), lb, ignore_index=-100, reduction="none")
    return ce.sum(1) / (lb != -100).sum(1).clamp(min=1)


@torch.no_grad()
def _eval_loss(top: nn.Module, H: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> float:
    top.eval()
    tot, n = 0.0, 0
    for i in range(0, len(H), batch_size):
        lb = labels[i: i + batch_size]
        ce = per_sample_lm_loss(top(H[i: i + batch_size]), lb)
        w = (lb[:, 1:] != -100).sum(1)
        tot += float((ce * w).sum()); n += int(w.sum())
    return tot / max(n, 1)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass
class LMResult:
    config: LMConfig
    model: nn.Module          # the peft-wrapped causal LM (LoRA weights trained)
    tokenizer: object
    history: list[dict]
    epsilon: float
    accounting: dict
    seconds: float
    n_train: int
    lora_b_norm: float        # ‖lora_B‖ after training (0 at initialisation): proof the adapters moved
    per_sample_grads_ok: bool | None


def train_lm(cfg: LMConfig, train_texts, val_texts=None, base=None, model: str = "smollm2-135m",
             progress: bool = False) -> LMResult:
    """LoRA fine-tuning of a causal LM on ``train_texts`` (optionally DP-SGD); ``base``: a loaded
    (tokenizer, model) pair to reuse (it is deep-copied, never modified)."""
    from peft import LoraConfig, get_peft_model
    from radpriv.progress import tqdm

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    tok, lm0 = base if base is not None else load_causal_lm(model)
    lm = copy.deepcopy(lm0)
    n_layers = lm.config.num_hidden_layers
    start = max(0, n_layers - cfg.top_layers)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=list(cfg.lora_targets), layers_to_transform=list(range(start, n_layers)))
    lm = get_peft_model(lm, lcfg)
    t0 = time.time()
    ids, labels = encode_sequences(tok, train_texts, cfg.max_length, cfg.section)
    H = cached_trunk_hidden(lm0, lm, ids, start)
    top = TopLM(lm, start)
    trainable = [p for p in top.parameters() if p.requires_grad]
    n_trainable_total = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    if sum(p.numel() for p in trainable) != n_trainable_total:
        raise RuntimeError("some LoRA parameters lie outside the top layers; they would never be trained")
    n = len(ids)
    loader = DataLoader(TensorDataset(H, labels), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.AdamW(trainable, lr=cfg.lr)
    delta = cfg.delta or 1.0 / (10 * n)
    engine, eps, accounting, grads_ok = None, math.inf, {}, None
    if cfg.dp:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="prv", secure_mode=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top, opt, loader = engine.make_private_with_epsilon(
                module=top, optimizer=opt, data_loader=loader, target_epsilon=cfg.epsilon, target_delta=delta,
                epochs=cfg.epochs, max_grad_norm=cfg.max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks")
        grads_ok = True
    if val_texts is not None:
        vids, vlabels = encode_sequences(tok, val_texts, cfg.max_length, cfg.section)
        Hv = cached_trunk_hidden(lm0, lm, vids, start)
    history = [{"epoch": 0, **({"val_loss": _eval_loss(top, Hv, vlabels)} if val_texts is not None else {})}]
    for epoch in range(cfg.epochs):
        top.train()
        losses = []
        for h, lb in tqdm(loader, disable=not progress, desc=f"LM {cfg.label} epoch {epoch + 1}"):
            if len(lb) == 0:  # Poisson sampling can draw an empty batch
                continue
            opt.zero_grad()
            loss = per_sample_lm_loss(top(h), lb).mean()
            loss.backward()
            if cfg.dp:
                missing = [p for p in trainable if getattr(p, "grad_sample", None) is None]
                if missing:
                    grads_ok = False
                    raise RuntimeError(f"{len(missing)} trainable tensors received no per-sample gradient; "
                                       "opacus did not hook their modules")
            opt.step()
            losses.append(float(loss))
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val_texts is not None:
            rec["val_loss"] = _eval_loss(top, Hv, vlabels)
        history.append(rec)
    if engine is not None:
        from radpriv.dp.accounting import audit

        eps = float(engine.get_epsilon(delta))
        sigma, q, steps = opt.noise_multiplier, 1.0 / len(loader), len(loader) * cfg.epochs
        accounting = {"noise_multiplier": sigma, "sample_rate": q, "steps": steps, "delta": delta,
                      "target_epsilon": cfg.epsilon, **audit(sigma, q, steps, delta)}
        top.remove_hooks() if hasattr(top, "remove_hooks") else None
    lm.eval()
    bnorm = float(torch.sqrt(sum((p.detach() ** 2).sum() for name, p in lm.named_parameters() if "lora_B" in name)))
    return LMResult(cfg, lm, tok, history, eps, accounting, time.time() - t0, n, bnorm, grads_ok)


# ---------------------------------------------------------------------------------------------
# scoring and completion
# ---------------------------------------------------------------------------------------------
def canary_context(text: str, secret: str, section: str = "IMPRESSION:") -> str:
    """The training-sequence text that precedes ``secret`` (ends with the canary prefix)."""
    s = section_text(text, section)
    i = s.find(secret)
    if i < 0:
        raise ValueError(f"secret {secret} not found in the text")
    return s[:i].rstrip()


def control_context(text: str, section: str = "IMPRESSION:") -> str:
    """A held-out report's section followed by the canary prefix: where a never-inserted secret goes."""
    return section_text(text, section) + " " + CANARY_PREFIX


def lm_training_set(train_df, n_other: int | None, seed: int = 0):
    """Every canary-bearing training report plus ``n_other`` others drawn at random (None: all), shuffled.
    The canaries are always included: exposure measures memorisation of what was trained on (the
    never-inserted controls are the chance reference); it is not a membership draw."""
    import pandas as pd

    canary = train_df["canary"].fillna("").astype(str)
    others = train_df[canary == ""]
    if n_other is not None:
        others = others.loc[np.random.default_rng(seed).permutation(others.index.to_numpy())[: int(n_other)]]
    return pd.concat([train_df[canary != ""], others]).sample(frac=1.0, random_state=seed)


def audit_canaries(train_df, held_texts, n_controls: int, seed: int = 0) -> list[dict]:
    """The secrets to score: each inserted canary (``k`` = the number of training reports carrying it, read
    from the data) in the context of its first training report, and ``n_controls`` never-inserted secrets
    (``k`` = 0) in the contexts of the last held-out reports."""
    from radpriv.audit.exposure import random_secrets

    canary = train_df["canary"].fillna("").astype(str)
    rows = train_df[canary != ""]
    k_of = canary[canary != ""].value_counts()
    out = [{"secret": s, "k": int(k), "context": canary_context(rows[canary[canary != ""] == s].text.iloc[0], s)}
           for s, k in sorted(k_of.items(), key=lambda x: (x[1], x[0]))]
    held = list(held_texts)
    ctrl = random_secrets(n_controls, seed=seed + 1000, exclude=k_of.index) if n_controls else []
    out += [{"secret": s, "k": 0, "context": control_context(t)} for s, t in zip(ctrl, held[len(held) - n_controls:])]
    return out


@torch.no_grad()
def secret_logppl(lm, tok, context: str, secrets, batch_size: int = 64) -> np.ndarray:
    """−log P(" " + secret | context) (nats, summed over the secret's tokens) for each secret.
    The context is run once; its key/value cache is shared by every candidate."""
    lm.eval()
    c_ids = tok(context, add_special_tokens=False)["input_ids"]
    conts = []
    for s in secrets:
        full = tok(context + " " + s, add_special_tokens=False)["input_ids"]
        if full[: len(c_ids)] != c_ids:
            raise ValueError(f"tokenization of context + {s!r} does not extend the context's tokens")
        conts.append(full[len(c_ids):])
    L = len(conts[0])
    if any(len(c) != L for c in conts):
        raise ValueError("candidate secrets tokenize to different lengths; they must share one format")
    out = lm(input_ids=torch.tensor([c_ids]), use_cache=True)
    cache, first = out.cache if hasattr(out, "cache") else out.past_key_values, out.logits[0, -1]
    res = []
    for i in range(0, len(conts), batch_size):
        x = torch.tensor(conts[i: i + batch_size])
        c = copy.deepcopy(cache)
        c.batch_repeat_interleave(len(x))
        o = lm(input_ids=x, cache=c, use_cache=True)
        logits = torch.cat([first.expand(len(x), 1, -1), o.logits[:, :-1]], dim=1)
        lp = torch.log_softmax(logits.float(), -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        res.append((-lp.sum(1)).numpy())
    return np.concatenate(res)


@torch.no_grad()
def complete(lm, tok, context: str, max_new_tokens: int = 12) -> str:
    """Greedy continuation of ``context``."""
    lm.eval()
    x = tok(context, add_special_tokens=False, return_tensors="pt")
    out = lm.generate(**x, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True)


def exposure_table(lm, tok, canaries, n_candidates: int = 200, seed: int = 0, batch_size: int = 64):
    """Exposure of each canary. ``canaries``: dicts with ``secret``, ``context``, ``k`` (0 = never inserted)
    and any other columns to carry. Returns a DataFrame with log-perplexity, rank, sampled and
    extrapolated exposure."""
    import pandas as pd

    from radpriv.audit.exposure import exposure_from_scores, extrapolated_exposure, random_secrets, rank_of

    cands = random_secrets(n_candidates, seed=seed, exclude=[c["secret"] for c in canaries])
    rows = []
    for c in canaries:
        scores = secret_logppl(lm, tok, c["context"], [c["secret"], *cands], batch_size=batch_size)
        s, cs = float(scores[0]), scores[1:]
        rows.append({**{k: v for k, v in c.items() if k != "context"}, "logppl": s,
                     "median_candidate_logppl": float(np.median(cs)), "rank": rank_of(s, cs),
                     "n_candidates": len(cs), "exposure": exposure_from_scores(s, cs),
                     "max_exposure": math.log2(len(cs) + 1), "exposure_extrapolated": extrapolated_exposure(s, cs)})
    return pd.DataFrame(rows)
