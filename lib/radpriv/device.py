"""Which torch device a run uses: one rule for every trainer (DP encoders, downstream CNNs and text
classifiers, the audit's language model).

``auto`` picks CUDA, then Apple MPS, then the CPU. An explicit request is checked: a missing CUDA or MPS
raises with what to do, unless ``fallback_to_cpu=True`` (Study 3's grid, whose cache key records the
device a run really used), which warns and trains on the CPU instead.
"""

from __future__ import annotations

import warnings

import torch


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device = "auto", fallback_to_cpu: bool = False) -> torch.device:
    """``auto`` -> ``cuda`` if available, else ``mps`` if available, else ``cpu``; explicit requests are checked."""
    device = str(device).strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            if fallback_to_cpu:
                warnings.warn(f"device {device!r} requested but CUDA is not available; training on CPU")
                return torch.device("cpu")
            raise RuntimeError(f"device={device!r} was requested but CUDA is not available to torch "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); install a CUDA build "
                               "of torch for your driver, or use device='cpu'")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                               "(check CUDA_VISIBLE_DEVICES)")
        return dev
    if device == "mps":
        if not _mps_available():
            if fallback_to_cpu:
                warnings.warn("device 'mps' requested but Apple MPS is not available; training on CPU")
                return torch.device("cpu")
            raise RuntimeError("device='mps' was requested but Apple MPS is not available; use device='cpu'")
        return torch.device("mps")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")


def effective_device(device: str) -> str:
    """The device a run with this ``device`` setting really trains on under ``fallback_to_cpu=True``, with the
    GPU model for CUDA (part of Study 3's cache key: CPU and GPU results differ)."""
    dev = resolve_device(device, fallback_to_cpu=True) if str(device).strip().lower() != "auto" else resolve_device()
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())}"
    return dev.type if dev.index is None else str(dev)
