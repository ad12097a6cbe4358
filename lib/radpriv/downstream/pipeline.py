"""Train the same classifier on every label set, from one kind of input, and compare the models (one call each).

- :func:`synthetic_image_study`  synthetic radiographs drawn from a corpus' ground truth, a small two-view
  CNN trained on every label set, scored against what is truly drawn (clearly synthetic);
- :func:`manifest_image_study`   your radiographs (image manifest) with ResNet-50 (local weights or random
  init) or the small CNN, on your device (CUDA when available);
- :func:`text_study`             frozen MiniLM + logistic heads on the reports, scored against ground truth;
- :func:`summary_table`          one row per experiment and label set: macro AUC with DeLong CI, and the
  paired DeLong test of each label-set pair.

Study 2's experiment (which reports, whose labels, which figures) is assembled in :mod:`radpriv.studies.study2`.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from radpriv.data.image_manifest import ImageManifest
from radpriv.data.synthetic_images import SyntheticImages, synthesize_images
from radpriv.downstream.cnn import CNNTrainConfig, ManifestCases, ResNet50TwoView, SmallCNN
from radpriv.downstream.compare import Comparison, compare_label_sets, image_trainer, text_trainer

__all__ = ["synthetic_image_study", "manifest_image_study", "text_study", "summary_table"]


def _split_of(frame: pd.DataFrame) -> pd.Series:
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column (train/validation/test)")
    return frame.assign(report_id=frame["report_id"].astype(str)).set_index("report_id")["split"]


def synthetic_image_study(corpus: pd.DataFrame, label_sets: Mapping[str, pd.DataFrame], region: str | None = None,
                          size: int = 64, seed: int = 0, width: int = 16, config: CNNTrainConfig | None = None,
                          uncertain_visible: float = 0.5, uncertain_strength: float = 0.6,
                          progress: bool = True) -> tuple[SyntheticImages, Comparison]:
    """Draw two synthetic views per report of ``corpus`` (ground-truth States, ``split``), train
    :class:`SmallCNN` on each label set (same seed, same images) and score all against the drawn truth."""
    t0 = time.perf_counter()
    images = synthesize_images(corpus, region=region, size=size, seed=seed, uncertain_visible=uncertain_visible,
                               uncertain_strength=uncertain_strength, progress=progress)
    config = config or CNNTrainConfig(epochs=60, seed=seed, progress=progress)
    trainer = image_trainer(images.images, lambda k: SmallCNN(k, n_views=len(images.views), width=width), config)
    cmp = compare_label_sets(label_sets, images.visible, _split_of(corpus), trainer,
                             reference_name="drawn on the synthetic image", kind="synthetic images, small CNN")
    images.params["seconds"] = round(time.perf_counter() - t0, 1)
    return images, cmp


def manifest_image_study(manifest: ImageManifest, label_sets: Mapping[str, pd.DataFrame], reference: pd.DataFrame,
                         split: pd.Series | None = None, model: str = "resnet50", weights=None, size: int = 224,
                         config: CNNTrainConfig | None = None, freeze_backbone: bool = False,
                         cache_images: bool = True) -> Comparison:
    """Your radiographs: one two-view model per label set, scored against ``reference`` (0/1 per report_id).

    ``model``: ``"resnet50"`` (``weights``: a local checkpoint directory / state-dict file / registered
    name, or ``None`` for random initialisation) or ``"small_cnn"``. ``split`` defaults to the manifest's
    ``split`` column. Images are read lazily (``cache_images`` keeps decoded images in memory).
    """
    frame = manifest.frame
    if split is None:
        if "split" not in frame.columns:
            raise ValueError(f"{manifest.path}: no 'split' column; pass split= (a Series indexed by report_id)")
        split = frame.set_index("report_id")["split"]
    row_of = {rid: i for i, rid in enumerate(frame["report_id"])}
    order = next(iter(label_sets.values())).index
    missing = [r for r in order if r not in row_of]
    if missing:
        raise ValueError(f"{manifest.path}: {len(missing)} labelled report(s) have no images, e.g. {missing[:3]}; "
                         "restrict the label sets to the imaged reports")
    positions = np.array([row_of[r] for r in order])
    stores: dict[tuple, dict] = {}  # decoded images shared between label sets over the same rows

    def dataset(rows, labels):
        return ManifestCases(manifest, positions[rows], labels, size=size, cache=cache_images,
                             store=stores.setdefault(tuple(rows), {}))

    if model == "resnet50":
        factory = lambda k: ResNet50TwoView(k, n_views=len(manifest.views), weights=weights,  # noqa: E731
                                            freeze_backbone=freeze_backbone)
    elif model == "small_cnn":
        factory = lambda k: SmallCNN(k, n_views=len(manifest.views))  # noqa: E731
    else:
        raise ValueError(f"model must be 'resnet50' or 'small_cnn', got {model!r}")
    config = config or CNNTrainConfig(epochs=20, batch_size=16, lr=3e-4)
    trainer = image_trainer(None, factory, config, dataset_factory=dataset)
    return compare_label_sets(label_sets, reference, split, trainer, reference_name="image reference",
                              kind=f"radiographs, {model}")


def text_study(corpus: pd.DataFrame, label_sets: Mapping[str, pd.DataFrame],
               references: Mapping[str, pd.DataFrame], encoder=None, pooling: str = "sentences",
               progress: bool = True) -> dict[str, Comparison]:
    """Frozen MiniLM report features, one logistic-head classifier per label set, scored against each
    reference (e.g. ``{"ground truth, inclusive": ..., "ground truth, exclusive": ...}``)."""
    from radpriv.downstream.text import MiniLMEncoder, report_features

    encoder = encoder or MiniLMEncoder()
    order = next(iter(label_sets.values())).index
    texts = corpus.assign(report_id=corpus["report_id"].astype(str)).set_index("report_id").loc[order, "text"]
    feats = report_features(texts.tolist(), encoder, pooling=pooling, progress=progress)
    trainer = text_trainer(feats)
    return {name: compare_label_sets(label_sets, ref, _split_of(corpus), trainer, reference_name=name,
                                     kind="report text, MiniLM + logistic heads")
            for name, ref in references.items()}


def summary_table(comparisons: Mapping[str, Comparison], pairs: Sequence[tuple[str, str]] | None = None,
                  n_resamples: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(macro AUC per experiment and label set, paired tests per experiment and pair)."""
    aucs, tests = [], []
    for exp, cmp in comparisons.items():
        m = cmp.macro_auc()
        m.insert(0, "experiment", exp)
        aucs.append(m)
        use = [p for p in (pairs or []) if p[0] in cmp.runs and p[1] in cmp.runs] if pairs else None
        t, _ = cmp.delong_tests(use, n_resamples=n_resamples)
        t.insert(0, "experiment", exp)
        tests.append(t)
    return pd.concat(aucs, ignore_index=True), pd.concat(tests, ignore_index=True)

