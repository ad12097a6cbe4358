"""Two-view multi-label image classifiers: a small CNN (synthetic radiographs) and ResNet-50 (real ones).

Both take a batch ``[B, V, H, W]`` (V views, grayscale in [0, 1]), encode every view with one shared
backbone, concatenate the per-view features in view order and map them to one logit per finding.

ResNet-50 is the architecture of ``microsoft/resnet-50`` built with ``transformers`` (torchvision is not
needed). Pretrained weights are only ever read from a local path (:func:`load_resnet50`): a Hugging Face
checkpoint directory (``config.json`` + weights), a ``.safetensors`` / ``.pt`` / ``.pth`` state dict in
Hugging Face or torchvision key naming (e.g. torchvision's ``resnet50-*.pth``), or the name of a model
registered with ``radpriv models register NAME --hf PATH``. Nothing is downloaded.

Training (:func:`train_classifier`) runs on ``device="auto"`` (CUDA when available), ``"cpu"``,
``"cuda"``, ``"cuda:1"`` or ``"mps"``; with ``amp=True`` on CUDA it uses bfloat16 autocast where the GPU
supports it, else float16 with gradient scaling. The best epoch is chosen on the validation split's
mean AUC against the *training* label set (the reference labels are never seen before testing).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from radpriv.device import resolve_device
from radpriv.progress import tqdm

__all__ = [
    "SmallCNN", "ResNet50TwoView", "load_resnet50", "torchvision_to_hf_resnet",
    "ArrayCases", "ManifestCases", "CNNTrainConfig", "FitResult", "train_classifier", "predict_proba",
    "mean_auc",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# =============================================================================================
# devices (which one: radpriv.device.resolve_device)
# =============================================================================================
def _autocast(device: torch.device, amp: bool):
    """(autocast context manager, GradScaler or None) for the device."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), scaler
    if amp:
        warnings.warn(f"amp=True has no effect on device {device.type!r}; training in float32", stacklevel=3)
    import contextlib

    return contextlib.nullcontext, None


# =============================================================================================
# models
# =============================================================================================
class SmallCNN(nn.Module):
    """A light CNN shared across views: a 5x5 stride-2 stem and three conv blocks, average- and max-pooled
    features per view concatenated, one logit per finding (about 0.1 M parameters at width 16)."""

    def __init__(self, n_labels: int, n_views: int = 2, width: int = 16, dropout: float = 0.2):
        super().__init__()
        w = width

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            *block(w, 2 * w, True), *block(2 * w, 4 * w, True), *block(4 * w, 4 * w, False))
        self.n_views, self.feat = n_views, 4 * w
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_views * 2 * self.feat, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, v, h, w = x.shape
        if v != self.n_views:
            raise ValueError(f"expected {self.n_views} views per case, got {v}")
        z = self.encoder(x.reshape(b * v, 1, h, w))
        # average and max pooling: small lesions (a dot, a thin line) survive max pooling
        z = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)
        return self.head(z.reshape(b, v * 2 * self.feat))


def torchvision_to_hf_resnet(state: dict) -> dict:
    """Rename a torchvision ResNet-50 state dict to the keys of ``transformers.ResNetModel``."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        if k.startswith("conv1."):
            out["embedder.embedder.convolution." + k[len("conv1."):]] = v
            continue
        if k.startswith("bn1."):
            out["embedder.embedder.normalization." + k[len("bn1."):]] = v
            continue
        parts = k.split(".")  # layer{s}.{j}.conv{c}.weight | layer{s}.{j}.bn{c}.x | layer{s}.{j}.downsample.{0|1}.x
        if not parts[0].startswith("layer"):
            raise KeyError(f"unexpected torchvision ResNet key {k!r}")
        stage, layer = int(parts[0][5:]) - 1, int(parts[1])
        prefix = f"encoder.stages.{stage}.layers.{layer}."
        if parts[2] == "downsample":
            sub = "convolution" if parts[3] == "0" else "normalization"
            out[prefix + f"shortcut.{sub}." + ".".join(parts[4:])] = v
        elif parts[2].startswith("conv"):
            out[prefix + f"layer.{int(parts[2][4:]) - 1}.convolution." + ".".join(parts[3:])] = v
        elif parts[2].startswith("bn"):
            out[prefix + f"layer.{int(parts[2][2:]) - 1}.normalization." + ".".join(parts[3:])] = v
        else:
            raise KeyError(f"unexpected torchvision ResNet key {k!r}")
    return out


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (mapping of parameter names to tensors)")
    return obj


def load_resnet50(weights: str | Path | None = None):
    """A ``transformers.ResNetModel`` with the ResNet-50 architecture; ``weights`` from a local path only.

    ``None``: random initialisation. A directory: a Hugging Face checkpoint (``ResNetModel`` or
    ``ResNetForImageClassification``, e.g. a local copy of microsoft/resnet-50). A file: a state dict in HF
    or torchvision naming. Any other string: a model name registered with ``radpriv models register``.
    """
    from transformers import ResNetConfig, ResNetModel

    if weights is None:
        return ResNetModel(ResNetConfig())
    p = Path(str(weights)).expanduser()
    if not p.exists():
        if "/" in str(weights) or p.suffix:
            raise FileNotFoundError(f"ResNet-50 weights {str(weights)!r} do not exist; pass a local checkpoint directory "
                                    "or state-dict file (nothing is downloaded), or weights=None for random init")
        from radpriv.models.registry import model_path

        p = model_path(str(weights))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: a Hugging Face checkpoint directory needs config.json")
        model = ResNetModel.from_pretrained(str(p), local_files_only=True)
        cfg = model.config
        if list(cfg.depths) != [3, 4, 6, 3] or cfg.layer_type != "bottleneck":
            raise ValueError(f"{p}: not a ResNet-50 (depths {cfg.depths}, layer type {cfg.layer_type})")
        return model
    state = _read_state_dict(p)
    if any(k.startswith("layer1.") for k in state):
        state = torchvision_to_hf_resnet(state)
    state = {k[len("resnet."):] if k.startswith("resnet.") else k: v for k, v in state.items()
             if not k.startswith("classifier.")}
    model = ResNetModel(ResNetConfig())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{p}: not a ResNet-50 state dict ({len(missing)} missing keys, e.g. {missing[:3]}; "
                         f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    return model


class ResNet50TwoView(nn.Module):
    """ResNet-50 shared across views (grayscale repeated to RGB, ImageNet normalisation), pooled 2048-d features
    per view concatenated, dropout and a linear multi-label head."""

    def __init__(self, n_labels: int, n_views: int = 2, weights: str | Path | None = None, dropout: float = 0.2,
                 freeze_backbone: bool = False):
        super().__init__()
        self.backbone = load_resnet50(weights)
        self.n_views = n_views
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        dim = self.backbone.config.hidden_sizes[-1]
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_views * dim, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, v, h, w = x.shape
        if v != self.n_views:
            raise ValueError(f"expected {self.n_views} views per case, got {v}")
        z = x.reshape(b * v, 1, h, w).expand(-1, 3, -1, -1)
        z = (z - self.mean) / self.std
        pooled = self.backbone(pixel_values=z).pooler_output.flatten(1)  # [b*v, 2048]
        return self.head(pooled.reshape(b, -1))


# =============================================================================================
# data
# =============================================================================================
def ArrayCases(images: np.ndarray, labels: np.ndarray | pd.DataFrame | None = None) -> TensorDataset:
    """A dataset over in-memory images ``[N, V, H, W]`` and 0/1 labels ``[N, K]``."""
    x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
    if labels is None:
        return TensorDataset(x)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if len(y) != len(x):
        raise ValueError(f"{len(x)} cases but {len(y)} label rows")
    return TensorDataset(x, y)


class ManifestCases(Dataset):
    """Lazily loaded cases of an :class:`~radpriv.data.image_manifest.ImageManifest` (rows ``indices``),
    with labels ``[len(indices), K]``; decoded images are kept in memory when ``cache``, in ``store`` (a dict
    from position to image tensor) when given, so datasets over the same rows with other labels share one
    copy of the decoded images."""

    def __init__(self, manifest, indices: Sequence[int], labels: np.ndarray | None = None, size: int = 224,
                 cache: bool = True, store: dict[int, torch.Tensor] | None = None):
        self.manifest, self.indices, self.size, self.cache = manifest, list(indices), size, cache
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.float32))
        if self.labels is not None and len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.indices)} cases but {len(self.labels)} label rows")
        self.store: dict[int, torch.Tensor] = {} if store is None else store

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if i in self.store:
            x = self.store[i]
        else:
            x = torch.from_numpy(self.manifest.load_case(self.indices[i], self.size))
            if self.cache:
                self.store[i] = x
        return (x,) if self.labels is None else (x, self.labels[i])


def _augment(x: torch.Tensor, gen: torch.Generator, rotate: float = 0.17, scale: float = 0.08,
             translate: float = 0.06, contrast: float = 0.1) -> torch.Tensor:
    """A random affine transform and contrast change per image (each view is positioned independently)."""
    b, v, h, w = x.shape
    n = b * v
    u = torch.rand(n, 5, generator=gen).to(x.device) * 2 - 1
    ang, sc = u[:, 0] * rotate, 1 + u[:, 1] * scale
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * translate], 1),
                         torch.stack([sin, cos, u[:, 3] * translate], 1)], 1)
    flat = x.reshape(n, 1, h, w)
    grid = F.affine_grid(theta.to(flat.dtype), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, padding_mode="zeros", align_corners=False)
    out = out * (1 + u[:, 4].view(n, 1, 1, 1) * contrast)
    return out.reshape(b, v, h, w)


# =============================================================================================
# training
# =============================================================================================
@dataclass
class CNNTrainConfig:
    """Settings of :func:`train_classifier` (validated on construction; ``asdict`` goes into the report)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int | None = None  # stop after this many epochs without validation improvement (None: never)
    augment: bool = True
    balance: bool = True         # BCE pos_weight = negatives / positives per finding, capped at max_pos_weight
    max_pos_weight: float = 10.0
    device: str = "auto"
    amp: bool = False            # CUDA mixed precision (bf16 if supported, else fp16 + GradScaler)
    num_workers: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1 (or None for no early stopping)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_auc: float
    device: str
    config: dict = field(default_factory=dict)


def mean_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean ROC AUC over the columns that contain both classes (NaN if none)."""
    y, p = np.asarray(y), np.asarray(p)
    aucs = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _labels_of(ds) -> torch.Tensor:
    if isinstance(ds, TensorDataset):
        if len(ds.tensors) < 2:
            raise ValueError("training and validation datasets need labels")
        return ds.tensors[1]
    if getattr(ds, "labels", None) is not None:
        return ds.labels
    return torch.stack([ds[i][1] for i in range(len(ds))])


def _loader(ds, batch_size, shuffle, config: CNNTrainConfig, device: torch.device, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen if shuffle else None,
                      num_workers=config.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=config.num_workers > 0)


def predict_proba(model: nn.Module, data, device: str | torch.device = "auto", batch_size: int = 64,
                  amp: bool = False, progress: bool = False) -> np.ndarray:
    """Sigmoid probabilities ``[N, K]`` for a dataset (or an image array ``[N, V, H, W]``)."""
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    ds = ArrayCases(data) if isinstance(data, np.ndarray) else data
    model = model.to(dev).eval()
    ctx, _ = _autocast(dev, amp)
    out = []
    dl = DataLoader(ds, batch_size=batch_size, shuffle=False, pin_memory=dev.type == "cuda")
    with torch.inference_mode():
        for batch in tqdm(dl, desc="predicting", disable=not progress, leave=False):
            x = batch[0].to(dev, non_blocking=True)
            with ctx():
                logits = model(x)
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def train_classifier(model: nn.Module, train, val, config: CNNTrainConfig | None = None, desc: str = "training"
                     ) -> FitResult:
    """Train with BCE (optionally class-balanced), AdamW, cosine schedule; keep the epoch with the best
    validation mean AUC (against the validation labels of the same label set); early stopping."""
    config = config or CNNTrainConfig()
    dev = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    y_train, y_val = _labels_of(train), _labels_of(val).numpy()
    pos = y_train.sum(0)
    neg = len(y_train) - pos
    pos_weight = torch.clamp(neg / pos.clamp(min=1), 1.0, config.max_pos_weight) if config.balance else None
    model = model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(dev) if pos_weight is not None else None)
    ctx, scaler = _autocast(dev, config.amp)
    aug_gen = torch.Generator().manual_seed(config.seed + 1)
    best, best_state, best_epoch, stale, rows = -np.inf, None, 0, 0, []
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        total, seen = 0.0, 0
        for x, y in _loader(train, config.batch_size, True, config, dev, seed=config.seed * 1000 + epoch):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if config.augment:
                x = _augment(x, aug_gen)
            opt.zero_grad(set_to_none=True)
            with ctx():
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            total += float(loss.detach()) * len(x)
            seen += len(x)
        p_val = predict_proba(model, val, dev, batch_size=max(config.batch_size, 64), amp=config.amp)
        v_auc = mean_auc(y_val, p_val)
        v_loss = float(F.binary_cross_entropy(torch.from_numpy(p_val).clamp(1e-6, 1 - 1e-6),
                                              torch.from_numpy(y_val.astype(np.float32))))
        score = v_auc if not np.isnan(v_auc) else -v_loss
        rows.append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": v_loss, "val_mean_auc": v_auc})
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", val_auc=f"{v_auc:.3f}")
        if score > best + 1e-4:
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if config.patience is not None and stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    hist = pd.DataFrame(rows)
    return FitResult(model=model, history=hist, best_epoch=best_epoch,
                     best_val_auc=float(hist.loc[hist.epoch == best_epoch, "val_mean_auc"].iloc[0]) if rows else float("nan"),
                     device=str(dev), config=config.to_dict())
