"""Figures (headless, seaborn). Each function returns a matplotlib Figure."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from radpriv import paths  # noqa: E402

plt.style.use(str(paths.MPLSTYLE))


def confusion_grid(results: dict, labels: list[str], normalize: bool = True, cols: int = 3):
    """A grid of confusion matrices, one per system: ``{name: (y_true, y_pred)}``.
    Cells show row-normalised rates as colour and raw counts as text."""
    n = len(results)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    short = [lab[:14] for lab in labels]
    for ax, (name, (yt, yp)) in zip(axes.flat, results.items()):
        cm = confusion_matrix(list(yt), list(yp), labels=labels)
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        sns.heatmap(rates, annot=cm, fmt="d", cmap="Blues", vmin=0, vmax=1 if normalize else None, cbar=False,
                    xticklabels=short, yticklabels=short, ax=ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
