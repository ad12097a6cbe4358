"""Study 1 (notebook 01): local LLMs name the primary diagnostic category of cardiac MRI reports.

- :func:`design`         the evaluation reports, the few-shot examples (training split only) and the models;
- :func:`run_models`     every model labels every evaluation report (answers cached); :func:`accounting`
  and :func:`failures` account for each input;
- :func:`score`          the LLMs, the rule baseline and the human reader (when the data has one), scored alike;
- :func:`significance`   McNemar tests against a comparator fixed in advance (Holm) and Cochran's Q;
- :func:`confusion_figure`, :func:`beside_published` and :func:`results` (what the notebook saves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from radpriv import evaluate
from radpriv.baselines import NO_RULES, rule_baseline
from radpriv.data import Dataset, load_dataset, synthetic
from radpriv.llm import engine
from radpriv.models import registry
from radpriv.papers import published
from radpriv.schemas import Schema, load_schema

__all__ = ["Design", "Scores", "Significance", "design", "run_models", "accounting", "failures", "score",
           "significance", "confusion_figure", "beside_published", "results"]

#: the per-model counts and costs shown in the accounting table
ACCOUNTING = ("n_inputs", "n_answers", "n_failures", "cache_hits", "seconds_per_report", "prompt_tokens_per_report",
              "completion_tokens_per_report")


@dataclass
class Design:
    """What is read, by whom and how: fixed before any model answers."""

    dataset: Dataset
    schema: Schema
    evalset: pd.DataFrame
    specs: list[registry.ModelSpec]
    few_shot: list | None
    eval_splits: list[str]
    prompt_variant: str
    mode: str

    def summary(self) -> str:
        """One markdown sentence: reports, splits, models, prompt and mode."""
        splits = ", ".join(self.eval_splits)
        return (f"**{len(self.evalset)}** evaluation reports from `{self.dataset.name}` ({splits}); "
                f"**{len(self.specs)}** models; prompt **{self.prompt_variant}**, mode **{self.mode}**.")

    def category_counts(self) -> pd.DataFrame:
        """Evaluation reports per reference category."""
        return self.evalset.label.value_counts().rename("reports").to_frame()


def design(manifest: str, models: Sequence[str], prompt_variant: str = "few-shot", mode: str = "template",
           eval_splits: Sequence[str] = ("test",), limit: int | None = None, schema: str | None = None,
           seed: int = 0) -> Design:
    """Load ``manifest``, keep the reports of ``eval_splits`` (the first ``limit``), draw one few-shot example
    per category from the training split (``prompt_variant="few-shot"``) and resolve the registered ``models``."""
    ds = load_dataset(manifest)
    schema_ = load_schema(schema) if schema else ds.schema
    evalset = ds.frame[ds.frame.split.isin(eval_splits)].reset_index(drop=True)
    if limit:
        evalset = evalset.head(int(limit))
    few_shot = engine.few_shot_examples(ds.split("train"), schema_, seed=seed) if prompt_variant == "few-shot" else None
    return Design(ds, schema_, evalset, [registry.get_model(m) for m in models], few_shot, list(eval_splits),
                  prompt_variant, mode)


def run_models(d: Design, allow_hosts: Sequence[str] = (), progress: bool = True) -> dict[str, engine.LabelRun]:
    """Every model labels every evaluation report: model name -> answers, failures and run statistics."""
    return {spec.name: engine.label_frame(d.evalset, d.schema, spec, mode=d.mode, few_shot=d.few_shot,
                                          allow_hosts=allow_hosts, progress=progress) for spec in d.specs}


def accounting(runs: dict[str, engine.LabelRun]) -> pd.DataFrame:
    """Per model: inputs = answers + failures, cache hits, seconds and tokens per report."""
    return pd.DataFrame([{"system": name, **{k: r.stats.get(k) for k in ACCOUNTING}} for name, r in runs.items()])


def failures(runs: dict[str, engine.LabelRun]) -> pd.DataFrame:
    """Every failed or unparseable answer with its reason and model (scored as wrong, never dropped)."""
    return pd.concat([r.failures.assign(system=n) for n, r in runs.items()], ignore_index=True)


@dataclass
class Scores:
    """Each system's predictions (one per evaluation report), the metrics table with bootstrap CIs and the
    markdown notes that go with it (which phrase bank the rules read, the class set, the intervals)."""

    predictions: dict[str, pd.DataFrame]
    table: pd.DataFrame
    notes: list[str]


def score(d: Design, runs: dict[str, engine.LabelRun], rules: str | None = None, n_resamples: int = 1000,
          seed: int = 0) -> Scores:
    """The LLMs (failed answers filled in as ``unanswered``), the rule baseline (``rules``: your rules file, else
    the manifest's, else the schema's) and the human reader, scored identically with bootstrap CIs."""
    preds = {name: evaluate.fill_failures(d.evalset, r.answers, r.failures, d.schema) for name, r in runs.items()}
    notes = []
    labeler = rule_baseline(d.schema, rules or d.dataset.rules)
    if labeler is not None:
        preds["rule baseline"] = labeler.label_frame(d.evalset)
        bank_note = synthetic.phrase_bank_statement(d.evalset)  # synthetic reports: the phrase bank the rules read
        if bank_note:
            notes.append(bank_note)
    else:
        notes.append(f"_Rule baseline: {NO_RULES} ({d.schema.name}); name a rules file with the `rules` parameter._")
    if "reader" in d.evalset and (d.evalset.reader != "").all():
        preds["human reader"] = d.evalset[["report_id"]].assign(label=d.evalset.reader)
    table = evaluate.compare_systems(d.evalset, preds, d.schema, n_resamples=n_resamples, seed=seed)
    notes.append(f"{evaluate.class_set_note(d.evalset, d.schema)}. Intervals: percentile bootstrap 95 % CI over "
                 f"reports ({n_resamples} resamples, seed {seed}).")
    return Scores(preds, table, notes)


@dataclass
class Significance:
    """Per report and system: right or wrong; McNemar tests against ``comparator`` (every pair when None),
    Holm-corrected; Cochran's Q across all systems."""

    correct: pd.DataFrame
    comparator: str | None
    pairs: pd.DataFrame
    cochrans_q: dict

    def q_text(self) -> str:
        q = self.cochrans_q
        return (f"Cochran's Q = {q['statistic']:.2f}, df = {q['df']}, p = {q['pvalue']:.3g} "
                f"across {self.correct.shape[1]} systems.")


def significance(d: Design, preds: dict[str, pd.DataFrame]) -> Significance:
    """The comparator is fixed before the results are seen: the rule baseline, else the human reader."""
    correct = evaluate.correctness(d.evalset, preds)
    comparator = next((c for c in ("rule baseline", "human reader") if c in preds), None)
    return Significance(correct, comparator, evaluate.pairwise_mcnemar(correct, comparator),
                        evaluate.cochrans_q(correct))


def confusion_figure(d: Design, preds: dict[str, pd.DataFrame]):
    """One confusion matrix per system over the schema's categories (and ``unanswered``)."""
    ref = d.evalset.label
    return evaluate.confusion_grid({n: (ref, p.set_index("report_id").loc[d.evalset.report_id, "label"])
                                    for n, p in preds.items()}, labels=list(d.schema.ids) + ["unanswered"])


def beside_published(d: Design, table: pd.DataFrame) -> pd.DataFrame:
    """The paper's macro F1 rows and ours, each labelled with its data (different data and models)."""
    paper = pd.DataFrame(published("cmr_llm_benchmark")["rows"]).rename(columns={"f1": "macro F1"})
    paper.insert(0, "source", "published (clinical CMR, 109 reports)")
    ours = table[["system", "macro_f1"]].rename(columns={"macro_f1": "macro F1"})
    ours.insert(0, "source", f"this run ({d.dataset.name}, {len(d.evalset)} reports)")
    return pd.concat([paper, ours], ignore_index=True)


def results(d: Design, scores: Scores, sig: Significance, accounting_: pd.DataFrame) -> dict:
    """What the notebook saves (:func:`radpriv.run.save_results`): the reference, every system's answers and
    the class set, so that a test can recompute the table and the McNemar tests."""
    return {"reference": d.evalset[["report_id", "label"]],
            "predictions": {n: p[["report_id", "label"]] for n, p in scores.predictions.items()},
            "class_set": evaluate.class_set(d.evalset, d.schema)[0], "table": scores.table, "pairs": sig.pairs,
            "comparator": sig.comparator, "cochrans_q": sig.cochrans_q, "accounting": accounting_}
