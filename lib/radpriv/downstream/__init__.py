"""Study 2 downstream: inclusive vs exclusive labels, and the image and text classifiers trained on them.

The radiographs they train on (your image manifest, synthetic radiographs) are data:
:mod:`radpriv.data.image_manifest` and :mod:`radpriv.data.synthetic_images`.

- ``labels``    inclusive / exclusive 0/1 matrices from extracted or ground-truth label states
- ``cnn``       two-view small CNN and ResNet-50 (transformers, local weights only), training on CPU/GPU
- ``text``      frozen MiniLM report features + logistic heads
- ``compare``   one model per label set, scored on one reference: AUC (DeLong), tests, thresholds, curves
- ``pipeline``  the experiments as single calls (synthetic images, your images, text) and summary tables

Heavy modules (torch, transformers) load on first use.
"""

from __future__ import annotations

import importlib

from radpriv.downstream.labels import (POLICIES, build_label_sets, evaluable_findings, label_matrix,
                                       label_set_summary, states_frame)

_LAZY = {
    "SmallCNN": "cnn", "ResNet50TwoView": "cnn", "load_resnet50": "cnn", "CNNTrainConfig": "cnn",
    "train_classifier": "cnn", "predict_proba": "cnn",
    "MiniLMEncoder": "text", "TextLabelClassifier": "text", "report_features": "text",
    "Comparison": "compare", "compare_label_sets": "compare", "image_trainer": "compare", "text_trainer": "compare",
    "synthetic_image_study": "pipeline", "manifest_image_study": "pipeline", "text_study": "pipeline",
    "summary_table": "pipeline",
}

__all__ = ["POLICIES", "build_label_sets", "evaluable_findings", "label_matrix", "label_set_summary",
           "states_frame", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"radpriv.downstream.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'radpriv.downstream' has no attribute {name!r}")
