"""Descriptive summaries of a dataset: counts per label and state, report lengths, examples."""

from __future__ import annotations

import pandas as pd

from radpriv.data.manifest import Dataset
from radpriv.schemas import State


def split_counts(ds: Dataset) -> pd.Series:
    return ds.frame["split"].value_counts().reindex(["train", "validation", "test"]).fillna(0).astype(int)


def state_counts(ds: Dataset) -> pd.DataFrame:
    """Rows: findings (or categories for single-label schemas); columns: states (or 'reports')."""
    f = ds.frame
    if ds.schema.task == "single":
        counts = f["label"].value_counts().reindex(ds.schema.ids).fillna(0).astype(int)
        out = pd.DataFrame({"reports": counts})
        if "reader" in f:
            out["reader agrees"] = [int(((f.label == c) & (f.reader == c)).sum()) for c in ds.schema.ids]
        out.index = [ds.schema.finding(c).label for c in out.index]
        return out
    rows = {}
    for fid in ds.schema.ids:
        vc = f[fid].value_counts()
        rows[ds.schema.finding(fid).label] = {s.value: int(vc.get(s.value, 0)) for s in State}
    return pd.DataFrame.from_dict(rows, orient="index")


def length_table(datasets: list[Dataset]) -> pd.DataFrame:
    """Report length in characters and words per dataset (for the length-distribution figure)."""
    parts = []
    for ds in datasets:
        parts.append(pd.DataFrame({"dataset": ds.name, "characters": ds.frame["text"].str.len(),
                                   "words": ds.frame["text"].str.split().str.len()}))
    return pd.concat(parts, ignore_index=True)


def examples(ds: Dataset, n: int = 2, split: str = "test") -> pd.DataFrame:
    """The first ``n`` reports of a split with their non-trivial labels, for display."""
    sub = ds.split(split).head(n)
    rows = []
    for _, r in sub.iterrows():
        if ds.schema.task == "single":
            labels = r["label"]
        else:
            labels = "; ".join(f"{k}={r[k]}" for k in ds.schema.ids if r[k] != State.NOT_MENTIONED.value)
        rows.append({"report_id": r["report_id"], "labels": labels, "text": r["text"]})
    return pd.DataFrame(rows)
