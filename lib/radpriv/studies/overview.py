"""Data overview (notebook 00): what the embedded corpora hold, and the rule baseline on their test splits.

:func:`corpus_table`, :func:`state_tables`, :func:`length_figure` and :func:`example_blocks` describe the
corpora (counts from :mod:`radpriv.data.overview`); :func:`score_rule_baseline` labels each corpus's split
with the NegEx/ConText rules and scores it like every study does; :func:`results` is what the notebook saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd

from radpriv import evaluate
from radpriv.baselines import NO_RULES, rule_baseline
from radpriv.data import Dataset, overview, synthetic

__all__ = ["RuleBaseline", "corpus_table", "state_tables", "length_figure", "example_blocks", "score_rule_baseline",
           "results"]


def corpus_table(datasets: Sequence[Dataset]) -> pd.DataFrame:
    """One row per corpus: its description and reports per split."""
    return pd.DataFrame([{**d.describe(), **overview.split_counts(d).to_dict()} for d in datasets])


def state_tables(datasets: Sequence[Dataset]) -> dict[str, pd.DataFrame]:
    """Markdown heading -> labels per finding and state (reports per category for single-label corpora)."""
    return {f"### {d.manifest.get('title', d.name)} (`{d.name}`, schema `{d.schema.name}`)": overview.state_counts(d)
            for d in datasets}


def length_figure(lengths: pd.DataFrame):
    """Box plot of report length in characters per corpus (``lengths``: :func:`radpriv.data.overview.length_table`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.boxplot(data=lengths, x="characters", y="dataset", ax=ax)
    ax.set_xlabel("report length (characters)")
    return fig


def example_blocks(datasets: Sequence[Dataset], n: int, split: str = "test") -> list[str]:
    """The first ``n`` reports of ``split`` per corpus, each a markdown block with its labels."""
    return [f"**{ex.report_id}** — labels: `{ex.labels}`\n\n```\n{ex.text}\n```"
            for d in datasets for ex in overview.examples(d, n, split).itertuples()]


@dataclass
class RuleBaseline:
    """The rule baseline on every corpus: ``table`` (one block of metrics per corpus, or a note when its schema
    has no rules), the labels it was scored on, markdown ``notes`` (class sets, phrase banks) and the
    single-label corpora's (reference, prediction) pairs for confusion matrices."""

    table: pd.DataFrame
    scored: dict[str, dict[str, pd.DataFrame]]
    notes: list[str]
    confusions: dict[str, tuple[pd.Series, pd.Series]] = field(default_factory=dict)


def score_rule_baseline(datasets: Sequence[Dataset], split: str = "test", rules: Mapping[str, str] | None = None,
                        n_resamples: int = 1000, seed: int = 0) -> RuleBaseline:
    """Label ``split`` of every corpus with its rules (``rules``: your rules file per corpus name, else the
    manifest's, else the schema's bundled rules) and score them with bootstrap CIs over reports."""
    rows, scored, notes, confusions, synthetic_banks = [], {}, [], {}, False
    for ds in datasets:
        test = ds.split(split)
        labeler = rule_baseline(ds.schema, (rules or {}).get(ds.name) or ds.rules)
        if labeler is None:
            rows.append(pd.DataFrame([{"dataset": ds.name, "system": "rule baseline", "note": NO_RULES}]))
            continue
        pred = labeler.label_frame(test)
        table = evaluate.score_labels(test, pred, ds.schema, n_resamples=n_resamples, seed=seed)
        table.insert(0, "dataset", ds.name)
        rows.append(table)
        scored[ds.name] = {"reference": test.drop(columns=["text"]), "rules": pred}
        banks = synthetic.phrase_bank_statement(test, note=False)
        notes.append(f"- `{ds.name}`: {evaluate.class_set_note(test, ds.schema)}. {banks}")
        synthetic_banks |= bool(banks)
        if ds.schema.task == "single":
            confusions[f"rules on {ds.name}"] = (test["label"], pred["label"])
    blocks = ["\n".join(notes)]
    if synthetic_banks:  # synthetic reports: the rule baseline is scored on the held-out phrase bank
        blocks.append(synthetic.PHRASE_BANKS_NOTE)
    return RuleBaseline(pd.concat(rows, ignore_index=True), scored, blocks, confusions)


def results(datasets: Sequence[Dataset], baseline: RuleBaseline) -> dict:
    """What the notebook saves (:func:`radpriv.run.save_results`): the baseline table, the labels it was
    scored on and every corpus's split counts, so that a test can recompute them."""
    return {"baseline": baseline.table, "scored": baseline.scored,
            "split_counts": {d.name: overview.split_counts(d).to_dict() for d in datasets}}
