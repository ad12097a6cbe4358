"""Train one classifier per label set and compare them on one reference: AUCs, DeLong, thresholds.

The Study 2 question: does a classifier trained on *inclusive* labels (uncertain -> 1) differ from one
trained on *exclusive* labels (uncertain -> 0)? :func:`compare_label_sets` trains the same model on each
label set (same cases, same seed; only the labels differ), predicts the test split, and scores every model
against one reference label matrix (for synthetic radiographs: what is truly drawn on the image; for text:
the ground truth under a stated policy; for your data: your reference standard).

Statistics: per-finding AUC with DeLong CIs (:mod:`radpriv.evaluate`); macro AUC with a DeLong CI and a
paired DeLong test between label sets whose variance keeps the correlation between findings (structural
components summed per case over findings, :func:`radpriv.evaluate.macro_auc_delong` and
:func:`radpriv.evaluate.macro_auc_delong_test`; parents and sub-findings are read from the same cases),
beside the per-finding DeLong tests (Holm-adjusted) and a paired bootstrap CI of the macro difference as a
model-free check. Per-finding thresholds are chosen on the validation split against the
training label set (Youden's J; the reference is never used for model selection), then sensitivity and
specificity are reported on the test split with Wilson 95 % intervals.

Findings are compared only where the test reference has both classes and every training label set has
positives (:func:`~radpriv.downstream.labels.evaluable_findings`); the others are listed in
``Comparison.excluded`` with the reason, never averaged silently.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve
from statsmodels.stats.proportion import proportion_confint

from radpriv import evaluate
from radpriv.downstream.labels import evaluable_findings
from radpriv.evaluate.scoring import choose_thresholds

__all__ = ["Trainer", "LabelSetRun", "Comparison", "compare_label_sets", "threshold_metrics",
           "image_trainer", "text_trainer"]

#: fit on (train rows, validation rows) with labels Y [n, K]; return (validation proba, test proba, info)
Trainer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, dict]]


def threshold_metrics(y_true: np.ndarray, proba: np.ndarray, thresholds: np.ndarray, names: Sequence[str]
                      ) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV and F1 per finding at the given thresholds (Wilson 95 % CIs)."""
    rows = []
    for k, name in enumerate(names):
        y, pred = np.asarray(y_true)[:, k].astype(int), (np.asarray(proba)[:, k] >= thresholds[k]).astype(int)
        tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
        tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())

        def prop(a, b):
            if a + b == 0:
                return np.nan, np.nan, np.nan
            lo, hi = proportion_confint(a, a + b, method="wilson")
            return a / (a + b), lo, hi

        sens, sens_lo, sens_hi = prop(tp, fn)
        spec, spec_lo, spec_hi = prop(tn, fp)
        ppv = tp / (tp + fp) if tp + fp else np.nan
        npv = tn / (tn + fn) if tn + fn else np.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        rows.append({"finding": name, "threshold": float(thresholds[k]), "sensitivity": sens, "sens_ci_low": sens_lo,
                     "sens_ci_high": sens_hi, "specificity": spec, "spec_ci_low": spec_lo, "spec_ci_high": spec_hi,
                     "ppv": ppv, "npv": npv, "f1": f1, "tp": tp, "fn": fn, "tn": tn, "fp": fp})
    return pd.DataFrame(rows)


@dataclass
class LabelSetRun:
    name: str
    proba_val: np.ndarray
    proba_test: np.ndarray
    thresholds: np.ndarray
    info: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """Test predictions of one model per label set, scored against ``reference`` (0/1, test rows)."""

    findings: list[str]
    excluded: dict[str, str]
    reference_name: str
    report_ids: list[str]
    y_test: np.ndarray
    runs: dict[str, LabelSetRun]
    kind: str = ""

    @property
    def label_sets(self) -> list[str]:
        return list(self.runs)

    def auc_table(self) -> pd.DataFrame:
        """Per finding and label set: AUC with DeLong 95 % CI, positives and negatives in the reference."""
        rows = []
        for name, run in self.runs.items():
            for k, f in enumerate(self.findings):
                y = self.y_test[:, k]
                r = evaluate.delong_auc_ci(y, run.proba_test[:, k])
                rows.append({"label_set": name, "finding": f, "auc": r["auc"], "ci_low": r["ci_low"],
                             "ci_high": r["ci_high"], "n_pos": int(y.sum()), "n_neg": int(len(y) - y.sum())})
        return pd.DataFrame(rows)

    def macro_auc(self) -> pd.DataFrame:
        """Macro AUC (mean over the compared findings) per label set with the case-level DeLong 95 % CI
        (:func:`radpriv.evaluate.macro_auc_delong`: correlation between findings kept, clipped to [0, 1])."""
        rows = []
        for name, run in self.runs.items():
            res = evaluate.macro_auc_delong(self.y_test, run.proba_test, label_names=self.findings)
            macro = res[res["label"] == "macro"].iloc[0]
            rows.append({"label_set": name, "macro_auc": float(macro["auc"]), "ci_low": float(macro["ci_low"]),
                         "ci_high": float(macro["ci_high"]), "n_findings": len(res) - 1,
                         "n_test": len(self.y_test), "reference": self.reference_name})
        return pd.DataFrame(rows)

    def delong_tests(self, pairs: Sequence[tuple[str, str]] | None = None, n_resamples: int = 1000, seed: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Paired comparisons between label sets on the same test cases.

        Returns ``(macro, per_finding)``. Per finding: DeLong test (:func:`radpriv.evaluate.delong_roc_test`),
        Holm-adjusted over findings. Macro AUC difference: ``p_delong`` is the case-level DeLong test of the
        paired difference (:func:`radpriv.evaluate.macro_auc_delong_test`; findings share cases, so a parent
        and its sub-findings are correlated); a paired bootstrap 95 % CI of the difference over test cases
        (``n_resamples``) is the model-free check.
        """
        pairs = list(pairs) if pairs is not None else list(itertools.combinations(self.runs, 2))
        macro_rows, rows = [], []
        for a, b in pairs:
            pa, pb = self.runs[a].proba_test, self.runs[b].proba_test
            ps, first = [], len(rows)
            for k, f in enumerate(self.findings):
                t = evaluate.delong_roc_test(self.y_test[:, k], pa[:, k], pb[:, k])
                ps.append(t["pvalue"])
                rows.append({"a": a, "b": b, "finding": f, "auc_a": t["auc_a"], "auc_b": t["auc_b"],
                             "difference": t["difference"], "z": t["z"], "p": t["pvalue"]})
            for r, q in zip(rows[first:], evaluate.holm(ps)):
                r["p_holm"] = float(q)
            cases = evaluate.macro_auc_delong_test(self.y_test, pa, pb)
            boot = _paired_bootstrap_macro_diff(self.y_test, pa, pb, n_resamples, seed)
            macro_rows.append({
                "a": a, "b": b, "macro_auc_a": float(np.mean([r["auc_a"] for r in rows[first:]])),
                "macro_auc_b": float(np.mean([r["auc_b"] for r in rows[first:]])), "difference": cases["estimate"],
                "delong_se": cases["se"], "ci_low": cases["ci_low"], "ci_high": cases["ci_high"],
                "z": cases["z"], "p_delong": cases["p"], "boot_ci_low": boot[1], "boot_ci_high": boot[2],
                "findings_p_holm_below_0.05": int(sum(r["p_holm"] < 0.05 for r in rows[first:])),
                "n_findings": len(self.findings), "n_test": len(self.y_test), "reference": self.reference_name})
        return pd.DataFrame(macro_rows), pd.DataFrame(rows)

    def threshold_table(self) -> pd.DataFrame:
        """Sensitivity/specificity per finding and label set at the validation-chosen thresholds."""
        parts = []
        for name, run in self.runs.items():
            t = threshold_metrics(self.y_test, run.proba_test, run.thresholds, self.findings)
            t.insert(0, "label_set", name)
            parts.append(t)
        return pd.concat(parts, ignore_index=True)

    def threshold_summary(self) -> pd.DataFrame:
        """Mean sensitivity and specificity over findings per label set."""
        t = self.threshold_table()
        return (t.groupby("label_set", sort=False)[["sensitivity", "specificity", "ppv", "f1"]].mean()
                .reset_index().rename(columns=lambda c: c if c == "label_set" else f"mean_{c}"))

    def curves(self, kind: str = "pr", findings: Sequence[str] | None = None, cols: int = 5):
        """PR (``kind='pr'``) or ROC curves per finding, one line per label set; a grid of small panels."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

        if kind not in ("pr", "roc"):
            raise ValueError("kind must be 'pr' or 'roc'")
        names = list(findings) if findings is not None else self.findings
        cols = min(cols, len(names))
        rows_ = int(np.ceil(len(names) / cols))
        fig, axes = plt.subplots(rows_, cols, figsize=(2.6 * cols, 2.4 * rows_), squeeze=False, sharex=True,
                                 sharey=True)
        palette = dict(zip(self.runs, sns.color_palette("deep", len(self.runs))))
        for ax, f in zip(axes.ravel(), names):
            k = self.findings.index(f)
            y = self.y_test[:, k]
            for name, run in self.runs.items():
                s = run.proba_test[:, k]
                if kind == "pr":
                    prec, rec, _ = precision_recall_curve(y, s)
                    ax.step(rec, prec, where="post", color=palette[name], lw=1.2,
                            label=f"{name} AP {average_precision_score(y, s):.2f}")
                else:
                    fpr, tpr, _ = roc_curve(y, s)
                    ax.plot(fpr, tpr, color=palette[name], lw=1.2, label=f"{name} {roc_auc_score(y, s):.2f}")
            if kind == "pr":
                ax.axhline(y.mean(), ls=":", c="grey", lw=0.8)
            else:
                ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=0.8)
            ax.set_title(f"{f} (n+={int(y.sum())})", fontsize=8)
            ax.legend(fontsize=5.5, loc="lower left" if kind == "pr" else "lower right", frameon=False)
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("recall" if kind == "pr" else "1 - specificity", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("precision" if kind == "pr" else "sensitivity", fontsize=8)
        fig.suptitle(f"{'Precision-recall' if kind == 'pr' else 'ROC'} curves on the test split "
                     f"(reference: {self.reference_name})", fontsize=10)
        fig.tight_layout()
        return fig


def _paired_bootstrap_macro_diff(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, n_resamples: int, seed: int
                                 ) -> tuple[float, float, float]:
    """Macro AUC(a) - macro AUC(b) with a percentile CI from resampling test cases (pairs kept together);
    in a resample, findings with fewer than one case of each class are left out of both means. AUCs come from
    midranks of all resamples at once (Mann-Whitney), equal to ``roc_auc_score``."""
    from scipy.stats import rankdata

    def aucs(idx: np.ndarray, s: np.ndarray, yk: np.ndarray) -> np.ndarray:
        yy = yk[idx]                                   # [B, n]
        m = yy.sum(1)
        n = yy.shape[1] - m
        r = rankdata(s[idx], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((r * yy).sum(1) - m * (m + 1) / 2) / (m * n)

    idx0 = np.arange(len(y))[None, :]
    point = [aucs(idx0, pa[:, k], y[:, k]) - aucs(idx0, pb[:, k], y[:, k]) for k in range(y.shape[1])]
    value = float(np.nanmean(np.concatenate(point)))
    if n_resamples <= 0 or len(y) < 2:
        return value, float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_resamples, len(y)))
    diffs = np.column_stack([aucs(idx, pa[:, k], y[:, k]) - aucs(idx, pb[:, k], y[:, k]) for k in range(y.shape[1])])
    macro = np.array([np.nanmean(row) if np.isfinite(row).any() else 0.0 for row in diffs])
    lo, hi = np.percentile(macro, [2.5, 97.5])
    return value, float(lo), float(hi)


def compare_label_sets(label_sets: Mapping[str, pd.DataFrame], reference: pd.DataFrame, split: pd.Series,
                       trainer: Trainer, reference_name: str = "reference", findings: Sequence[str] | None = None,
                       min_positive: int = 2, kind: str = "") -> Comparison:
    """Train ``trainer`` once per label set and collect test predictions scored against ``reference``.

    ``label_sets``: name -> 0/1 frame (index report_id, columns findings), e.g. from
    :func:`~radpriv.downstream.labels.build_label_sets`; ``reference``: 0/1 frame of the same reports
    (only its test rows are used); ``split``: train/validation/test per report_id (a Series indexed by
    report_id). All frames must cover the same reports.
    """
    if not label_sets:
        raise ValueError("no label sets to compare")
    first = next(iter(label_sets.values()))
    order = first.index
    for name, m in label_sets.items():
        if not m.index.equals(order):
            missing = order.difference(m.index)
            if len(missing):
                raise ValueError(f"label set {name!r} lacks {len(missing)} report(s), e.g. {list(missing[:3])}")
            label_sets = {**label_sets, name: m.loc[order]}
    missing = order.difference(reference.index)
    if len(missing):
        raise ValueError(f"reference {reference_name!r} lacks {len(missing)} report(s), e.g. {list(missing[:3])}")
    reference = reference.loc[order]
    split = split.reindex(order)
    if split.isna().any():
        raise ValueError(f"split has no value for {int(split.isna().sum())} report(s), e.g. "
                         f"{list(split.index[split.isna()][:3])}; pass a Series indexed by report_id")
    split = split.to_numpy()
    rows = {s: np.where(split == s)[0] for s in ("train", "validation", "test")}
    for s, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"no {s} rows: every comparison needs train, validation and test splits")
    candidates = list(findings) if findings is not None else [c for c in first.columns if c in reference.columns]
    keep = evaluable_findings(reference.iloc[rows["test"]][candidates],
                              *[m.iloc[rows["train"]][candidates] for m in label_sets.values()],
                              min_positive=min_positive, min_negative=min_positive)
    excluded = {}
    for f in candidates:
        if f in keep:
            continue
        ref = reference.iloc[rows["test"]][f]
        if ref.sum() < min_positive or (1 - ref).sum() < min_positive:
            excluded[f] = f"test reference has {int(ref.sum())} positive(s) / {int((1 - ref).sum())} negative(s)"
        else:
            low = [n for n, m in label_sets.items() if m.iloc[rows["train"]][f].sum() < min_positive]
            excluded[f] = f"fewer than {min_positive} training positives in {', '.join(low)}"
    if not keep:
        raise ValueError(f"no finding has >= {min_positive} positives in the test reference and every training "
                         f"label set; enlarge the data ({len(order)} reports)")
    runs = {}
    for name, m in label_sets.items():
        Y = m[keep].to_numpy().astype(np.float32)
        p_val, p_test, info = trainer(rows["train"], rows["validation"], rows["test"], Y)
        thr = choose_thresholds(Y[rows["validation"]], p_val, rule="youden")
        runs[name] = LabelSetRun(name=name, proba_val=p_val, proba_test=p_test, thresholds=thr, info=info)
    return Comparison(findings=keep, excluded=excluded, reference_name=reference_name,
                      report_ids=[str(order[i]) for i in rows["test"]],
                      y_test=reference.iloc[rows["test"]][keep].to_numpy().astype(int), runs=runs, kind=kind)


# ---------------------------------------------------------------------------------------------
# trainers
# ---------------------------------------------------------------------------------------------
def image_trainer(images: np.ndarray | None, model_factory: Callable[[int], "object"], config=None,
                  dataset_factory: Callable[[np.ndarray, np.ndarray | None], object] | None = None) -> Trainer:
    """A :data:`Trainer` for two-view image models.

    ``images``: in-memory ``[N, V, H, W]`` (synthetic radiographs), or ``None`` with ``dataset_factory(rows,
    labels)`` building a lazily loading dataset (e.g. :class:`~radpriv.downstream.cnn.ManifestCases`).
    ``model_factory(n_labels)`` returns a fresh model (``SmallCNN`` or ``ResNet50TwoView``).
    """
    from radpriv.downstream.cnn import ArrayCases, CNNTrainConfig, predict_proba, train_classifier

    config = config or CNNTrainConfig()

    def make(rows, Y):
        if dataset_factory is not None:
            return dataset_factory(rows, Y)
        return ArrayCases(images[rows], Y)

    def fit(tr, va, te, Y):
        fit_ = train_classifier(model_factory(Y.shape[1]), make(tr, Y[tr]), make(va, Y[va]), config)
        kw = {"device": fit_.device, "amp": config.amp, "batch_size": max(config.batch_size, 64)}
        p_val = predict_proba(fit_.model, make(va, Y[va]), **kw)
        p_test = predict_proba(fit_.model, make(te, Y[te]), **kw)
        return p_val, p_test, {"best_epoch": fit_.best_epoch, "best_val_auc": fit_.best_val_auc,
                               "history": fit_.history, "device": fit_.device}

    return fit


def text_trainer(features: np.ndarray, classifier_factory: Callable[[], object] | None = None) -> Trainer:
    """A :data:`Trainer` for frozen report embeddings + :class:`~radpriv.downstream.text.TextLabelClassifier`."""
    from radpriv.downstream.text import TextLabelClassifier

    factory = classifier_factory or TextLabelClassifier

    def fit(tr, va, te, Y):
        clf = factory().fit(features[tr], Y[tr], features[va], Y[va])
        return clf.predict_proba(features[va]), clf.predict_proba(features[te]), \
            {"C": clf.C, "val_auc_by_C": clf.val_auc_by_C, "constant": clf.constant}

    return fit
