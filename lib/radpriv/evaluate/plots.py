"""Figures (headless, seaborn). Each function returns a matplotlib Figure."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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


def metric_bars_with_ci(table, metric: str = "macro_f1", label: str = "system"):
    """Horizontal bars of ``metric`` per row of ``table`` with its CI (columns <metric>_low/_high)."""
    t = table.sort_values(metric)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.2))
    err = np.vstack([t[metric] - t[f"{metric}_low"], t[f"{metric}_high"] - t[metric]]).clip(min=0)
    ax.barh(t[label].astype(str), t[metric], xerr=err, color=sns.color_palette("deep")[0], capsize=3)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(f"{metric.replace('_', ' ')} (95 % CI)")
    fig.tight_layout()
    return fig


def roc_curves(curves: dict, title: str = ""):
    """ROC curves ``{name: (y_true, score)}`` with the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.2f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def privacy_utility_curve(df, x: str = "epsilon", y: str = "weighted_f1", hue: str = "mode"):
    """Utility against ε on a log axis; ε = ∞ (non-private) rows drawn as horizontal reference lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = df[np.isfinite(df[x].astype(float))]
    if len(finite):
        sns.lineplot(data=finite, x=x, y=y, hue=hue, marker="o", errorbar=("ci", 95), ax=ax)
    for i, (name, g) in enumerate(df[~np.isfinite(df[x].astype(float))].groupby(hue)):
        ax.axhline(g[y].mean(), ls="--", lw=1, color=sns.color_palette("muted")[(i + 3) % 10], label=f"{name} (ε = ∞)")
    ax.set_xscale("log")
    ax.set_xlabel("ε (log scale)")
    ax.set_ylabel(y.replace("_", " "))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(runs, cols: int = 4):
    """Training (solid) and validation (dashed) loss per epoch for each run of a grid (``history`` column)."""
    runs = list(runs.itertuples()) if hasattr(runs, "itertuples") else list(runs)
    n = len(runs)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, min(cols, n) or 1, figsize=(3.2 * min(cols, n or 1), 2.6 * rows), squeeze=False,
                             sharey=True)
    for ax, r in zip(axes.flat, runs):
        h = pd.DataFrame(r.history)
        ax.plot(h["epoch"], h["train_loss"], marker="o", label="train")
        if "val_loss" in h:
            ax.plot(h["epoch"], h["val_loss"], marker="o", ls="--", label="validation")
        eps = "∞" if not np.isfinite(r.epsilon) else f"{r.epsilon:g}"
        ax.set_title(f"{r.mode} ε={eps}" + (" (public)" if getattr(r, "init", "none") == "public" else ""), fontsize=9)
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("BCE loss")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def show(fig, dpi: int = 110) -> None:
    """Display ``fig`` in a notebook as an embedded PNG and close it. The project renders headless (Agg), under
    which ``plt.show()`` displays nothing; this works under any backend, so figures reach the HTML reports."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="png"))
