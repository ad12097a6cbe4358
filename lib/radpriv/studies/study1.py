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
from functools import partial
from typing import Sequence

import pandas as pd

from radpriv import evaluate
from radpriv.baselines import NO_RULES, rule_baseline
from radpriv.data import Dataset, load_dataset, synthetic
from radpriv.llm import engine, retrieval
from radpriv.models import registry
from radpriv.papers import published
from radpriv.schemas import Schema, load_schema
from radpriv.studies import prompting
from radpriv.studies.prompting import configuration_label, parse_configuration

__all__ = ["Design", "Scores", "Significance", "Configurations", "design", "run_models", "accounting", "failures",
           "score", "significance", "confusion_figure", "beside_published", "parse_configuration", "configuration_label", "configurations",
           "results"]

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
    few_shot: object  # None, fixed (text, answer) pairs, or a per-report retriever (llm.retrieval)
    eval_splits: list[str]
    prompt_variant: str
    mode: str
    retriever: str = "tfidf"
    examples_from: str | None = None

    def summary(self) -> str:
        """One markdown sentence: reports, splits, models, prompt and mode."""
        splits = ", ".join(self.eval_splits)
        shots = retrieval.parse_shots(self.prompt_variant)
        source = f" from {self.few_shot.source}" if getattr(self.few_shot, "source", "") else ""
        return (f"**{len(self.evalset)}** evaluation reports from `{self.dataset.name}` ({splits}); "
                f"**{len(self.specs)}** models; prompt **{shots.label(self.retriever)}**{source}, mode **{self.mode}**.")

    def category_counts(self) -> pd.DataFrame:
        """Evaluation reports per reference category."""
        return self.evalset.label.value_counts().rename("reports").to_frame()


def design(manifest: str, models: Sequence[str], prompt_variant: str = "few-shot", mode: str = "template",
           eval_splits: Sequence[str] = ("test",), limit: int | None = None, schema: str | None = None,
           seed: int = 0, retriever: str = "tfidf", examples_from: str | None = None) -> Design:
    """Load ``manifest``, keep the reports of ``eval_splits`` (the first ``limit``), choose the examples
    (``prompt_variant``: ``zero-shot``, ``few-shot`` = one fixed training report per category, or ``knn:K`` = the K
    most similar training reports by ``retriever``; from ``examples_from``'s training split if given) and resolve
    the registered ``models``."""
    ds = load_dataset(manifest)
    schema_ = load_schema(schema) if schema else ds.schema
    evalset = ds.frame[ds.frame.split.isin(eval_splits)].reset_index(drop=True)
    if limit:
        evalset = evalset.head(int(limit))
    few_shot = prompting.few_shot(prompt_variant, ds, schema_, retriever, examples_from, seed=seed,
                                  eval_splits=eval_splits)
    return Design(ds, schema_, evalset, [registry.get_model(m) for m in models], few_shot, list(eval_splits),
                  prompt_variant, mode, retriever, examples_from)


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


# ---------------------------------------------------------------------------------------------
# prompt configurations side by side
# ---------------------------------------------------------------------------------------------
@dataclass
class Configurations:
    """Each model under each prompt configuration on the same evaluation reports: the table (accuracy and macro F1
    with bootstrap CIs, seconds and prompt tokens per report, failures), the predictions and notes."""

    table: pd.DataFrame
    predictions: dict[tuple[str, str], pd.DataFrame]
    notes: list[str]

    def best(self) -> pd.Series:
        """The row with the highest accuracy (ties: the faster one)."""
        return self.table.sort_values(["accuracy", "seconds per report"], ascending=[False, True]).iloc[0]

    def figure(self, d: Design):
        """Accuracy against model file size (log scale), a line per configuration; the published macro F1 rows
        as dashed lines (clinical reports, other models: a different experiment)."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        t = self.table.dropna(subset=["model file (GB)"])
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for (conf, g), color in zip(t.groupby("configuration", sort=False), sns.color_palette("deep")):
            g = g.sort_values("model file (GB)")
            ax.errorbar(g["model file (GB)"], g["accuracy"], yerr=[g["accuracy"] - g["accuracy_low"],
                        g["accuracy_high"] - g["accuracy"]], marker="o", capsize=3, label=conf, color=color)
        for row, ls in zip(published("cmr_llm_benchmark")["rows"], (":", "--", "-.", (0, (1, 3)))):
            ax.axhline(row["f1"], color="grey", lw=1, ls=ls, label=f"published: {row['system']} (macro F1)")
        ax.set_xscale("log")
        ax.set(xlabel="model file size (GB, as run here)", ylabel=f"accuracy ({len(d.evalset)} reports)",
               ylim=(0, 1.02), title="Prompt configurations by model size (published: clinical CMR, other models)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return fig


def configurations(d: Design, configs: Sequence[str], models: Sequence[str] | None = None,
                   allow_hosts: Sequence[str] = (), progress: bool = True, n_resamples: int = 1000,
                   seed: int = 0) -> Configurations:
    """Every model of ``models`` (default: the design's) under every configuration of ``configs`` (see
    :func:`parse_configuration`) on the design's evaluation reports, scored alike. Examples come from the
    training split (or ``examples_from``); a calibrated configuration fits its bias on the validation reports,
    which must then not be evaluation reports. Answers are cached, so the design's own configuration is free."""
    parsed = [(c, *parse_configuration(c)) for c in configs]
    if any(cal and mode == "template" for _, _, mode, cal in parsed):
        raise ValueError("template-calibrated is for multi-label schemas (Study 2); a single-label schema is "
                         "calibrated in scoring mode: write <shots>/calibrated")
    if any(cal for *_, cal in parsed):
        if "validation" in d.eval_splits:
            raise ValueError("a calibrated configuration fits its bias on the validation reports, which are "
                             "evaluation reports here; evaluate the test split only (eval_splits: [test])")
        val = d.dataset.split("validation")
        if val.empty:
            raise ValueError(f"{d.dataset.name} has no validation reports to calibrate on; drop '/calibrated'")
    specs = [s for s in d.specs if models is None or s.name in models]
    shots_cache: dict[str, object] = {}
    preds, rows, costs, notes = {}, [], {}, []
    for spec in specs:
        for name, shots, mode, calibrated in parsed:
            if shots not in shots_cache:
                shots_cache[shots] = prompting.few_shot(shots, d.dataset, d.schema, d.retriever, d.examples_from,
                                                        seed=seed, eval_splits=d.eval_splits)
            few = shots_cache[shots]
            label = (partial(engine.label_frame_orders, orders=prompting.ORDERS) if mode == "orders"
                     else partial(engine.label_frame, mode=mode))
            try:
                run = label(d.evalset, d.schema, spec, few_shot=few, allow_hosts=allow_hosts, progress=progress)
            except engine.NoProbabilities as exc:
                notes.append(f"_{spec.name}, {name}: not compared: {exc}._")
                continue
            if calibrated:
                vrun = label(val, d.schema, spec, few_shot=few, allow_hosts=allow_hosts, progress=progress)
                cols = [f"p__{c}" for c in d.schema.ids]
                if not set(cols) <= set(run.answers.columns) & set(vrun.answers.columns):
                    why = run.stats.get("mode_fallback") or "its answers carry no category probabilities"
                    notes.append(f"_{spec.name}, {name}: not compared: {why}._")
                    continue
                answers = evaluate.calibrated_categories(vrun.answers, val, run.answers, list(d.schema.ids))
            else:
                answers = run.answers
            key = (spec.name, name)
            preds[key] = evaluate.fill_failures(d.evalset, answers, run.failures, d.schema)
            costs[key] = {"model": spec.name, "configuration": configuration_label(name, d.retriever),
                          "seconds per report": run.stats["seconds_per_report"],
                          "prompt tokens per report": run.stats["prompt_tokens_total_per_report"],
                          "failures": run.stats["n_failures"],
                          "model file (GB)": round(spec.size / 1e9, 3) if spec.size else None}
    table = evaluate.compare_systems(d.evalset, {f"{m} | {c}": p for (m, c), p in preds.items()}, d.schema,
                                     n_resamples=n_resamples, seed=seed)
    for (key, cost), (_, row) in zip(costs.items(), table.iterrows()):
        rows.append({**cost, **{k: row[k] for k in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1",
                                                      "macro_f1_low", "macro_f1_high")}})
    notes[:0] = [f"Every configuration reads the same {len(d.evalset)} evaluation reports; examples come from "
             f"{'`' + d.examples_from + '`' if d.examples_from else d.dataset.name}'s training split. Seconds per "
             "report as measured when the answer was computed (cached answers keep their time)."]
    if any(mode == "orders" for _, _, mode, _ in parsed):
        notes.append(f"Option orders: the categories listed under their letters in {prompting.ORDERS} orders (the "
                     "schema's, reversed, then strided through it), one scoring run each; the letters' probabilities "
                     "mapped back to the categories and averaged (geometric mean); seconds per report add the runs.")
    if any(cal for *_, cal in parsed):
        notes.append(f"Calibrated: a per-category bias on the letters' log-probabilities fitted on the "
                     f"{len(val)} validation reports (`evaluate.fit_category_bias`), applied unchanged.")
    return Configurations(pd.DataFrame(rows), preds, notes)


def results(d: Design, scores: Scores, sig: Significance, accounting_: pd.DataFrame,
            configs: Configurations | None = None) -> dict:
    """What the notebook saves (:func:`radpriv.run.save_results`): the reference, every system's answers and
    the class set, so that a test can recompute the table and the McNemar tests."""
    return {"reference": d.evalset[["report_id", "label"]],
            "predictions": {n: p[["report_id", "label"]] for n, p in scores.predictions.items()},
            "class_set": evaluate.class_set(d.evalset, d.schema)[0], "table": scores.table, "pairs": sig.pairs,
            "comparator": sig.comparator, "cochrans_q": sig.cochrans_q, "accounting": accounting_,
            "configurations": configs.table if configs is not None else None,
            "configuration_predictions": ({f"{m} | {c}": p[["report_id", "label"]]
                                           for (m, c), p in configs.predictions.items()} if configs else None)}
