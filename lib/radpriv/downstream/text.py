"""Report-text classifiers trained on inclusive or exclusive labels (the Study 2 effect on reports alone).

The encoder is MiniLM-L6 (``all-MiniLM-L6-v2``, found through the model registry: ``minilm-l6``), kept
*frozen*; a logistic-regression head per finding is trained on its embeddings. Why frozen + logistic and
not fine-tuning: on 2 CPU cores, fine-tuning MiniLM on a few hundred reports for 29 findings costs minutes
per label set and overfits a few hundred examples, while encoding once and fitting 29 logistic heads takes
seconds and lets the same embeddings serve every label set (inclusive/exclusive x LLM/ground truth), so any
difference between label sets comes from the labels alone.

Features (``pooling``):

- ``"sentences"`` (default): each sentence of the report's findings/impression is embedded separately
  (sentence-transformers mean pooling, L2-normalised) and the report is the concatenation of the mean and
  the element-wise max over its sentences. A finding is usually stated in one sentence; max pooling keeps
  that sentence's signal (including its hedge or negation) from being averaged away;
- ``"report"``: one embedding of the whole report (truncated at ``max_length`` tokens).

Embeddings are cached in memory per (model path, text, pooling), so training several label sets encodes
each report once.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from radpriv.progress import tqdm

from radpriv.device import resolve_device
from radpriv.downstream.cnn import mean_auc

__all__ = ["encoder_path", "MiniLMEncoder", "split_sentences", "report_features", "TextLabelClassifier"]

_HEADER = re.compile(r"^(patient|exam date|accession|dob|mrn|name)\b.*$", re.IGNORECASE | re.MULTILINE)
_SENT = re.compile(r"(?<=[.!?;])\s+|\n+")


def encoder_path(name_or_path: str | Path | None = None) -> Path:
    """The local MiniLM directory: an explicit path, or a registry name (default ``minilm-l6``)."""
    if name_or_path is not None and Path(str(name_or_path)).expanduser().is_dir():
        return Path(str(name_or_path)).expanduser()
    from radpriv.models.registry import model_path

    return model_path(str(name_or_path or "minilm-l6"))


def split_sentences(text: str) -> list[str]:
    """Sentences of a report without identifier header lines (Patient/DOB/MRN/Accession...)."""
    text = _HEADER.sub(" ", str(text))
    parts = [p.strip() for p in _SENT.split(text)]
    out = []
    for p in parts:
        p = re.sub(r"^(findings|impression|indication|clinical information|technique)\s*:\s*", "", p, flags=re.I)
        if len(p) > 2:
            out.append(p)
    return out or [str(text).strip() or "."]


class MiniLMEncoder:
    """Frozen sentence encoder (mean pooling over tokens, L2-normalised, as sentence-transformers does)."""

    def __init__(self, model: str | Path | None = None, max_length: int = 128, batch_size: int = 64,
                 device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        self.path = encoder_path(model)
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "encoding") -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        for i in tqdm(range(0, len(todo), self.batch_size), desc=desc, disable=not progress or not todo):
            batch = todo[i:i + self.batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(emb, dim=1).float().cpu().numpy()
            for t, e in zip(batch, emb):
                self._cache[t] = e
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, self.dim), np.float32)


def report_features(texts: Sequence[str], encoder: MiniLMEncoder, pooling: str = "sentences",
                    progress: bool = True) -> np.ndarray:
    """One feature vector per report (see the module docstring for ``pooling``)."""
    if pooling == "report":
        return encoder.encode([_HEADER.sub(" ", str(t)) for t in texts], progress=progress, desc="encoding reports")
    if pooling != "sentences":
        raise ValueError(f"pooling must be 'sentences' or 'report', got {pooling!r}")
    sents = [split_sentences(t) for t in texts]
    flat = [s for ss in sents for s in ss]
    emb = encoder.encode(flat, progress=progress, desc="encoding report sentences")
    out, pos = np.zeros((len(texts), 2 * encoder.dim), dtype=np.float32), 0
    for i, ss in enumerate(sents):
        e = emb[pos:pos + len(ss)]
        pos += len(ss)
        out[i, :encoder.dim] = e.mean(0)
        out[i, encoder.dim:] = e.max(0)
    return out


@dataclass
class TextLabelClassifier:
    """One L2-regularised logistic regression per finding on frozen report features.

    ``C`` is chosen per label set from ``Cs`` on the validation split (mean AUC against the validation
    labels of the same label set); ``class_weight='balanced'`` copes with rare findings. A finding with no
    positive (or no negative) training label gets a constant prediction (its training prevalence) and is
    listed in ``constant``.
    """

    Cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    class_weight: str | None = "balanced"
    max_iter: int = 2000
    C: float | None = None
    constant: list[int] = field(default_factory=list)
    models: list = field(default_factory=list, repr=False)
    val_auc_by_C: dict = field(default_factory=dict)

    def _fit_with(self, X: np.ndarray, Y: np.ndarray, C: float) -> tuple[list, list[int]]:
        models, constant = [], []
        for k in range(Y.shape[1]):
            y = Y[:, k]
            if y.min() == y.max():
                models.append(float(y.mean()))
                constant.append(k)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight=self.class_weight,
                                                                       max_iter=self.max_iter))
                m.fit(X, y)
            models.append(m)
        return models, constant

    @staticmethod
    def _predict(models, X: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(X), m) if isinstance(m, float) else m.predict_proba(X)[:, 1]
                                for m in models])

    def fit(self, X_train: np.ndarray, Y_train: np.ndarray, X_val: np.ndarray | None = None,
            Y_val: np.ndarray | None = None) -> "TextLabelClassifier":
        Y_train = np.asarray(Y_train)
        if X_val is not None and Y_val is not None and len(self.Cs) > 1:
            scores = {}
            for C in self.Cs:
                models, _ = self._fit_with(X_train, Y_train, C)
                scores[C] = mean_auc(np.asarray(Y_val), self._predict(models, X_val))
            self.val_auc_by_C = scores
            finite = {c: s for c, s in scores.items() if not np.isnan(s)}
            self.C = max(finite, key=finite.get) if finite else 1.0
        else:
            self.C = self.C or (self.Cs[len(self.Cs) // 2] if self.Cs else 1.0)
        self.models, self.constant = self._fit_with(X_train, Y_train, self.C)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not self.models:
            raise RuntimeError("fit the classifier first")
        return self._predict(self.models, X)
