"""Multi-label report classifiers: full fine-tuning, LoRA (peft), DP-LoRA (opacus DP-SGD), and the two
cheap rows every grid shows (TF-IDF + logistic regression; a DP linear model over TF-IDF features).

DP-SGD: Poisson sampling, ``PrivacyEngine.make_private_with_epsilon`` for a target ε at δ (default
below 1/N), per-sample clipping to ``max_grad_norm``, PRV accountant; each run's ε is audited with
``dp_accounting`` (:mod:`radpriv.dp.accounting`). Only LoRA adapters and the head are trainable in
DP-LoRA, so opacus computes per-sample gradients for those alone. Reports are read as overlapping
windows of ``max_length`` tokens pooled over the whole report (long CT reports exceed 512 tokens).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from radpriv.device import resolve_device
from radpriv.evaluate.scoring import choose_thresholds

MODES = ("full", "lora", "dp-lora", "dp-full", "head", "dp-head")


#: learning rates that trained well on the synthetic corpora (LoRA and DP need larger steps than full FT);
#: the head-only modes train a linear layer over frozen pooled features and need large steps
DEFAULT_LR = {"full": 1e-4, "lora": 4e-3, "dp-lora": 5e-3, "dp-full": 5e-4, "head": 1e-2, "dp-head": 2e-2}

#: default ``TrainConfig.memory_budget_gb``: with the interpreter, torch, the encoder, the tokenized data and the
#: frozen-trunk caches (~1-2 GB) a whole run stays well under 8 GB resident
DEFAULT_MEMORY_BUDGET_GB = 4.0


@dataclass
class TrainConfig:
    """A training run. Validated on creation; round-trips to JSON (``to_json``/``from_json``)."""

    mode: str = field(default="lora", metadata={"help": "full | lora | dp-lora | dp-full"})
    epsilon: float = field(default=math.inf, metadata={"help": "target ε for DP modes (inf: non-private)"})
    delta: float | None = field(default=None, metadata={"help": "δ; default 1/(10·N) < 1/N"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "per-sample clipping norm C"})
    epochs: int = field(default=3, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=32, metadata={"help": "expected (Poisson) batch size"})
    physical_batch_size: int | None = field(default=None, metadata={
        "help": "DP modes: most reports per forward/backward pass (opacus BatchMemoryManager); a larger Poisson "
                "batch is split and its clipped gradients summed before its one noisy step. None: batch_size. "
                "memory_budget_gb may lower it (the value used: TrainResult.physical_batch)"})
    lr: float | None = field(default=None, metadata={"help": "AdamW learning rate (None: DEFAULT_LR[mode])"})
    head_lr: float | None = field(default=None, metadata={"help": "learning rate of the head (None: max(lr, 1e-2))"})
    max_length: int = field(default=256, metadata={"help": "tokens per window (≤ the encoder's 512 positions)"})
    stride: int = field(default=32, metadata={"help": "tokens shared by consecutive windows"})
    max_chunks: int = field(default=4, metadata={"help": "windows per report; longer reports are truncated (counted)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_targets: tuple = field(default=("query", "value"), metadata={"help": "LoRA target modules"})
    top_layers: int = field(default=0, metadata={
        "help": "train only the top N encoder layers (LoRA or full, by mode) and the head: the layers below are "
                "frozen, so their output for a report never changes; it is computed once per report and every "
                "step runs only the top N layers (exact, not an approximation). 0: every layer trains. "
                "Ignored by the head modes, whose whole encoder is frozen"})
    pooling: str = field(default="mean", metadata={"help": "mean (tokens of all windows) | cls (mean of window CLS)"})
    grad_sample_mode: str = field(default="hooks", metadata={"help": "opacus per-sample gradients: hooks | ghost"})
    memory_budget_gb: float | None = field(default=DEFAULT_MEMORY_BUDGET_GB, metadata={
        "help": "memory (GB) one training step may use beyond the loaded model: activations of the reports in one "
                "forward/backward pass, their per-sample gradients (DP), gradients and optimizer state. The "
                "reports per pass are capped to fit it (estimate_pass_bytes, a calibrated upper bound): DP modes "
                "split a Poisson batch into physical batches, non-private modes accumulate gradients over "
                "micro-batches (the same step up to float rounding); encoding and prediction batches are capped "
                "too. The default keeps a whole run of the default profiles under 8 GB resident. None: no cap"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N"})
    version: str = field(default="", metadata={"help": "radpriv version (stamped)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {MODES}")
        if self.mode.startswith("dp") and not (0 < self.epsilon < math.inf):
            raise ValueError(f"mode {self.mode} needs a finite epsilon > 0, got {self.epsilon}")
        if not self.mode.startswith("dp") and not math.isinf(self.epsilon):
            raise ValueError(f"mode {self.mode} is non-private: epsilon must be inf, got {self.epsilon}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {self.pooling!r} is not mean or cls")
        if self.grad_sample_mode not in ("hooks", "ghost"):
            raise ValueError(f"grad_sample_mode {self.grad_sample_mode!r} is not hooks or ghost")
        if self.top_layers < 0:
            raise ValueError(f"top_layers must be >= 0, got {self.top_layers}")
        if self.grad_sample_mode == "ghost" and (self.top_layers or self.head_only):
            raise ValueError("ghost clipping is supported for whole-encoder runs only; use grad_sample_mode='hooks' "
                             "with top_layers or the head modes")
        if self.grad_sample_mode == "ghost" and self.max_chunks != 1:
            raise ValueError("ghost clipping computes one gradient norm per layer call: it needs max_chunks=1 "
                             "(hooks mode sums per-sample gradients over a report's windows correctly)")
        if self.physical_batch_size is None:
            self.physical_batch_size = self.batch_size
        for name in ("epochs", "batch_size", "physical_batch_size", "max_length", "lora_r", "max_chunks"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.stride < self.max_length - 2:
            raise ValueError(f"stride must be in [0, max_length-2), got {self.stride}")
        if self.memory_budget_gb is not None and not self.memory_budget_gb > 0:
            raise ValueError(f"memory_budget_gb must be positive (or None: no cap), got {self.memory_budget_gb}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        self.lora_targets = tuple(self.lora_targets)
        if self.lr is None:
            self.lr = DEFAULT_LR[self.mode]
        if self.head_lr is None:
            # the head is a fresh linear layer: it needs large steps whatever the encoder's rate (full
            # fine-tuning at 1e-4 with a 1e-3 head reached weighted F1 0.43 on synthetic CXR; 1e-2: 0.79)
            self.head_lr = max(self.lr, 1e-2)
        if not self.version:
            from radpriv import __version__

            self.version = __version__

    @property
    def private(self) -> bool:
        return self.mode.startswith("dp")

    @property
    def lora(self) -> bool:
        return self.mode in ("lora", "dp-lora")

    @property
    def head_only(self) -> bool:
        """The encoder is frozen whole and only the linear head trains (over cached pooled features)."""
        return self.mode in ("head", "dp-head")

    @property
    def frozen_trunk(self) -> bool:
        """Training runs over cached outputs of frozen encoder layers (head modes, or ``top_layers`` > 0)."""
        return self.head_only or self.top_layers > 0

    @property
    def trained_top(self) -> int:
        """Encoder layers that train above the frozen trunk: 0 in the head modes, else ``top_layers``."""
        return 0 if self.head_only else self.top_layers

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["epsilon"] = None if math.isinf(self.epsilon) else self.epsilon
        d["lora_targets"] = list(d["lora_targets"])
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        d["epsilon"] = math.inf if d.get("epsilon") is None else d["epsilon"]
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# reports -> windows of tokens
# ---------------------------------------------------------------------------------------------
@dataclass
class Windows:
    """Each report as a list of token windows (special tokens included)."""

    chunks: list[list[list[int]]]
    n_tokens: list[int]
    truncated: int  # reports longer than max_chunks windows (their tail is not seen)

    def __len__(self) -> int:
        return len(self.chunks)


def windows(tokenizer, texts, max_length: int, stride: int, max_chunks: int) -> Windows:
    """Split each report into overlapping windows of ``max_length`` tokens so the whole report is read."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    head, tail = [t for t in (first,) if t is not None], [t for t in (last,) if t is not None]
    body = max_length - len(head) - len(tail)
    step = body - stride
    chunks, n_tokens, truncated = [], [], 0
    for text in texts:
        ids = tokenizer(str(text), add_special_tokens=False, verbose=False)["input_ids"]  # any length: windowed below
        starts = list(range(0, max(len(ids) - stride, 1), step))
        if len(starts) > max_chunks:
            truncated += 1
            starts = starts[:max_chunks]
        chunks.append([head + ids[s:s + body] + tail for s in starts])
        n_tokens.append(len(ids))
    return Windows(chunks, n_tokens, truncated)


def _longest_window(win: Windows) -> int:
    """Tokens of the longest window of ``win`` (special tokens included)."""
    return max((len(c) for r in win.chunks for c in r), default=2)


def collate(win: Windows, idx, pad_id: int) -> dict:
    """Pad the reports ``idx`` to [batch, windows, tokens]; explicit per-sample position and token-type ids
    (opacus computes per-sample gradients of the embeddings only from per-sample inputs)."""
    rows = [win.chunks[int(i)] for i in idx]
    K = max((len(r) for r in rows), default=1)
    L = max((len(c) for r in rows for c in r), default=2)
    ids = torch.full((len(rows), K, L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), K, L), dtype=torch.long)
    for b, r in enumerate(rows):
        for k, c in enumerate(r):
            ids[b, k, :len(c)] = torch.tensor(c)
            mask[b, k, :len(c)] = 1
    pos = torch.arange(L).expand(len(rows), K, L).contiguous()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "position_ids": pos}


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
class ReportClassifier(nn.Module):
    """Encoder over each window, pooled over the whole report, + multi-label linear head.

    Windows are encoded one window index at a time, so every encoder call has the report batch as its
    first dimension: opacus's hooks then sum each report's per-sample gradient over its windows, and
    clipping bounds a report's whole contribution (one report = one DP unit)."""

    def __init__(self, encoder: nn.Module, hidden: int, n_labels: int, pooling: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.head = nn.Linear(hidden, n_labels)
        # True (the safe default, and always under DP-SGD): every encoder call sees the whole batch, as opacus's
        # per-sample hooks need, so reports without a k-th window run it as padding. False: only the reports
        # that have a k-th window are encoded (non-private training and inference; same result, less work).
        self.dense = True

    def forward(self, input_ids, attention_mask, token_type_ids, position_ids):
        return self.head(self.pooled(input_ids, attention_mask, token_type_ids, position_ids))

    def pooled(self, input_ids, attention_mask, token_type_ids, position_ids):
        """The report vectors the head reads: encoder states pooled over all windows of each report."""
        total = count = 0.0
        for k in range(input_ids.shape[1]):
            has = attention_mask[:, k, 0].bool()  # reports with a k-th window (every report has window 0)
            rows = slice(None) if self.dense or bool(has.all()) else has.nonzero().squeeze(1)
            L = max(int(attention_mask[:, k].sum(1).max()), 1)  # trailing all-padding columns add nothing
            m, ids, types, pos = (t[rows, k, :L] for t in (attention_mask, input_ids, token_type_ids, position_ids))
            out = self.encoder(input_ids=ids, attention_mask=m, token_type_ids=types, position_ids=pos).last_hidden_state
            t, c = pool_window(out, m, self.pooling)
            if isinstance(rows, slice):  # always so for window 0, hence total is a tensor before any index_add
                total, count = total + t, count + c
            else:
                total, count = total.index_add(0, rows, t), count.index_add(0, rows, c)
        return total / count.clamp(min=1)


def pool_window(out: torch.Tensor, mask: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One window's contribution to a report's pooled vector: (sum, count) of its token states (``mean``) or of
    its CLS state (``cls``); the report vector is the sum over its windows divided by the summed count."""
    if pooling == "cls":
        w = mask[:, :1].to(out.dtype)  # 1 where the window exists
        return out[:, 0] * w, w
    w = mask.unsqueeze(-1).to(out.dtype)
    return (out * w).sum(1), w.sum(1)


# ---------------------------------------------------------------------------------------------
# frozen trunk: the layers below the trained ones are run once per report, then cached
# ---------------------------------------------------------------------------------------------
def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-style encoder (``encoder.layer``), through a peft wrapper if any."""
    base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"top_layers and the head modes need a BERT-style encoder (its layers at encoder.layer); "
                         f"{type(base).__name__} has none: use top_layers 0 with a whole-encoder mode")
    return layers


class TopClassifier(nn.Module):
    """The top ``top`` encoder layers, the pooling and the head of a :class:`ReportClassifier`, run over cached
    hidden states of the frozen layers below (``top=0``: the head alone, over cached pooled features).

    Its modules ARE the classifier's (shared, not copied): training this trains that model, and the trained
    model then predicts from raw text as usual. Every layer call has the report batch first, one window index at a
    time as in :class:`ReportClassifier`, so opacus's per-sample hooks sum a report's gradient over its windows."""

    def __init__(self, model: ReportClassifier, top: int):
        super().__init__()
        self.layers = nn.ModuleList(list(encoder_layers(model.encoder))[-top:] if top else [])
        self.head = model.head
        self.pooling = model.pooling
        self.encoder_config = _encoder_config(model)  # (sizes the no-grad prediction batches to a memory budget)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not len(self.layers):  # head only: states are pooled report vectors [batch, hidden]
            return self.head(states)
        total = count = 0.0
        for k in range(states.shape[1]):
            L = max(int(mask[:, k].sum(1).max()), 1)
            m, h = mask[:, k, :L], states[:, k, :L]
            # additive key mask, as BERT builds it: padding keys get the dtype's minimum before the softmax
            add = (1.0 - m[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            for layer in self.layers:
                h = layer(h, attention_mask=add)
                h = h[0] if isinstance(h, tuple) else h
            t, c = pool_window(h, m, self.pooling)
            total, count = total + t, count + c
        return self.head(total / count.clamp(min=1))


@dataclass
class TrunkStates:
    """Cached output of the frozen layers for a list of reports.

    Whole-layer cut (``top`` > 0): ``states`` holds one row per window ``[windows + 1, tokens, hidden]`` (the last
    row is all padding) and ``rows[i]`` the window rows of report ``i`` (padded with that last row), so a batch is
    ``states[rows[idx]]``: ``[batch, windows, tokens, hidden]``. Head modes (``top`` = 0): ``states`` is the pooled
    report vector ``[reports, hidden]`` and ``rows`` is None."""

    states: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor | None

    def batch(self, idx) -> dict:
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        if self.rows is None:
            return {"states": self.states[idx], "mask": self.mask[idx]}
        r = self.rows[idx]
        return {"states": self.states[r], "mask": self.mask[r]}

    def __len__(self) -> int:
        return len(self.mask) if self.rows is None else len(self.rows)


_TRUNK_CACHE: dict[tuple, TrunkStates] = {}


@torch.no_grad()
def trunk_states(model: ReportClassifier, win: Windows, pad_id: int, top: int, device=None,
                 batch_size: int = 16, memory_budget_gb: float | None = DEFAULT_MEMORY_BUDGET_GB) -> TrunkStates:
    """Run the frozen part of ``model`` over every window once: the hidden states entering the top ``top`` layers
    (``top`` > 0), or the pooled last-layer report vectors (``top`` = 0, head modes). ``memory_budget_gb`` lowers
    ``batch_size`` so that one pass's transient memory fits it (None: no cap; train() passes its config's)."""
    was = model.training
    model.eval()
    device = device or next(model.parameters()).device
    n_layers = len(encoder_layers(model.encoder))
    if top > n_layers:
        raise ValueError(f"top_layers {top} exceeds the encoder's {n_layers} layers")
    order = np.argsort([sum(len(c) for c in ch) for ch in win.chunks], kind="stable")
    batch_size = _inference_batch(_encoder_config(model), _longest_window(win), 1, batch_size, memory_budget_gb,
                                  keep_layers=n_layers + 1 if top else 0)
    pooled, win_states, win_masks, rows = {}, [], [], [[] for _ in range(len(win))]
    dense, model.dense = model.dense, False  # absent windows skipped: the same vectors, less work
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        xs = {k: v.to(device) for k, v in collate(win, idx, pad_id).items()}
        if top == 0:  # head modes: the report vectors themselves
            for b, v in zip(idx, model.pooled(**xs).float().cpu()):
                pooled[int(b)] = v
            continue
        for k in range(xs["input_ids"].shape[1]):
            sel = xs["attention_mask"][:, k, 0].bool().cpu().nonzero().squeeze(1)
            m = xs["attention_mask"][sel, k]
            out = model.encoder(input_ids=xs["input_ids"][sel, k], attention_mask=m,
                                token_type_ids=xs["token_type_ids"][sel, k], position_ids=xs["position_ids"][sel, k],
                                output_hidden_states=True)
            h = out.hidden_states[n_layers - top].float().cpu()
            for j, b in enumerate(sel.tolist()):
                rows[int(idx[b])].append(len(win_states))
                win_states.append(h[j])
                win_masks.append(m[j].cpu())
    model.train(was)
    model.dense = dense
    if top == 0:
        feats = torch.stack([pooled[i] for i in range(len(win))]) if len(win) else torch.zeros((0, 0))
        return TrunkStates(feats, torch.ones((len(win), 1), dtype=torch.long), None)
    L = max((len(m) for m in win_masks), default=1)
    D = win_states[0].shape[-1] if win_states else 1
    states = torch.zeros((len(win_states) + 1, L, D))
    mask = torch.zeros((len(win_states) + 1, L), dtype=torch.long)
    for j, (h, m) in enumerate(zip(win_states, win_masks)):
        states[j, :len(h)] = h
        mask[j, :len(m)] = m
    K = max((len(r) for r in rows), default=1)
    pad_row = len(win_states)
    idx_rows = torch.tensor([r + [pad_row] * (K - len(r)) for r in rows], dtype=torch.long)
    return TrunkStates(states, mask, idx_rows)


def cached_trunk_states(model: ReportClassifier, win: Windows, pad_id: int, top: int, key: tuple,
                        device=None, memory_budget_gb: float | None = DEFAULT_MEMORY_BUDGET_GB) -> TrunkStates:
    """:func:`trunk_states`, memoised in-process on ``key`` (what determines the frozen layers' output: encoder files,
    initial weights, windows): the runs of a grid that share an encoder, init and data share one encoding."""
    full_key = (*key, top, model.pooling if top == 0 else "", hashlib.sha256(
        json.dumps(win.chunks).encode()).hexdigest())
    if full_key not in _TRUNK_CACHE:
        if len(_TRUNK_CACHE) >= 6:
            _TRUNK_CACHE.pop(next(iter(_TRUNK_CACHE)))
        _TRUNK_CACHE[full_key] = trunk_states(model, win, pad_id, top, device, memory_budget_gb=memory_budget_gb)
    return _TRUNK_CACHE[full_key]


def state_digest(state: dict | None) -> str:
    """sha256 of a state dict (names, dtypes, shapes and bytes of every tensor); "" for None."""
    if state is None:
        return ""
    h = hashlib.sha256(b"state-v1\x00")
    for name in sorted(state):
        t = state[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{name}\x00{t!r}\x00".encode())
    return h.hexdigest()


def load_encoder(path: str):
    """Tokenizer and encoder from a local checkpoint directory (never from a hub)."""
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"encoder checkpoint {path} is not a directory; fetch it with `make models` "
                                f"or pass a local Hugging Face checkpoint path")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    enc = AutoModel.from_pretrained(path, local_files_only=True)
    if getattr(enc, "pooler", None) is not None:
        enc.pooler = None  # unused (we pool ourselves); LoRA on it would get no gradient and opacus would fail
    return tok, enc


def build_model(cfg: TrainConfig, encoder_path: str, n_labels: int, init_state: dict | None = None):
    tok, enc = load_encoder(encoder_path)
    model = ReportClassifier(enc, enc.config.hidden_size, n_labels, cfg.pooling)
    model.dense = cfg.private
    if init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected:
            raise ValueError(f"init_state has parameters the model lacks: {unexpected[:5]}")
    top = cfg.trained_top
    n_layers = len(encoder_layers(enc)) if cfg.frozen_trunk else 0
    if top > n_layers:
        raise ValueError(f"top_layers {top} exceeds the encoder's {n_layers} layers")
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        extra = {"layers_to_transform": list(range(n_layers - top, n_layers))} if top else {}
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), bias="none", **extra)
        model.encoder = get_peft_model(model.encoder, lcfg)
    elif cfg.frozen_trunk:  # full modes with top_layers, head modes: only the top layers (if any) train
        trained = {id(p) for layer in (list(encoder_layers(enc))[n_layers - top:] if top else []) for p in layer.parameters()}
        for p in model.encoder.parameters():
            p.requires_grad = id(p) in trained
    for p in model.head.parameters():
        p.requires_grad = True
    return tok, model


# ---------------------------------------------------------------------------------------------
# memory: how many reports one forward/backward pass may hold
# ---------------------------------------------------------------------------------------------
#: Bytes one trained encoder layer keeps for the backward pass, per window, per unit of heads·T² (attention
#: probabilities, dropout mask and dropped probabilities), of T·hidden (layer input, Q, K, V, attention output,
#: LayerNorm inputs and outputs, dropout masks, LoRA's sums) and of T·intermediate (the feed-forward pre- and
#: post-GELU activations); the embeddings, pooling and (frozen trunk) the gathered input states add
#: ``_ACT_WINDOW`` T·hidden per window; the backward pass's transient gradients of one window are counted as
#: half a window more. Fitted to MiniLM-L6 measurements (see :func:`estimate_pass_bytes`) and rounded up.
_ACT_ATTN, _ACT_HIDDEN, _ACT_INTER, _ACT_WINDOW = 13, 56, 14, 48
#: per trainable parameter, memory a step holds whatever the batch: its gradient, AdamW's two moments, opacus's
#: clipped sum and the noise draw (DP), in float32
_FIXED_PER_PARAM = 5 * 4
#: allocator slack and small buffers of one step
_FIXED_SLACK = 96 * 2**20
#: labels assumed for the head when counting trainable parameters (a few hundred bytes per label: negligible)
_HEAD_LABELS = 64


def _trainable_params(cfg: TrainConfig, ec) -> tuple[int, int]:
    """(number of trainable parameters, numel of the largest trainable tensor) of a BERT-style classifier under
    ``cfg``, from the encoder config alone (:func:`build_model` freezes and adapts exactly these)."""
    H, I, L = ec.hidden_size, ec.intermediate_size, ec.num_hidden_layers
    head, head_w = H * _HEAD_LABELS + _HEAD_LABELS, H * _HEAD_LABELS  # (weight and bias; the weight)
    if cfg.head_only:
        return head, head_w
    layers = cfg.trained_top if cfg.frozen_trunk else L
    if cfg.lora:  # (in, out) of the linear layers each target name adapts; A is r×in, B is out×r
        shapes = {"query": [(H, H)], "key": [(H, H)], "value": [(H, H)], "dense": [(H, H), (H, I), (I, H)]}
        adapted = [s for t in cfg.lora_targets for s in shapes.get(t, [(I, I)])]  # (unknown names: the widest)
        per_layer = sum(cfg.lora_r * (a + b) for a, b in adapted)
        return layers * per_layer + head, max(max(cfg.lora_r * max(a, b) for a, b in adapted), head_w)
    per_layer = 4 * (H * H + H) + 2 * H * I + I + H + 4 * H
    if cfg.frozen_trunk:
        return layers * per_layer + head, max(H * I, head_w)
    vocab = getattr(ec, "vocab_size", 0) + getattr(ec, "max_position_embeddings", 0) + getattr(ec, "type_vocab_size", 0)
    return L * per_layer + vocab * H + 2 * H + head, max(getattr(ec, "vocab_size", 0) * H, H * I, head_w)


def estimate_pass_bytes(cfg: TrainConfig, encoder_config, n_windows: int | None = None,
                        tokens: int | None = None) -> tuple[int, int]:
    """Upper estimate of the memory of one training step: ``(fixed, per_report)`` bytes, so a pass over ``n``
    reports needs about ``fixed + n * per_report`` beyond the loaded model.

    * per report: the activations every trained layer keeps for backward, for each of the report's windows and
      half a window more (the transient gradients of the backward pass) (``n_windows``: the most windows a
      report of the data has, default ``cfg.max_chunks``; ``tokens``: the longest window, default
      ``cfg.max_length``)::

          (windows + 1/2) * (layers * (13 * heads * T**2 + 56 * T * hidden + 14 * T * intermediate) + 48 * T * hidden)

      where ``layers`` is every encoder layer, or only the ``top_layers`` trained over a frozen trunk (the frozen
      layers run once, without gradients, into a cache; the head modes train no layer); plus, in DP modes, the
      per-sample gradients opacus keeps (trainable parameters * 4 bytes per report, and the largest trainable
      tensor once more while a window's gradient is added in);
    * fixed: gradients, AdamW moments, opacus's clipped sum and noise (5 * 4 bytes per trainable parameter) and
      96 MB of slack.

    Calibrated against the peak resident memory of fresh processes (``ru_maxrss`` after one forward/backward/step
    on N reports minus the resident size after the model was built) on MiniLM-L6 for full, lora, dp-lora and
    dp-full at 128/256 tokens and 1/4 windows: the estimate exceeds each measurement (estimated vs measured
    bytes per report are listed in tests/test_dp_memory.py)."""
    heads, H, I = encoder_config.num_attention_heads, encoder_config.hidden_size, encoder_config.intermediate_size
    T = min(int(tokens or cfg.max_length), cfg.max_length)
    K = min(int(n_windows or cfg.max_chunks), cfg.max_chunks)
    layers = cfg.trained_top if cfg.frozen_trunk else encoder_config.num_hidden_layers
    per_layer = _ACT_ATTN * heads * T * T + _ACT_HIDDEN * T * H + _ACT_INTER * T * I
    # (windows + 1/2): every window's saved activations, and the transient gradients of the backward pass
    per_report = (2 * K + 1) * (layers * per_layer + _ACT_WINDOW * T * H) // 2 if not cfg.head_only else 16 * H
    trainable, largest = _trainable_params(cfg, encoder_config)
    if cfg.private and cfg.grad_sample_mode == "hooks":
        per_report += 4 * (trainable + largest)
    return _FIXED_PER_PARAM * trainable + _FIXED_SLACK, per_report


def reports_per_pass(cfg: TrainConfig, encoder_config, n_windows: int | None = None, tokens: int | None = None) -> int:
    """The most reports one forward/backward pass may hold: ``cfg.physical_batch_size`` (DP) or ``cfg.batch_size``
    (non-private), capped so that :func:`estimate_pass_bytes` stays within ``cfg.memory_budget_gb`` (no cap when
    that is None). Raises ValueError when even one report does not fit."""
    want = cfg.physical_batch_size if cfg.private else cfg.batch_size
    if cfg.memory_budget_gb is None:
        return want
    fixed, per_report = estimate_pass_bytes(cfg, encoder_config, n_windows, tokens)
    budget = cfg.memory_budget_gb * 1e9
    fit = int((budget - fixed) // per_report)
    if fit < 1:
        T = min(int(tokens or cfg.max_length), cfg.max_length)
        K = min(int(n_windows or cfg.max_chunks), cfg.max_chunks)
        raise ValueError(
            f"memory_budget_gb={cfg.memory_budget_gb:g} is too small for one report: a {cfg.mode} training pass of one "
            f"report ({K} window(s) of {T} tokens) needs about {(fixed + per_report) / 1e9:.2f} GB "
            f"({per_report / 1e9:.2f} GB for the report, {fixed / 1e9:.2f} GB of gradients and optimizer state). "
            f"Raise memory_budget_gb to at least {math.ceil((fixed + per_report) / 1e8) / 10:.1f}, or lower max_length "
            f"or max_chunks (or train fewer layers: top_layers), or set memory_budget_gb=None for no cap")
    return max(1, min(want, fit))


#: bytes per window of a no-grad encoder pass: the transient attention scores (scores, masked scores, probabilities)
#: and feed-forward activations of the one layer running, a few T·hidden tensors between layers
_INFER_ATTN, _INFER_HIDDEN, _INFER_INTER = 3 * 4, 12 * 4, 2 * 4


def _inference_batch(encoder_config, tokens: int, windows_: int, batch_size: int, budget_gb: float | None,
                     keep_layers: int = 0, input_states: bool = False) -> int:
    """Reports per no-grad pass (encoding, prediction) whose transient memory fits ``budget_gb`` (at most
    ``batch_size``, at least 1): each encoder call runs one window index of every report of the batch;
    ``keep_layers`` hidden states are kept per window (``output_hidden_states``); ``input_states``: the batch's
    cached trunk states ``[reports, windows, T, hidden]`` are gathered first."""
    if budget_gb is None or encoder_config is None:
        return batch_size
    heads, H, I = encoder_config.num_attention_heads, encoder_config.hidden_size, encoder_config.intermediate_size
    T = max(int(tokens), 1)
    per = _INFER_ATTN * heads * T * T + _INFER_HIDDEN * T * H + _INFER_INTER * T * I + 2 * 4 * keep_layers * T * H
    if input_states:
        per += 4 * max(int(windows_), 1) * T * H
    return max(1, min(batch_size, int(budget_gb * 1e9 // per)))


def _encoder_config(module: nn.Module):
    """The Hugging Face config of the encoder under a classifier (through opacus, DDP, peft and
    :class:`TopClassifier` wrappers), or None."""
    for _ in range(4):  # opacus GradSampleModule (_module), DDP and opacus's DPDDP (module)
        inner = getattr(module, "_module", None) or getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            break
        module = inner
    if isinstance(module, TopClassifier):
        return module.encoder_config
    enc = getattr(module, "encoder", None)
    if enc is None:
        return None
    base = enc.get_base_model() if hasattr(enc, "get_base_model") else enc
    return getattr(base, "config", None)


def _per_sample_bce(logits, y):
    """Multi-label BCE averaged over labels: one loss per report (what ghost clipping needs)."""
    return nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)


class _PerSampleBCE(nn.Module):
    reduction = "mean"

    def forward(self, logits, y):
        return _per_sample_bce(logits, y)


@dataclass
class TrainResult:
    config: TrainConfig
    model: nn.Module
    history: list[dict]
    epsilon: float
    accounting: dict
    seconds: float
    truncated: int
    n_train: int
    tokenizer: object = None
    samples_per_second: float = float("nan")  # reports per second through the training steps
    trunk_seconds: float = 0.0  # encoding the frozen layers once (0 when a grid run before paid for it)
    trunk_key: tuple | None = None  # what the frozen layers' output depends on (frozen-trunk runs)
    #: most reports per forward/backward pass actually used: DP, the physical batches a Poisson batch is split
    #: into; non-private, the gradient-accumulation micro-batches (per process when distributed)
    physical_batch: int = 0
    #: the memory estimate behind it: budget_gb, fixed_bytes, bytes_per_report, windows, tokens
    memory: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        """Plain (merged) weights: LoRA adapters folded into the encoder, loadable by a non-LoRA model."""
        import copy

        m = copy.deepcopy(self.model)
        if hasattr(m.encoder, "merge_and_unload"):
            m.encoder = m.encoder.merge_and_unload()
        return {k: v.detach().cpu() for k, v in m.state_dict().items()}


def world_size() -> int:
    """Processes training together: the torch.distributed world size under torchrun
    (:mod:`radpriv.dp.launch`), 1 in a single process."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def train(cfg: TrainConfig, encoder_path: str, train_texts, Y_train: np.ndarray, val_texts=None, Y_val=None,
          init_state: dict | None = None, progress: bool = False) -> TrainResult:
    """Train one configuration; returns the model, loss history and (DP modes) the audited ε."""
    from radpriv.progress import tqdm

    Y_train = np.asarray(Y_train, dtype=np.float32)
    if len(train_texts) != len(Y_train):
        raise ValueError(f"{len(train_texts)} texts but {len(Y_train)} label rows")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device, fallback_to_cpu=True)
    tok, model = build_model(cfg, encoder_path, Y_train.shape[1], init_state)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    win = windows(tok, train_texts, cfg.max_length, cfg.stride, cfg.max_chunks)
    val = windows(tok, val_texts, cfg.max_length, cfg.stride, cfg.max_chunks) if val_texts is not None else None
    n = len(win)
    y_all = torch.tensor(Y_train)
    model.to(device)
    # reports per forward/backward pass: what the memory budget allows for the longest report of the data
    enc_cfg = _encoder_config(model)
    n_windows = max((len(c) for c in win.chunks), default=1)
    fixed_bytes, report_bytes = estimate_pass_bytes(cfg, enc_cfg, n_windows, _longest_window(win))
    physical = reports_per_pass(cfg, enc_cfg, n_windows, _longest_window(win))
    budget = cfg.memory_budget_gb
    t_trunk = time.time()
    if cfg.frozen_trunk:
        # the frozen layers' output never changes: encode every report once, then train the top over the cache
        top = cfg.trained_top
        key = (str(encoder_path), state_digest(init_state), cfg.max_length, cfg.stride, cfg.max_chunks)
        trunk = cached_trunk_states(model, win, pad, top, key, device, memory_budget_gb=budget)
        val_trunk = cached_trunk_states(model, val, pad, top, key, device, memory_budget_gb=budget) \
            if val is not None else None
        net = TopClassifier(model, top)
        outside = {id(p) for p in model.parameters() if p.requires_grad} - {id(p) for p in net.parameters()}
        if outside:
            raise RuntimeError(f"{len(outside)} trainable tensors lie below the top {top} layers; they would never train")
        inputs = trunk.batch
    else:
        net, inputs = model, (lambda idx: collate(win, idx, pad))
    t_trunk = time.time() - t_trunk
    head = list(net.head.parameters())
    body = [p for n_, p in net.named_parameters() if p.requires_grad and not n_.startswith("head.")]
    world = world_size()
    if world > 1 and not cfg.private:  # DP modes: opacus draws each rank's Poisson sample itself
        from torch.utils.data.distributed import DistributedSampler

        loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=max(1, cfg.batch_size // world),
                            sampler=DistributedSampler(TensorDataset(torch.arange(n)), shuffle=True, seed=cfg.seed))
        physical = min(physical, max(1, cfg.batch_size // world))
    else:
        loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=cfg.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(cfg.seed))
    if world > 1:  # multi-process (torchrun): opacus's DP wrapper averages clipped, noised gradients across ranks
        if cfg.private:
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            net = DPDDP(net)
        else:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if world_size() > 1 and cfg.grad_sample_mode == "ghost":
        raise ValueError("ghost clipping is not supported with multi-process training here; use grad_sample_mode='hooks'")
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}], weight_decay=0.0)
    delta = cfg.delta or 1.0 / (10 * n)
    engine, accounting, eps, criterion = None, {}, math.inf, None
    if cfg.private:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="prv", secure_mode=False)
        kw = dict(module=net, optimizer=opt, data_loader=loader, target_epsilon=cfg.epsilon, target_delta=delta,
                  epochs=cfg.epochs, max_grad_norm=cfg.max_grad_norm, poisson_sampling=True,
                  grad_sample_mode=cfg.grad_sample_mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.grad_sample_mode == "ghost":
                net, opt, criterion, loader = engine.make_private_with_epsilon(criterion=_PerSampleBCE(), **kw)
            else:
                net, opt, loader = engine.make_private_with_epsilon(**kw)
        logical_steps = len(loader)  # Poisson batches per epoch: what the accountant counts
        # Poisson batches vary in size: cap what goes through the encoder at once (as opacus's BatchMemoryManager
        # does) to physical_batch_size reports, or fewer if the memory budget says so; the logical batch, its
        # clipped sum and its one noisy step are unchanged
        from opacus.utils.batch_memory_manager import wrap_data_loader

        loader = wrap_data_loader(data_loader=loader, max_batch_size=physical, optimizer=opt)
    history, t0, seen = [], time.time(), 0
    for epoch in range(cfg.epochs):
        net.train()
        losses = []
        for (idx,) in tqdm(loader, disable=not progress, desc=f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}"):
            opt.zero_grad(set_to_none=True)
            if len(idx) == 0:  # Poisson sampling drew no report: still a noisy step, as the accountant assumes
                if engine is not None:
                    for p in opt.params:
                        if criterion is not None:  # ghost clipping sums p.grad (the clipped sum, here nothing)
                            p.grad = torch.zeros_like(p)
                        else:
                            p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
                    opt.step()
                continue
            # DP: the loader already yields physical batches (opacus steps once per logical batch). Non-private: a
            # batch larger than the memory budget allows is run as micro-batches whose gradients add up to the
            # whole batch's mean-loss gradient (each micro-batch's mean loss weighted by its share of the batch)
            parts = (idx,) if engine is not None or len(idx) <= physical else torch.split(idx, physical)
            batch_loss = 0.0
            for j, part in enumerate(parts):
                xs = {k: v.to(device) for k, v in inputs(part).items()}
                y = y_all[part].to(device)
                sync = j == len(parts) - 1 or not isinstance(net, nn.parallel.DistributedDataParallel)
                with contextlib.nullcontext() if sync else net.no_sync():  # (DDP: all-reduce once, after the last)
                    logits = net(**xs)
                    if criterion is not None:
                        loss = criterion(logits, y)
                    else:
                        loss = _per_sample_bce(logits, y).mean()
                        if len(parts) > 1:
                            loss = loss * (len(part) / len(idx))
                    loss.backward()
                batch_loss += float(loss.detach())
            opt.step()
            losses.append(batch_loss)
            seen += len(idx)
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val is not None:
            logits = torch.tensor(predict_cached(net, val_trunk, device, memory_budget_gb=budget) if cfg.frozen_trunk
                                  else predict_logits(net, val, pad, device, memory_budget_gb=budget))
            rec["val_loss"] = float(_per_sample_bce(logits, torch.tensor(np.asarray(Y_val, dtype=np.float32))).mean())
        history.append(rec)
    loop_seconds = time.time() - t0
    seconds = loop_seconds + t_trunk  # the frozen layers' encoding counts once, in the run that paid for it
    if engine is not None:
        from radpriv.dp.accounting import audit

        eps = float(engine.get_epsilon(delta))
        sigma, q, steps = opt.noise_multiplier, 1.0 / logical_steps, logical_steps * cfg.epochs
        accounting = {"noise_multiplier": sigma, "sample_rate": q, "steps": steps, "delta": delta,
                      "target_epsilon": cfg.epsilon, "opacus_epsilon": eps, **audit(sigma, q, steps, delta)}
        if eps > cfg.epsilon * 1.02:
            raise RuntimeError(f"achieved ε {eps:.4f} exceeds the target {cfg.epsilon}")
    plain = net
    while hasattr(plain, "_module") or isinstance(plain, nn.parallel.DistributedDataParallel) or \
            type(plain).__name__ == "DifferentiallyPrivateDistributedDataParallel":
        plain = plain._module if hasattr(plain, "_module") else plain.module
    if engine is not None:  # drop opacus hooks so the returned model is a plain module
        try:
            net.remove_hooks()
        except Exception:  # pragma: no cover - already removed
            pass
    if cfg.frozen_trunk:  # the trained top shares its modules with the whole classifier, which reads raw text
        plain = model
    plain.dense = False  # hooks are gone: inference may skip absent windows
    memory = {"budget_gb": budget, "fixed_bytes": int(fixed_bytes), "bytes_per_report": int(report_bytes),
              "windows": int(n_windows), "tokens": int(_longest_window(win))}
    return TrainResult(cfg, plain, history, eps, accounting, seconds, win.truncated, n, tok,
                       seen / loop_seconds if loop_seconds > 0 else float("nan"), t_trunk,
                       key if cfg.frozen_trunk else None, physical_batch=int(physical), memory=memory)


@torch.no_grad()
def predict_cached(net: nn.Module, trunk: TrunkStates, device=None, batch_size: int = 32,
                   memory_budget_gb: float | None = DEFAULT_MEMORY_BUDGET_GB) -> np.ndarray:
    """Logits of a :class:`TopClassifier` (or its opacus wrapper) over cached trunk states, in report order;
    ``memory_budget_gb`` lowers ``batch_size`` so that one pass's transient memory fits it (None: no cap; train()
    passes its config's)."""
    was = net.training
    net.eval()
    device = device or next(net.parameters()).device
    if trunk.rows is not None:
        batch_size = _inference_batch(_encoder_config(net), trunk.states.shape[1], trunk.rows.shape[1], batch_size,
                                      memory_budget_gb, input_states=True)
    outs = [net(**{k: v.to(device) for k, v in trunk.batch(range(i, min(i + batch_size, len(trunk)))).items()}).float().cpu()
            for i in range(0, len(trunk), batch_size)]
    net.train(was)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0))


@torch.no_grad()
def predict_logits(model: nn.Module, win: Windows, pad_id: int = 0, device=None, batch_size: int = 32,
                   memory_budget_gb: float | None = DEFAULT_MEMORY_BUDGET_GB) -> np.ndarray:
    """Logits of a :class:`ReportClassifier` for every report of ``win``, in report order; ``memory_budget_gb``
    lowers ``batch_size`` so that one pass's transient memory fits it (None: no cap; train() passes its config's)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    batch_size = _inference_batch(_encoder_config(model), _longest_window(win), 1, batch_size, memory_budget_gb)
    outs = []
    # sort by length so padding stays small, then restore the order
    order = np.argsort([sum(len(c) for c in ch) for ch in win.chunks], kind="stable")
    for i in range(0, len(order), batch_size):
        xs = {k: v.to(device) for k, v in collate(win, order[i:i + batch_size], pad_id).items()}
        outs.append(model(**xs).float().cpu())
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, 0))
    res = np.empty_like(logits)
    res[order] = logits
    model.train(was_training)
    return res


def predict_proba(result: TrainResult, texts, encoder_path: str | None = None) -> np.ndarray:
    """Probabilities per label for ``texts`` (windows as in training)."""
    tok = result.tokenizer
    if tok is None:
        tok, _ = load_encoder(encoder_path)
    c = result.config
    win = windows(tok, texts, c.max_length, c.stride, c.max_chunks)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    if c.frozen_trunk and result.trunk_key is not None:  # the frozen layers' output is shared by a grid's runs
        top = c.trained_top
        net = TopClassifier(result.model, top)
        budget = c.memory_budget_gb
        logits = predict_cached(net, cached_trunk_states(result.model, win, pad, top, result.trunk_key,
                                                         memory_budget_gb=budget), memory_budget_gb=budget)
    else:
        logits = predict_logits(result.model, win, pad, memory_budget_gb=c.memory_budget_gb)
    return 1 / (1 + np.exp(-logits))


# ---------------------------------------------------------------------------------------------
# cheap rows
# ---------------------------------------------------------------------------------------------
def tfidf_logreg(train_texts, Y_train, val_texts, Y_val, C: float = 4.0):
    """TF-IDF (word 1-2 grams) + one-vs-rest logistic regression; thresholds tuned on validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    X = vec.fit_transform(train_texts)
    cols = Y_train.sum(0) > 0
    clf = OneVsRestClassifier(LogisticRegression(C=C, max_iter=2000)).fit(X, Y_train[:, cols])

    def proba(texts):
        P = np.zeros((len(texts), Y_train.shape[1]))
        P[:, cols] = clf.predict_proba(vec.transform(texts))
        return P

    th = choose_thresholds(Y_val, proba(val_texts), rule="f1")
    return proba, th


def dp_tfidf_linear(public_texts, train_texts, Y_train, val_texts, Y_val, epsilon: float, delta: float | None = None,
                    epochs: int = 30, batch_size: int = 64, lr: float = 0.5, max_grad_norm: float = 1.0, seed: int = 0):
    """A linear model over TF-IDF features trained with DP-SGD through opacus. Vocabulary and IDF are
    fitted on the PUBLIC corpus only, so the features themselves reveal nothing about the private data."""
    from opacus import PrivacyEngine
    from sklearn.feature_extraction.text import TfidfVectorizer

    from radpriv.dp.accounting import audit

    torch.manual_seed(seed)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=20000).fit(public_texts)
    X = torch.tensor(vec.transform(train_texts).toarray(), dtype=torch.float32)
    y = torch.tensor(Y_train, dtype=torch.float32)
    n = len(X)
    delta = delta or 1.0 / (10 * n)
    model = nn.Linear(X.shape[1], Y_train.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True)
    engine = PrivacyEngine(accountant="prv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, loader = engine.make_private_with_epsilon(module=model, optimizer=opt, data_loader=loader,
                                                              target_epsilon=epsilon, target_delta=delta, epochs=epochs,
                                                              max_grad_norm=max_grad_norm, poisson_sampling=True)
    for _ in range(epochs):
        for xb, yb in loader:
            if len(yb) == 0:
                continue
            opt.zero_grad()
            _per_sample_bce(model(xb), yb).mean().backward()
            opt.step()
    eps = float(engine.get_epsilon(delta))
    acc = audit(opt.noise_multiplier, 1.0 / len(loader), len(loader) * epochs, delta)
    lin = model._module

    def proba(texts):
        with torch.no_grad():
            return torch.sigmoid(lin(torch.tensor(vec.transform(texts).toarray(), dtype=torch.float32))).numpy()

    th = choose_thresholds(Y_val, proba(val_texts), rule="f1")
    return proba, th, eps, acc
