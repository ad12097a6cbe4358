"""Metrics, statistical tests and figures."""

from radpriv.evaluate.plots import confusion_grid
from radpriv.evaluate.scoring import (UNANSWERED, binarize, bootstrap_metric, compare_systems, correctness,
                                      fill_failures, per_class_f1, score_labels)

__all__ = ["UNANSWERED", "binarize", "bootstrap_metric", "compare_systems", "confusion_grid", "correctness",
           "fill_failures", "per_class_f1", "score_labels"]
