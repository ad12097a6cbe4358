"""Metrics, statistical tests and figures."""

from radpriv.evaluate.plots import confusion_grid
from radpriv.evaluate.scoring import binarize, bootstrap_metric, score_labels

__all__ = ["binarize", "bootstrap_metric", "confusion_grid", "score_labels"]
