"""Scoring Study 2's label extraction: three template states, label accuracy, uncertainty detection.

The extraction template (like the published one) has three values per finding: ``true`` (present,
stated without hedging), ``uncertain`` (hedged) and ``false`` (negated *or* not mentioned). Ground truth
in the dataset frames has four :class:`~radpriv.schemas.State` values; for scoring, ``absent`` and
``not_mentioned`` both become ``false`` (:func:`template_states`), so a model is never penalised for a
distinction its template cannot express.

Nothing is dropped: a report whose answer failed (timeout, invalid JSON, ...) gets the value
``unanswered`` for every finding, which never equals the truth, so each of its labels counts as wrong.

:func:`long_labels` stacks (system, region, report, finding, truth, prediction) rows; every metric works
on that table:

- :func:`label_accuracy`         share of correct labels per system and region, and overall (the paper's
  headline figure), with a cluster bootstrap CI (reports are resampled, their labels stay together);
- :func:`exact_match`            share of reports with every label right;
- :func:`uncertainty_detection`  precision and recall of the ``uncertain`` value;
- :func:`state_prf`              per-finding precision/recall/F1 of each of the three values;
- :func:`mcnemar_vs`             label-level McNemar test of each system against a reference system
  (e.g. the rule baseline), Holm-adjusted.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from radpriv import evaluate
from radpriv.schemas import Schema, State

__all__ = ["TEMPLATE_VALUES", "UNANSWERED", "template_states", "long_labels", "label_accuracy", "exact_match",
           "uncertainty_detection", "state_prf", "mcnemar_vs", "extraction_summary"]

TEMPLATE_VALUES = ("true", "uncertain", "false")
UNANSWERED = "unanswered"
_TO_TEMPLATE = {State.PRESENT: "true", State.UNCERTAIN: "uncertain", State.ABSENT: "false",
                State.NOT_MENTIONED: "false"}


def template_states(frame: pd.DataFrame, schema: Schema, report_ids: Sequence[str] | None = None,
                    failures: pd.DataFrame | None = None, source: str = "") -> pd.DataFrame:
    """true/uncertain/false per finding (index ``report_id``), parents propagated; failed reports ``unanswered``.

    ``report_ids`` (default: the frame's) fixes the rows; each must be in ``frame`` or in ``failures``
    (an error otherwise: every input ends as an answer or a recorded failure).
    """
    where = f"{source}: " if source else ""
    frame = frame.assign(report_id=frame["report_id"].astype(str)).set_index("report_id")
    missing = [f for f in schema.ids if f not in frame.columns]
    if missing:
        raise ValueError(f"{where}no column(s) {missing} of schema {schema.name!r}")
    failed = set() if failures is None or not len(failures) else set(failures["report_id"].astype(str))
    ids = [str(r) for r in (report_ids if report_ids is not None else frame.index)]
    lost = [r for r in ids if r not in frame.index and r not in failed]
    if lost:
        raise ValueError(f"{where}{len(lost)} report(s) neither answered nor recorded as failures, e.g. {lost[:3]}")
    rows = []
    for rid in ids:
        if rid not in frame.index:
            rows.append([UNANSWERED] * len(schema.ids))
            continue
        rec = frame.loc[rid, schema.ids]
        try:
            states = schema.propagate({f: State.parse("" if pd.isna(v) else v) for f, v in rec.items()})
        except ValueError as exc:
            raise ValueError(f"{where}report_id {rid!r}: {exc}") from None
        rows.append([_TO_TEMPLATE[states[f]] for f in schema.ids])
    return pd.DataFrame(rows, index=pd.Index(ids, name="report_id"), columns=schema.ids)


def long_labels(truth: pd.DataFrame, systems: Mapping[str, pd.DataFrame], schema: Schema, region: str = "",
                failures: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per (system, report, finding): ``truth`` and ``pred`` as template values, ``correct``.

    ``truth``: the reference frame (its reports define the rows); ``systems``: name -> answer frame
    (report_id + State columns); ``failures``: name -> failure frame of that system (report_id, reason).
    """
    ids = truth["report_id"].astype(str).tolist()
    t = template_states(truth, schema, source="reference").loc[ids]
    parts = []
    for name, answers in systems.items():
        p = template_states(answers, schema, ids, (failures or {}).get(name), source=name)
        part = pd.DataFrame({
            "system": name, "region": region or schema.name,
            "report_id": np.repeat(ids, len(schema.ids)),
            "finding": np.tile(schema.ids, len(ids)),
            "truth": t.to_numpy().ravel(), "pred": p.to_numpy().ravel()})
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["correct"] = out["truth"] == out["pred"]
    return out


# ---------------------------------------------------------------------------------------------
# metrics (cluster bootstrap over reports)
# ---------------------------------------------------------------------------------------------
def _ratio_ci(num: np.ndarray, den: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """sum(num)/sum(den) with a percentile CI from resampling clusters (one entry per report)."""
    total = den.sum()
    value = float(num.sum() / total) if total else float("nan")
    if n_resamples <= 0 or len(num) < 2 or not total:
        return value, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_resamples, len(num)))
    d = den[idx].sum(1)
    r = np.where(d > 0, num[idx].sum(1) / np.maximum(d, 1), np.nan)
    lo, hi = np.nanpercentile(r, [2.5, 97.5])
    return value, float(lo), float(hi)


def _groups(long: pd.DataFrame, overall: bool) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    for system, g in long.groupby("system", sort=False):
        for region, gr in g.groupby("region", sort=False):
            out.append((system, region, gr))
        if overall and g["region"].nunique() > 1:
            out.append((system, "overall", g))
    return out


def _per_report(g: pd.DataFrame, num: pd.Series, den: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    key = [g["region"], g["report_id"]]
    return (num.groupby(key, sort=False).sum().to_numpy(float), den.groupby(key, sort=False).sum().to_numpy(float))


def label_accuracy(long: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, overall: bool = True) -> pd.DataFrame:
    """Share of correct labels per system and region (+ ``overall``), cluster-bootstrap 95 % CI."""
    rows = []
    for system, region, g in _groups(long, overall):
        num, den = _per_report(g, g["correct"].astype(float), pd.Series(1.0, index=g.index))
        v, lo, hi = _ratio_ci(num, den, n_resamples, seed)
        rows.append({"system": system, "region": region, "label_accuracy": v, "ci_low": lo, "ci_high": hi,
                     "n_labels": int(den.sum()), "n_reports": len(den),
                     "unanswered_reports": int(g.loc[g["pred"] == UNANSWERED, ["region", "report_id"]]
                                               .drop_duplicates().shape[0])})
    return pd.DataFrame(rows)


def exact_match(long: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, overall: bool = True) -> pd.DataFrame:
    """Share of reports whose every label is right, per system and region (+ overall), bootstrap CI."""
    rows = []
    for system, region, g in _groups(long, overall):
        ok = g.groupby(["region", "report_id"], sort=False)["correct"].all().to_numpy(float)
        v, lo, hi = _ratio_ci(ok, np.ones_like(ok), n_resamples, seed)
        rows.append({"system": system, "region": region, "exact_match": v, "ci_low": lo, "ci_high": hi,
                     "n_reports": len(ok)})
    return pd.DataFrame(rows)


def uncertainty_detection(long: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, overall: bool = True
                          ) -> pd.DataFrame:
    """Precision and recall of ``uncertain`` (a hedged finding recognised as hedged), bootstrap CIs.

    precision = correct ``uncertain`` answers / all ``uncertain`` answers;
    recall    = correct ``uncertain`` answers / all truly hedged labels.
    """
    rows = []
    for system, region, g in _groups(long, overall):
        tu, pu = g["truth"] == "uncertain", g["pred"] == "uncertain"
        hit = (tu & pu).astype(float)
        num, den_p = _per_report(g, hit, pu.astype(float))
        _, den_r = _per_report(g, hit, tu.astype(float))
        p, plo, phi = _ratio_ci(num, den_p, n_resamples, seed)
        r, rlo, rhi = _ratio_ci(num, den_r, n_resamples, seed)
        f1 = 2 * p * r / (p + r) if p + r > 0 else (0.0 if not np.isnan(p + r) else float("nan"))
        rows.append({"system": system, "region": region, "precision": p, "precision_ci_low": plo,
                     "precision_ci_high": phi, "recall": r, "recall_ci_low": rlo, "recall_ci_high": rhi, "f1": f1,
                     "true_uncertain": int(tu.sum()), "predicted_uncertain": int(pu.sum()), "both": int(hit.sum())})
    return pd.DataFrame(rows)


def state_prf(long: pd.DataFrame) -> pd.DataFrame:
    """Per system, region, finding and template value: precision, recall, F1 and support (truth count).

    A value neither true nor predicted for a finding has support 0 and NaN metrics (shown, not averaged).
    """
    rows = []
    for (system, region, finding), g in long.groupby(["system", "region", "finding"], sort=False):
        for value in TEMPLATE_VALUES:
            t, p = g["truth"] == value, g["pred"] == value
            tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
            prec = tp / (tp + fp) if tp + fp else float("nan")
            rec = tp / (tp + fn) if tp + fn else float("nan")
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
            rows.append({"system": system, "region": region, "finding": finding, "value": value,
                         "precision": prec, "recall": rec, "f1": f1, "support": tp + fn, "predicted": tp + fp})
    return pd.DataFrame(rows)


def mcnemar_vs(long: pd.DataFrame, reference: str | None, overall_only: bool = False) -> pd.DataFrame:
    """Label-level McNemar test of each system against ``reference`` (a system fixed in advance, e.g. the rule
    baseline), or of every pair of systems when ``reference`` is None, per region and overall; Holm-adjusted
    over all rows. Labels of one report are not independent: read p-values as indicative."""
    systems = list(dict.fromkeys(long["system"]))
    if reference is not None and reference not in systems:
        raise ValueError(f"reference system {reference!r} is not in the table (systems: {sorted(systems)})")
    pairs = ([(s, reference) for s in systems if s != reference] if reference is not None
             else list(itertools.combinations(systems, 2)))
    key = ["region", "report_id", "finding"]
    rows = []
    for system, vs in pairs:
        mine = long[long["system"] == system].set_index(key)["correct"]
        ref = long[long["system"] == vs].set_index(key)["correct"]
        both = pd.concat([mine.rename("a"), ref.rename("b")], axis=1, join="inner")
        regions = [] if overall_only else list(both.index.get_level_values("region").unique())
        for region in [*regions, "overall"]:
            sub = both if region == "overall" else both.xs(region, level="region", drop_level=False)
            if region == "overall" and len(regions) == 1:
                continue
            t = evaluate.mcnemar_test(sub["a"].to_numpy(), sub["b"].to_numpy())
            rows.append({"system": system, "vs": vs, "region": region, "accuracy": sub["a"].mean(),
                         "accuracy_vs": sub["b"].mean(), "only_system_right": t["b"], "only_vs_right": t["c"],
                         "statistic": t["statistic"], "p": t["pvalue"], "exact": t["exact"], "n_labels": len(sub)})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = evaluate.holm(out["p"].to_numpy())
    return out


def extraction_summary(long: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per system and region (+ overall): label accuracy [CI], exact match, uncertainty P/R, failures."""
    acc = label_accuracy(long, n_resamples, seed).set_index(["system", "region"])
    em = exact_match(long, n_resamples, seed).set_index(["system", "region"])
    unc = uncertainty_detection(long, n_resamples, seed).set_index(["system", "region"])
    out = pd.DataFrame({
        "label accuracy": acc["label_accuracy"],
        "95% CI": [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(acc["ci_low"], acc["ci_high"])],
        "exact match": em["exact_match"], "uncertainty precision": unc["precision"],
        "uncertainty recall": unc["recall"], "reports": acc["n_reports"],
        "unanswered reports": acc["unanswered_reports"]})
    return out.reset_index()

