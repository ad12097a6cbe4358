"""Inclusive and exclusive training labels from extracted (or ground-truth) label states.

A Study 2 label extractor returns one :class:`~radpriv.schemas.State` per finding and report. Before a
downstream classifier can be trained, every state becomes 0/1 under an *uncertainty policy*
(:func:`radpriv.schemas.to_binary`):

============  =========  ===========
state         inclusive  exclusive
============  =========  ===========
present       1          1
uncertain     1          0
absent        0          0
not_mentioned 0          0
============  =========  ===========

Parent findings are propagated first (:meth:`Schema.propagate`): a present or uncertain sub-finding
makes its parent present or uncertain, so a report saying only "possible radial head fracture" yields
``fracture = 1`` under the inclusive policy and ``fracture = 0`` under the exclusive one, exactly like
the sub-finding itself.

Frames follow the dataset-frame convention (``report_id`` plus one State column per finding id; an
optional ``region`` column for mixed upper-extremity frames). Nothing is dropped silently: a missing
finding column or an unreadable state raises an error naming the row and the column.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from radpriv.evaluate.scoring import binarize
from radpriv.schemas import UNCERTAINTY_POLICIES, Schema, State

__all__ = ["POLICIES", "states_frame", "label_matrix", "build_label_sets", "label_set_summary", "evaluable_findings"]

POLICIES = UNCERTAINTY_POLICIES  # ("inclusive", "exclusive")


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def states_frame(frame: pd.DataFrame, schema: Schema, region: str | None = None, propagate: bool = True,
                 source: str | None = None) -> pd.DataFrame:
    """Validated State values (strings) per report, parents propagated; index ``report_id``.

    ``region`` keeps only rows whose ``region`` column equals it (for frames mixing regions);
    ``source`` names the frame in error messages (e.g. ``"qwen05 labels"``).
    """
    if schema.task != "multilabel":
        raise ValueError(f"schema {schema.name!r} is single-label; inclusive/exclusive labels need a multilabel "
                         "template schema (clavicle, elbow, thumb, chexpert14, ctrate18)")
    if "report_id" not in frame.columns:
        raise ValueError(f"{_where(source)}frame has no 'report_id' column (columns: {list(frame.columns)})")
    if region is not None:
        if "region" not in frame.columns:
            raise ValueError(f"{_where(source)}region={region!r} was requested but the frame has no 'region' column")
        frame = frame[frame["region"] == region]
        if frame.empty:
            raise ValueError(f"{_where(source)}no rows with region == {region!r}")
    missing = [f for f in schema.ids if f not in frame.columns]
    if missing:
        raise ValueError(f"{_where(source)}frame lacks finding column(s) {missing} of schema {schema.name!r}; "
                         "every finding needs a State column (use 'not_mentioned' when the report is silent)")
    dup = frame["report_id"][frame["report_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{_where(source)}duplicate report_id(s) {dup[:5]}: each report must appear once")
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        parsed = {}
        for fid in schema.ids:
            value = row[fid]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                value = ""
            try:
                parsed[fid] = State.parse(value)
            except ValueError as exc:
                raise ValueError(f"{_where(source)}row {i} (report_id {row['report_id']!r}), column {fid!r}: {exc}") from None
        if propagate:
            parsed = schema.propagate(parsed)
        rows.append({fid: parsed[fid].value for fid in schema.ids})
    return pd.DataFrame(rows, index=pd.Index(frame["report_id"].astype(str).tolist(), name="report_id"),
                        columns=schema.ids)


def label_matrix(frame: pd.DataFrame, schema: Schema, policy: str, region: str | None = None, propagate: bool = True,
                 source: str | None = None) -> pd.DataFrame:
    """0/1 labels (int8) under ``policy`` ("inclusive" or "exclusive"); index ``report_id``, one column per finding."""
    if policy not in POLICIES:
        raise ValueError(f"uncertainty policy {policy!r} is not one of {POLICIES}")
    return _binary(states_frame(frame, schema, region=region, propagate=propagate, source=source), policy)


def _binary(states: pd.DataFrame, policy: str) -> pd.DataFrame:
    """A states frame as 0/1 (int8) under ``policy``, through the library's one binarizer."""
    return pd.DataFrame(binarize(states, list(states.columns), policy), index=states.index,
                        columns=states.columns).astype("int8")


def build_label_sets(sources: Mapping[str, pd.DataFrame], schema: Schema, policies: Iterable[str] = POLICIES,
                     region: str | None = None, propagate: bool = True) -> dict[str, pd.DataFrame]:
    """Label matrices for every (source, policy): keys ``"<source>_<policy>"``.

    ``sources`` maps a name to a frame, e.g. ``{"llm": extracted, "truth": corpus}``; the result then holds
    ``llm_inclusive``, ``llm_exclusive``, ``truth_inclusive``, ``truth_exclusive``. All matrices share the
    report order of the first source; a report missing from another source is an error.
    """
    out: dict[str, pd.DataFrame] = {}
    order = None
    for name, frame in sources.items():
        states = states_frame(frame, schema, region=region, propagate=propagate, source=name)
        if order is None:
            order = states.index
        else:
            absent = order.difference(states.index)
            if len(absent):
                raise ValueError(f"{name}: {len(absent)} report(s) of {next(iter(sources))!r} have no labels here "
                                 f"(e.g. {list(absent[:3])}); label them or restrict both frames to the same reports")
            states = states.loc[order]
        for policy in policies:
            if policy not in POLICIES:
                raise ValueError(f"uncertainty policy {policy!r} is not one of {POLICIES}")
            out[f"{name}_{policy}"] = _binary(states, policy)
    return out


def label_set_summary(label_sets: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Positives per finding in each label set (rows: findings; columns: label sets), plus the totals row."""
    table = pd.DataFrame({name: m.sum(axis=0) for name, m in label_sets.items()})
    table.loc["(all findings)"] = table.sum(axis=0)
    return table.astype(int)


def evaluable_findings(reference: pd.DataFrame | np.ndarray, *train_sets: pd.DataFrame | np.ndarray,
                       min_positive: int = 2, min_negative: int = 2, names: list[str] | None = None) -> list[str]:
    """Findings with enough positives and negatives in the reference (test) labels and in every training set.

    An AUC needs both classes in the test reference; a classifier needs positives to learn from. Findings
    failing either are excluded *explicitly* (the caller reports them), never averaged as NaN.
    """
    def arr(m):
        return m.to_numpy() if isinstance(m, pd.DataFrame) else np.asarray(m)

    if names is None:
        if not isinstance(reference, pd.DataFrame):
            raise ValueError("pass names= when the reference is an array")
        names = list(reference.columns)
    ref = arr(reference)
    ok = (ref.sum(axis=0) >= min_positive) & ((1 - ref).sum(axis=0) >= min_negative)
    for t in train_sets:
        ok &= arr(t).sum(axis=0) >= min_positive
    return [n for n, k in zip(names, ok) if k]
