"""Score answers CSVs against a dataset's reference labels: what ``radpriv evaluate`` computes and writes.

    from radpriv.data import load_dataset
    from radpriv.evaluate.report import evaluate_predictions, method_notes, read_predictions, write_report

    ds = load_dataset("synthetic_cmr")
    preds = {"rules": read_predictions("labels.csv", ds, split="test")}
    metrics, pairs = evaluate_predictions(ds, preds, split="test", n_resamples=1000, seed=0)
    write_report("evaluation", metrics, pairs, method_notes(ds, "test", "exclusive", 1000, 0, len(preds)))

What is computed (and stated in every output, see :func:`method_notes`):

- single-label: per category precision / recall / F1 and support (scikit-learn
  ``precision_recall_fscore_support`` with ``labels=`` every category of the schema), accuracy, macro and
  weighted P/R/F1 over one class set (:func:`radpriv.evaluate.class_set`: the categories that occur in the
  reference, fixed before resampling; the same set the notebooks use);
- multi-label: per finding P/R/F1 of the positive class after binarisation
  (:func:`radpriv.evaluate.binarize`: present positive; uncertain positive under ``inclusive``,
  negative under ``exclusive``), macro over the findings with a positive reference report, weighted by
  reference support, and exact match (every finding right);
- every value with a percentile bootstrap 95 % CI over reports (:func:`radpriv.evaluate.bootstrap_metric`);
- between systems: McNemar on per-report correctness (:func:`radpriv.evaluate.mcnemar_test`: exact
  binomial below 25 discordant pairs), Holm-corrected over all pairs (:func:`radpriv.evaluate.holm`).

Predictions are validated before anything is computed, and nothing is dropped silently: report ids
unknown to the manifest, reports of the evaluated split without a prediction, a missing label column,
values outside the schema's categories / states and duplicated ids each raise :class:`EvaluationError`
naming the file, the rows or ids and what to do. Reports recorded in the run's failures file
(``OUT.failures.csv`` of ``radpriv label``) are scored as wrong answers (:func:`fill_failures`), and
answers for reports of other splits are counted and set aside; both are stated in the output.
"""

from __future__ import annotations

import hashlib
import html
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from radpriv import paths
from radpriv.data.manifest import Dataset, read_csv
from radpriv.evaluate.scoring import binarize, bootstrap_metric, class_set, class_set_note, fill_failures
from radpriv.evaluate.stats import holm, mcnemar_test
from radpriv.schemas import State, UNCERTAINTY_POLICIES

SPLITS = ("train", "validation", "test", "all")
STATES = tuple(s.value for s in State)
METRIC_COLUMNS = ["system", "kind", "label", "metric", "value", "ci_lo", "ci_hi", "support", "n_reports"]
PAIR_COLUMNS = ["system_a", "system_b", "n_reports", "accuracy_a", "accuracy_b", "both_right", "only_a_right",
                "only_b_right", "both_wrong", "test", "statistic", "p", "p_holm", "significant_0.05"]


class EvaluationError(ValueError):
    """Predictions that cannot be scored: ``<what> (<where>); <what to do>``."""


@dataclass
class Predictions:
    """One system's validated predictions, aligned with the reference reports of the evaluated split."""

    name: str
    frame: pd.DataFrame          # report_id + label column(s), one row per reference report, in reference order
    source: str                  # the file (or "predictions 'NAME'" for a frame)
    n_answers: int               # answers for reports of the evaluated split
    n_failures: int = 0          # reports of the split recorded as failures: scored as wrong
    n_other_split: int = 0       # answers for manifest reports of other splits: not scored
    failures_source: str = ""
    sha256: str = ""


def failures_file(pred: str | Path) -> Path:
    """``labels.csv`` -> ``labels.failures.csv`` (where ``radpriv label`` records failed reports)."""
    pred = Path(pred)
    return pred.with_name(pred.stem + ".failures.csv")


def _few(values, k: int = 5) -> str:
    vals = list(values)
    out = ", ".join(repr(str(v)) for v in vals[:k])
    return out + (", ..." if len(vals) > k else "")


def _rows(rows, k: int = 5) -> str:
    rows = list(rows)
    more = ", ..." if len(rows) > k else ""
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(str(r) for r in rows[:k]) + more


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def reference(ds: Dataset, split: str = "test") -> pd.DataFrame:
    """The reference frame of the evaluated split (``all``: every report)."""
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r} (--split); choose one of {', '.join(SPLITS)}")
    ref = ds.frame if split == "all" else ds.split(split)
    if ref.empty:
        have = sorted(ds.frame["split"].unique())
        raise EvaluationError(f"no {split} reports in {ds.name} (manifest {ds.manifest_path}); evaluate one of its "
                              f"splits: --split {' / '.join([*have, 'all'])}")
    return ref.reset_index(drop=True)


def label_columns(ds: Dataset) -> list[str]:
    return ["label"] if ds.schema.task == "single" else list(ds.schema.ids)


def check_predictions(frame: pd.DataFrame, ds: Dataset, split: str = "test", name: str = "predictions",
                      source: str | None = None, failed_ids=(), failures_source: str = "") -> Predictions:
    """Validate one system's answers (report_id + label column(s)) against the dataset and align them
    with the reference reports of ``split``; ``failed_ids``: reports recorded as failures (scored wrong)."""
    schema = ds.schema
    where = source or f"predictions {name!r}"
    cols = label_columns(ds)
    fmt = ("report_id + label (one category id per report)" if schema.task == "single"
           else f"report_id + one state column per finding of schema {schema.name}")
    missing = [c for c in ["report_id", *cols] if c not in frame.columns]
    if missing:
        present = ", ".join(map(str, list(frame.columns)[:12])) + (", ..." if len(frame.columns) > 12 else "")
        raise EvaluationError(f"{_plural(len(missing), 'column')} missing: {_few(missing)} ({where}; columns present: "
                              f"{present or 'none'}); give the answers CSV of `radpriv label`: {fmt}")
    df = frame[["report_id", *cols]].reset_index(drop=True)
    df["report_id"] = df["report_id"].astype(str).str.strip()
    rows = pd.Series(np.arange(1, len(df) + 1), index=df.index)  # data rows, 1-based (the header is not a row)
    empty = df.index[df["report_id"].isin(["", "nan", "None"])]
    if len(empty):
        raise EvaluationError(f"{_plural(len(empty), 'prediction')} without a report id ({where}, "
                              f"{_rows(rows[empty])}); every row needs the report_id of a report of {ds.name}")
    dup = df["report_id"][df["report_id"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise EvaluationError(f"{_plural(dup.nunique(), 'report id')} predicted more than once, e.g. {first!r} in "
                              f"{_rows(rows[dup.index[dup == first]])} ({where}); keep one prediction per report "
                              "(duplicated ids in all: " + _few(dup.unique()) + ")")
    known = set(ds.frame["report_id"])
    unknown = df.index[~df["report_id"].isin(known)]
    if len(unknown):
        ids = df.loc[unknown, "report_id"]
        raise EvaluationError(f"{_plural(len(unknown), 'report id')} not in manifest {ds.name}: {_few(ids)} ({where}, "
                              f"{_rows(rows[unknown])}); score predictions against the manifest they were made for "
                              f"(--manifest), or remove these rows")
    # values: category ids / state names, exactly (case and surrounding spaces aside for states)
    for c in cols:
        raw = df[c].astype(str).str.strip()
        if schema.task == "single":
            allowed = set(schema.ids)
            norm = raw
        else:
            allowed = set(STATES)
            norm = raw.str.lower()
        bad = norm.index[~norm.isin(allowed)]
        if len(bad):
            counts = raw[bad].value_counts()
            vals = ", ".join(f"{v!r} ({n})" for v, n in list(counts.items())[:5]) + (", ..." if len(counts) > 5 else "")
            i = bad[0]
            if schema.task == "single":
                what = f"{_plural(len(bad), 'value')} outside the categories of schema {schema.name}: {vals}"
                todo = f"use the category ids: {', '.join(schema.ids)}"
                try:
                    todo = f"did you mean {schema.resolve(raw[i])!r}? " + todo
                except KeyError:
                    pass
            else:
                what = f"{_plural(len(bad), 'value')} outside the label states: {vals}"
                todo = "use " + ", ".join(STATES[:-1]) + f" or {STATES[-1]}"
            raise EvaluationError(f"{what} ({where}, column {c!r}, {_rows(rows[bad])}, first report "
                                  f"{df.at[i, 'report_id']!r}); {todo}")
        df[c] = norm
    ref = reference(ds, split)
    in_split = set(ref["report_id"])
    answered = df[df["report_id"].isin(in_split)]
    n_other = len(df) - len(answered)
    have = set(answered["report_id"])
    failed = set(str(r).strip() for r in failed_ids)
    lacking = [r for r in ref["report_id"] if r not in have]
    lost = [r for r in lacking if r not in failed]
    if lost:
        scope = "reports" if split == "all" else f"{split} reports"
        cover = sorted(ds.frame.loc[ds.frame["report_id"].isin(set(df["report_id"])), "split"].unique())
        listed = f", neither answered nor listed in {failures_source}" if failures_source else ""
        manifest = ds.name if ds.manifest_path is None or ds.manifest_path.parent == paths.MANIFESTS \
            else ds.manifest_path
        label_cmd = f"radpriv label --manifest {manifest}" + ("" if split == "all" else f" --split {split}")
        raise EvaluationError(f"{len(lost)} of the {len(ref)} {scope} of {ds.name} have no prediction: {_few(lost)} "
                              f"({where}{listed}); label them ({label_cmd} ...), or evaluate another split with "
                              f"--split (the predictions cover: {', '.join(cover) or 'none'})")
    n_failed = len(lacking)
    aligned = fill_failures(ref, answered, pd.DataFrame({"report_id": lacking}), schema)
    return Predictions(name=name, frame=aligned, source=where, n_answers=len(answered), n_failures=n_failed,
                       n_other_split=n_other, failures_source=failures_source if n_failed else "")


def read_predictions(path: str | Path, ds: Dataset, split: str = "test", name: str | None = None,
                     failures: str | Path | None | bool = True) -> Predictions:
    """Read and validate an answers CSV. ``failures``: True reads ``OUT.failures.csv`` next to it when it exists
    (its reports are scored as wrong answers), a path reads that file, False/None reads none."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"predictions file not found ({path}); give the answers CSV written by "
                              "`radpriv label --out FILE` (--pred)")
    if path.stat().st_size == 0:
        raise EvaluationError(f"empty file ({path}); give the answers CSV written by `radpriv label --out FILE`")
    frame = read_csv(path)
    failed: list[str] = []
    fsource = ""
    fpath = failures_file(path) if failures is True else (Path(failures) if failures else None)
    if fpath is not None and not fpath.is_file() and failures is not True:
        raise EvaluationError(f"failures file not found ({fpath}); check the path")
    if fpath is not None and fpath.is_file() and fpath.stat().st_size > 1:
        fdf = read_csv(fpath)
        if len(fdf) and "report_id" not in fdf.columns:
            raise EvaluationError(f"failures file without a report_id column ({fpath}); it should be the "
                                  "OUT.failures.csv written by `radpriv label` (report_id, reason, detail)")
        if len(fdf):
            failed = fdf["report_id"].astype(str).str.strip().tolist()
            fsource = str(fpath)
    p = check_predictions(frame, ds, split, name=name or path.stem, source=str(path), failed_ids=failed,
                          failures_source=fsource)
    p.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return p


# ------------------------------------------------------------------------------------------------ metrics


def _bootstrapped(compute, n: int, keys: list, n_resamples: int, seed: int) -> dict:
    """``bootstrap_metric`` for every key of ``compute(idx) -> {key: value}``. All keys share the same
    resamples (same seed), so each resample's dict is computed once and looked up per key."""
    memo: dict[bytes, dict] = {}

    def stats(idx: np.ndarray) -> dict:
        k = idx.tobytes()
        if k not in memo:
            memo[k] = compute(idx)
        return memo[k]

    return {key: bootstrap_metric(lambda i, key=key: stats(np.asarray(i, dtype=np.int64))[key], n, n_resamples, seed)
            for key in keys}


def _weighted(x: np.ndarray, s: np.ndarray) -> float:
    """sklearn's ``average='weighted'``: the mean weighted by support (0 when nothing is supported)."""
    return float(np.average(x, weights=s)) if s.sum() > 0 else 0.0


def _system_metrics(ref: pd.DataFrame, pred: pd.DataFrame, ds: Dataset, policy: str, n_resamples: int,
                    seed: int) -> tuple[list[dict], np.ndarray]:
    """Metric rows (without the system name) and the per-report correctness of one system."""
    schema = ds.schema
    n = len(ref)
    rows: list[dict] = []
    names = ("precision", "recall", "f1")
    if schema.task == "single":
        labels = list(schema.ids)
        yt, yp = ref["label"].to_numpy(object), pred["label"].to_numpy(object)
        support = np.array([int((yt == c).sum()) for c in labels])
        keep = np.isin(labels, class_set(ref, schema)[0])  # the class set: categories occurring in the reference

        correct = yt == yp

        def compute(i):
            p, r, f, s = precision_recall_fscore_support(yt[i], yp[i], labels=labels, average=None, zero_division=0)
            out = {"accuracy": float(correct[i].mean())}  # = sklearn accuracy_score, without its per-call overhead
            for m, x in zip(names, (p, r, f)):
                out.update({(c, m): x[j] for j, c in enumerate(labels)})
                out[("macro", m)] = float(np.mean(x[keep]))
                out[("weighted", m)] = _weighted(x, s)
            return out

        kind, overall = "category", "accuracy"
    else:
        labels = list(schema.ids)
        Yt, Yp = binarize(ref, labels, policy), binarize(pred, labels, policy)
        support = Yt.sum(axis=0)
        keep = np.isin(labels, class_set(ref, schema, policy)[0])  # findings with a positive reference report
        correct = (Yt == Yp).all(axis=1)  # exact match: every finding right

        def compute(i):
            if len(labels) == 1:  # one finding: sklearn reads an n x 1 matrix as binary
                p, r, f, s = precision_recall_fscore_support(Yt[i, 0], Yp[i, 0], labels=[1], average=None,
                                                             zero_division=0)
            else:
                p, r, f, s = precision_recall_fscore_support(Yt[i], Yp[i], average=None, zero_division=0)
            out = {"exact_match": float(correct[i].mean())}  # = sklearn accuracy_score (subset accuracy)
            for m, x in zip(names, (p, r, f)):
                out.update({(c, m): x[j] for j, c in enumerate(labels)})
                out[("macro", m)] = float(np.mean(x[keep])) if keep.any() else float("nan")
                out[("weighted", m)] = _weighted(x, s)
            return out

        kind, overall = "finding", "exact_match"
    keys = [(c, m) for c in labels for m in names] + [(a, m) for a in ("macro", "weighted") for m in names] + [overall]
    res = _bootstrapped(compute, n, keys, n_resamples, seed)
    sup = dict(zip(labels, support.tolist()))
    for key in keys:
        v, lo, hi = res[key]
        if key == overall:
            rows.append({"kind": "overall", "label": "all", "metric": overall, "support": n})
        else:
            lab, m = key
            avg = lab in ("macro", "weighted")
            s = int(support[keep].sum()) if lab == "macro" else int(support.sum()) if avg else int(sup[lab])
            rows.append({"kind": "average" if avg else kind, "label": lab, "metric": m, "support": s})
        rows[-1].update({"value": v, "ci_lo": lo, "ci_hi": hi, "n_reports": n})
    return rows, correct


def evaluate_predictions(ds: Dataset, preds: dict, split: str = "test", policy: str = "exclusive",
                         n_resamples: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics of each system (``preds``: name -> :class:`Predictions`, or a frame of report_id + label
    column(s), validated here) and McNemar between every pair, Holm-corrected over all pairs.

    Returns ``metrics`` (one row per system x label/average/overall x metric: value, ci_lo, ci_hi,
    support, n_reports) and ``pairs`` (one row per pair of systems)."""
    if policy not in UNCERTAINTY_POLICIES:
        raise EvaluationError(f"unknown binarisation policy {policy!r} (--policy); choose "
                              f"{' or '.join(UNCERTAINTY_POLICIES)}")
    if not preds:
        raise EvaluationError("no predictions to evaluate (--pred); give at least one answers CSV")
    ref = reference(ds, split)
    systems = {name: (p if isinstance(p, Predictions) else check_predictions(p, ds, split, name=name))
               for name, p in preds.items()}
    rows, correct = [], {}
    for name, p in systems.items():
        if list(p.frame["report_id"]) != list(ref["report_id"]):
            raise EvaluationError(f"predictions {name!r} are aligned with another split or dataset; "
                                  f"validate them for split {split} of {ds.name} "
                                  "(read_predictions / check_predictions)")
        r, correct[name] = _system_metrics(ref, p.frame, ds, policy, n_resamples, seed)
        rows += [{"system": name, **x} for x in r]
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    pairs = []
    for a, b in itertools.combinations(systems, 2):
        ca, cb = correct[a], correct[b]
        t = mcnemar_test(ca, cb)
        pairs.append({"system_a": a, "system_b": b, "n_reports": len(ca), "accuracy_a": float(ca.mean()),
                      "accuracy_b": float(cb.mean()), "both_right": int(np.sum(ca & cb)), "only_a_right": t["b"],
                      "only_b_right": t["c"], "both_wrong": int(np.sum(~ca & ~cb)),
                      "test": "exact binomial" if t["exact"] else "chi-square (continuity-corrected)",
                      "statistic": t["statistic"], "p": t["pvalue"]})
    pairs = pd.DataFrame(pairs, columns=PAIR_COLUMNS)
    if len(pairs):
        pairs["p_holm"] = holm(pairs["p"].to_numpy())
        pairs["significant_0.05"] = pairs["p_holm"] < 0.05
    return metrics, pairs


# ------------------------------------------------------------------------------------------------ output


def method_notes(ds: Dataset, split: str, policy: str, n_resamples: int, seed: int, n_systems: int,
                 systems: list[Predictions] | None = None) -> list[str]:
    """The lines every output states: reference, class set, binarisation policy, interval method, test."""
    schema = ds.schema
    ref = reference(ds, split)
    task = "single-label" if schema.task == "single" else "multi-label"
    lines = [f"reference: {ds.name} (schema {schema.name}, {task}), split {split}: {len(ref)} reports; "
             f"dataset sha256 {ds.sha256}"]
    lines.append(class_set_note(ref, schema, policy))
    if schema.task == "single":
        lines.append("binarisation policy: not applicable (single-label)")
    else:
        lines.append("each finding is scored on its positive class; exact_match = every finding right")
        lines.append(f"binarisation policy: {policy}: present = positive, uncertain = "
                     f"{'positive' if policy == 'inclusive' else 'negative'}, absent / not_mentioned = negative")
    lines.append(f"intervals: percentile bootstrap 95 % CI over reports ({n_resamples} resamples, seed {seed})"
                 if n_resamples > 0 else "intervals: none (--n-resamples 0)")
    lines.append("undefined precision / recall / F1 (a class never predicted, or without reference reports, also "
                 "within a resample) count as 0 (sklearn zero_division=0)")
    crit = ("the predicted category equals the reference" if schema.task == "single"
            else f"every finding right after {policy} binarisation")
    n_pairs = n_systems * (n_systems - 1) // 2
    lines.append(f"test: McNemar on per-report correctness ({crit}), exact binomial when fewer than 25 discordant "
                 "pairs, else chi-square with continuity correction; p Holm-corrected over all "
                 f"{_plural(n_pairs, 'pair')}"
                 if n_systems > 1 else "test: none (one system; give 2+ --pred to compare systems with McNemar)")
    for p in systems or []:
        if p.n_failures:
            fill = "no category" if schema.task == "single" else "not_mentioned for every finding"
            lines.append(f"{p.name}: {_plural(p.n_failures, 'report')} recorded as failures in {p.failures_source} "
                         f"scored as wrong ({fill})")
        if p.n_other_split:
            lines.append(f"{p.name}: {_plural(p.n_other_split, 'answer')} for reports outside split {split} not scored")
    return lines


def systems_table(systems: list[Predictions]) -> pd.DataFrame:
    return pd.DataFrame([{"system": p.name, "file": p.source, "sha256": p.sha256, "answers": p.n_answers,
                          "failures_scored_wrong": p.n_failures, "answers_other_splits": p.n_other_split}
                         for p in systems])


def _ci(v: float, lo: float, hi: float) -> str:
    if pd.isna(v):
        return "-"
    if pd.isna(lo):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def metric_tables(metrics: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """Per system: a table with one row per label, then macro and weighted (P / R / F1 with CIs, support),
    and the overall line (accuracy, or exact match for multi-label)."""
    out = {}
    for system, g in metrics.groupby("system", sort=False):
        rows, overall = [], ""
        for (label, kind), h in g.groupby(["label", "kind"], sort=False):
            if kind == "overall":
                r = h.iloc[0]
                overall = f"{r['metric']} {_ci(r['value'], r['ci_lo'], r['ci_hi'])} over {int(r['n_reports'])} reports"
                continue
            cell = {m: _ci(x["value"], x["ci_lo"], x["ci_hi"]) for m, x in h.set_index("metric").iterrows()}
            rows.append({"label": label, **cell, "support": int(h["support"].iloc[0])})
        out[system] = (pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support"]), overall)
    return out


def pairs_table(pairs: pd.DataFrame) -> pd.DataFrame:
    rate = "{:.3f}".format
    return pd.DataFrame({"A": pairs.system_a, "B": pairs.system_b, "A right (rate)": pairs.accuracy_a.map(rate),
                         "B right (rate)": pairs.accuracy_b.map(rate), "only A right": pairs.only_a_right,
                         "only B right": pairs.only_b_right, "test": pairs.test, "p": pairs.p.map("{:.4g}".format),
                         "p (Holm)": pairs.p_holm.map("{:.4g}".format)})


def _text_table(df: pd.DataFrame, indent: str = "  ") -> str:
    cells = [list(map(str, df.columns))] + [[str(v) for v in r] for r in df.itertuples(index=False)]
    w = [max(len(r[j]) for r in cells) for j in range(len(df.columns))]
    return "\n".join(indent + "  ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip() for r in cells)


def format_text(metrics: pd.DataFrame, pairs: pd.DataFrame, notes: list[str],
                systems: list[Predictions] | None = None) -> str:
    """The printed report: the method lines, one table per system, the pairs."""
    src = {p.name: p for p in systems or []}
    parts = ["\n".join(notes)]
    for system, (t, overall) in metric_tables(metrics).items():
        p = src.get(system)
        info = f" ({p.source}: {p.n_answers} answers, {p.n_failures} failures scored wrong)" if p else ""
        parts.append(f"{system}{info}\n{_text_table(t)}\n  {overall}")
    if len(pairs):
        parts.append(f"McNemar between systems (Holm over {_plural(len(pairs), 'pair')})\n"
                     + _text_table(pairs_table(pairs)))
    return "\n\n".join(parts)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left;font-variant-numeric:tabular-nums}th{background:#f2f2f2}ul.notes li{margin:.2em 0}")


def evaluation_html(metrics: pd.DataFrame, pairs: pd.DataFrame, notes: list[str], title: str,
                    systems: list[Predictions] | None = None) -> str:
    """A self-contained page (inline CSS, no scripts, no external assets) with the notes and tables."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             "<h2>Method</h2><ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    if systems:
        parts.append("<h2>Systems</h2>" + _html_table(systems_table(systems)))
    for system, (t, overall) in metric_tables(metrics).items():
        parts.append(f"<h2>{html.escape(system)}</h2>" + _html_table(t) + f"<p>{html.escape(overall)}</p>")
    if len(pairs):
        parts.append("<h2>Between systems (McNemar, Holm-corrected)</h2>" + _html_table(pairs_table(pairs)))
    parts.append("<p>Files: metrics.csv (every value with its interval), pairs.csv (every comparison).</p>"
                 "</body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, metrics: pd.DataFrame, pairs: pd.DataFrame, notes: list[str],
                 title: str = "radpriv evaluation", systems: list[Predictions] | None = None) -> dict[str, Path]:
    """Write ``metrics.csv``, ``pairs.csv`` and ``evaluation.html`` to ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": out / "metrics.csv", "pairs": out / "pairs.csv", "html": out / "evaluation.html"}
    for key, df in (("metrics", metrics), ("pairs", pairs)):
        tmp = files[key].with_name(f".{files[key].name}.tmp")
        df.to_csv(tmp, index=False)
        tmp.replace(files[key])
    tmp = files["html"].with_name(".evaluation.html.tmp")
    tmp.write_text(evaluation_html(metrics, pairs, notes, title, systems), encoding="utf-8")
    tmp.replace(files["html"])
    return files
