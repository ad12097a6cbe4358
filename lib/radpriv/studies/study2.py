"""Study 2 (notebook 02): LLM label extraction with uncertainty; inclusive vs exclusive downstream labels.

Extraction:
- :func:`design`            the reports scored per region and the models; :func:`extract` labels them
  (zero-shot, cached); :func:`accounting` and :func:`failures` account for every input;
- :func:`score_extraction`  the LLMs and the rule baseline scored alike (:class:`Extraction`: label accuracy,
  uncertainty detection, per-finding F1, McNemar tests).

Downstream (:class:`Downstream`, from :func:`downstream_labels`): the region's reports labelled by one
labeler, inclusive and exclusive label sets from those labels and from ground truth, a two-view image model
(synthetic radiographs or your image manifest) and a report-text model trained on each label set, and their
macro AUCs with paired DeLong tests. The classifiers and comparisons themselves are :mod:`radpriv.downstream`.

Figures and tables beside the paper: :func:`accuracy_figure`, :func:`radiograph_figure`,
:func:`macro_auc_figure`, :func:`accuracy_beside_published`, :func:`auc_beside_published`; what the notebook
saves: :func:`results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from radpriv import evaluate
from radpriv.baselines import NO_RULES, rule_baseline
from radpriv.data import Dataset, load_dataset, synthetic
from radpriv.data.image_manifest import read_image_manifest
from radpriv.data.synthetic_images import SyntheticImages
from radpriv.downstream import build_label_sets, extraction, label_matrix, label_set_summary, pipeline
from radpriv.downstream.cnn import CNNTrainConfig
from radpriv.downstream.compare import Comparison
from radpriv.llm import engine, prompts, retrieval
from radpriv.models import registry
from radpriv.papers import published
from radpriv.schemas import Schema, State
from radpriv.studies import prompting

__all__ = ["PAIRS", "SKIPPED_NOTE", "SYNTHETIC_IMAGES_NOTE", "Design", "Extraction", "Downstream", "ImageExperiment",
           "design", "variant", "validation_reports", "extract", "calibrated_extract", "Configurations",
           "configurations", "accounting", "failures", "score_extraction", "subset_by_split", "downstream_labels",
           "per_finding", "accuracy_figure", "radiograph_figure", "macro_auc_figure", "accuracy_beside_published",
           "auc_beside_published", "published_note", "provenance_extra", "results"]

#: the paired tests of the downstream experiment: inclusive vs exclusive, on extracted labels and on ground truth
PAIRS = [("llm_inclusive", "llm_exclusive"), ("truth_inclusive", "truth_exclusive")]
#: shown when ``downstream_region`` is None
SKIPPED_NOTE = ("_Downstream experiment skipped (`downstream_region: null`): it needs one of the upper-extremity "
                "regions with synthetic radiographs, or your own images (`image_manifest`)._")
#: shown above the synthetic radiographs
SYNTHETIC_IMAGES_NOTE = ("**Synthetic radiographs** (not real images): drawn from each case's ground-truth findings; "
                         "two views (AP, lateral). A few training cases:")
#: the per-model counts and costs shown in the accounting table
ACCOUNTING = ("n_inputs", "n_answers", "n_failures", "cache_hits", "seconds_per_report", "completion_tokens_per_report")


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------
@dataclass
class Design:
    """The corpora per region, the reports scored for extraction, the models and the answer mode."""

    datasets: dict[str, Dataset]
    evalsets: dict[str, pd.DataFrame]
    specs: list[registry.ModelSpec]
    extract_splits: list[str]
    mode: str
    prompt_variant: str = "zero-shot"
    retriever: str = "tfidf"
    few_shot: dict = field(default_factory=dict)  # region -> None, fixed examples or a retriever (llm.retrieval)
    examples_from: dict = field(default_factory=dict)  # region -> the manifest whose training split gives examples
    seed: int = 0

    @property
    def models(self) -> list[str]:
        return [s.name for s in self.specs]

    def summary(self) -> str:
        """One markdown sentence: reports per region, splits, models, mode."""
        per_region = ", ".join(f"{r}: {len(e)}" for r, e in self.evalsets.items())
        return (f"**{sum(map(len, self.evalsets.values()))}** reports scored for extraction ({per_region}; splits "
                f"{', '.join(self.extract_splits)}); **{len(self.specs)}** models, mode **{self.mode}**, "
                f"{retrieval.parse_shots(self.prompt_variant).label(self.retriever)}.")

    def corpus_table(self) -> pd.DataFrame:
        """Per region: findings, reports, hedged labels among the scored reports."""
        return pd.DataFrame({r: {"findings": len(d.schema.ids), "reports": len(d.frame),
                                 "hedged labels in scored reports":
                                     int((self.evalsets[r][d.schema.ids] == "uncertain").to_numpy().sum())}
                             for r, d in self.datasets.items()}).T


def design(manifests: Mapping[str, str], models: Sequence[str], mode: str = "template",
           extract_splits: Sequence[str] = ("test",), limit: int | None = None, seed: int = 0,
           prompt_variant: str = "zero-shot", retriever: str = "tfidf",
           examples_from: Mapping[str, str] | None = None) -> Design:
    """Load each region's manifest and draw at most ``limit`` reports of ``extract_splits`` per region (``seed``);
    ``prompt_variant`` (``zero-shot``, ``few-shot`` or ``knn:K`` by ``retriever``) chooses each region's examples from
    its training split, or from that of ``examples_from[region]``."""
    datasets = {r: load_dataset(m) for r, m in manifests.items()}
    evalsets = {}
    for r, d in datasets.items():
        f = d.frame[d.frame.split.isin(extract_splits)]
        evalsets[r] = (f.sample(n=int(limit), random_state=seed).sort_index() if limit and len(f) > int(limit)
                       else f).reset_index(drop=True)
    shots = {r: prompting.few_shot(prompt_variant, d, d.schema, retriever, (examples_from or {}).get(r), seed=seed,
                                   eval_splits=extract_splits)
             for r, d in datasets.items()}
    return Design(datasets, evalsets, [registry.get_model(m) for m in models], list(extract_splits), mode,
                  prompt_variant, retriever, shots, dict(examples_from or {}), seed)


def extract(d: Design, allow_hosts: Sequence[str] = (), timeout: float = 600, progress: bool = True
            ) -> dict[tuple[str, str], engine.LabelRun]:
    """Every model fills the template of every scored report: (model, region) -> answers, failures, statistics."""
    return {(spec.name, r): engine.label_frame(ev, d.datasets[r].schema, spec, mode=d.mode, allow_hosts=allow_hosts,
                                               few_shot=d.few_shot.get(r), timeout=timeout, progress=progress)
            for spec in d.specs for r, ev in d.evalsets.items()}


def variant(d: Design, shots: str, mode: str) -> Design:
    """The same reports and models under another prompt configuration (examples drawn as :func:`design` does)."""
    few = {r: prompting.few_shot(shots, ds, ds.schema, d.retriever, d.examples_from.get(r), seed=d.seed,
                                 eval_splits=d.extract_splits) for r, ds in d.datasets.items()}
    return replace(d, mode=mode, prompt_variant=shots, few_shot=few)


def validation_reports(d: Design) -> dict[str, pd.DataFrame]:
    """Per region, as many validation reports as the region has scored reports (drawn with the design's seed):
    what calibrated configurations fit their state bias on. Refused when validation reports are scored."""
    if "validation" in d.extract_splits:
        raise ValueError("a calibrated configuration fits its bias on the validation reports, which are scored "
                         "here; score the test split only (extract_splits: [test])")
    out = {}
    for r, ds in d.datasets.items():
        v = ds.split("validation")
        if v.empty:
            raise ValueError(f"{ds.name} has no validation reports to calibrate on; drop the calibrated configuration")
        n = len(d.evalsets[r])
        out[r] = (v.sample(n=n, random_state=d.seed).sort_index() if len(v) > n else v).reset_index(drop=True)
    return out


def calibrated_extract(d: Design, allow_hosts: Sequence[str] = (), timeout: float = 600, progress: bool = True
                       ) -> tuple[dict[tuple[str, str], engine.LabelRun], dict[tuple[str, str], dict]]:
    """Like :func:`extract`, with each model's per-state bias fitted per region on validation reports
    (:func:`validation_reports`, :func:`radpriv.evaluate.fit_state_bias`). Template mode decodes the scored reports
    with the bias (``value_bias``: the choice of each field shifts); scoring mode applies it to the answers'
    probabilities (parents propagated again). Returns the runs and the biases per (model, region)."""
    from scipy.special import log_softmax

    val = validation_reports(d)
    runs, biases = {}, {}
    for spec in d.specs:
        for r, ev in d.evalsets.items():
            schema, ids = d.datasets[r].schema, list(d.datasets[r].schema.ids)
            vrun = engine.label_frame(val[r], schema, spec, mode=d.mode, allow_hosts=allow_hosts,
                                      few_shot=d.few_shot.get(r), timeout=timeout, progress=progress)
            bias = evaluate.fit_state_bias(vrun.answers, val[r], ids)
            biases[spec.name, r] = bias
            if d.mode == "template":
                vb = {v: bias[s.value] for v, s in prompts.TEMPLATE_VALUES.items()}
                runs[spec.name, r] = engine.label_frame(ev, schema, spec, mode="template", allow_hosts=allow_hosts,
                                                        few_shot=d.few_shot.get(r), timeout=timeout,
                                                        progress=progress, params={"value_bias": vb})
                continue
            run = engine.label_frame(ev, schema, spec, mode="scoring", allow_hosts=allow_hosts,
                                     few_shot=d.few_shot.get(r), timeout=timeout, progress=progress)
            a = run.answers.copy()
            b = np.array([bias[s] for s in evaluate.STATES3])
            for i, row in a.iterrows():
                states = {}
                for f in ids:
                    lp = np.log(np.clip(row[[f"p_{s}__{f}" for s in evaluate.STATES3]].to_numpy(float), 1e-12, None))
                    states[f] = State(evaluate.STATES3[int(np.argmax(log_softmax(lp) + b))])
                for f, st in schema.propagate(states).items():
                    a.at[i, f] = st.value
            runs[spec.name, r] = replace(run, answers=a)
    return runs, biases


@dataclass
class Configurations:
    """Each model under each prompt configuration on the same reports: label accuracy and uncertainty F1 with
    bootstrap CIs, seconds per report; the per-configuration extractions; notes."""

    table: pd.DataFrame
    extractions: dict[str, "Extraction"]
    notes: list[str]

    def figure(self):
        """Label accuracy against model file size (log scale), a line per configuration (whiskers: 95 % CI); the
        paper's GPT-4o label accuracy (all regions) as a grey line (clinical reports, another model)."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        t = self.table.dropna(subset=["model file (GB)"])
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        for (conf, g), color in zip(t.groupby("configuration", sort=False), sns.color_palette("deep")):
            g = g.sort_values("model file (GB)")
            ax.errorbar(g["model file (GB)"], g["label accuracy"], yerr=[g["label accuracy"] - g["ci_low"],
                        g["ci_high"] - g["label accuracy"]], marker="o", capsize=3, label=conf, color=color)
        pub = {r["region"]: r["accuracy"] / 100 for r in published("label_extraction")["label_accuracy"]}
        ax.axhline(pub["overall"], color="grey", lw=1, ls="--", label="published: GPT-4o, all regions")
        ax.set_xscale("log")
        ax.set(xlabel="model file size (GB, as run here)", ylabel="label accuracy (all regions)", ylim=(0, 1.02),
               title="Prompt configurations by model size (published: clinical reports, GPT-4o)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return fig


def configurations(d: Design, configs: Sequence[str], rules: Mapping[str, str] | None = None,
                   allow_hosts: Sequence[str] = (), timeout: float = 600, progress: bool = True,
                   n_resamples: int = 1000, seed: int = 0) -> Configurations:
    """Every model of the design under every configuration of ``configs``
    (:func:`radpriv.studies.prompting.parse_configuration`: zero-shot, few-shot, knn:K; ``/scoring``,
    ``/calibrated``, ``/template-calibrated``) on the design's scored reports, scored alike. Answers are cached,
    so the design's own configuration costs nothing more."""
    rows, exts, notes, biases = [], {}, [], {}
    for c in configs:
        shots, mode, calibrated = prompting.parse_configuration(c)
        if mode == "orders":
            raise ValueError(f"configuration {c!r}: option orders average the categories of a single-label schema "
                             "(Study 1); findings are multi-label: write <shots>/scoring or <shots>/template-calibrated")
        dv = variant(d, shots, mode)
        if calibrated:
            runs, b = calibrated_extract(dv, allow_hosts, timeout, progress)
            biases.update({(m, r, c): v for (m, r), v in b.items()})
        else:
            runs = extract(dv, allow_hosts, timeout, progress)
        ext = score_extraction(dv, runs, rules, n_resamples=n_resamples, seed=seed)
        exts[c] = ext
        acc = ext.all_regions(ext.accuracy).set_index("system")
        unc = ext.all_regions(ext.uncertainty).set_index("system")
        for spec in d.specs:
            m = spec.name
            st = [runs[m, r].stats for r in d.evalsets]
            n = sum(s["n_answers"] for s in st)
            rows.append({"model": m, "configuration": prompting.configuration_label(c, d.retriever),
                         "label accuracy": acc.at[m, "label_accuracy"], "ci_low": acc.at[m, "ci_low"],
                         "ci_high": acc.at[m, "ci_high"], "uncertainty F1": unc.at[m, "f1"],
                         "seconds per report": sum(s["seconds_per_report"] * s["n_answers"] for s in st) / max(n, 1),
                         "failures": sum(s["n_failures"] for s in st),
                         "model file (GB)": round(spec.size / 1e9, 3) if spec.size else None})
    notes.append(f"Every configuration reads the same {sum(map(len, d.evalsets.values()))} reports; examples come from "
                 "each region's training split (or `examples_from`). Seconds per report as measured when the answer "
                 "was computed (cached answers keep their time); a calibrated configuration also labels as many "
                 "validation reports per region to fit its bias (not counted here).")
    if biases:
        notes.append("Calibrated: one bias per state (present, absent, uncertain) per model and region, fitted on "
                     "validation reports (`evaluate.fit_state_bias`), applied unchanged: "
                     + "; ".join(f"{m} {r} {c}: " + ", ".join(f"{k} {v:+.2f}" for k, v in b.items())
                                 for (m, r, c), b in biases.items()) + ".")
    return Configurations(pd.DataFrame(rows), exts, notes)


def accounting(runs: Mapping[tuple[str, str], engine.LabelRun]) -> pd.DataFrame:
    """Per model and region: inputs = answers + failures, cache hits, seconds and tokens per report."""
    return pd.DataFrame([{"model": m, "region": r, **{k: x.stats.get(k) for k in ACCOUNTING}}
                         for (m, r), x in runs.items()])


def failures(runs: Mapping[tuple[str, str], engine.LabelRun]) -> pd.DataFrame:
    """Every failed or unparseable answer with its reason, model and region (each label scored as wrong)."""
    return pd.concat([x.failures.assign(model=m, region=r) for (m, r), x in runs.items()], ignore_index=True)


@dataclass
class Extraction:
    """Extraction scored per (system, region, report, finding) in ``long`` (:func:`extraction.long_labels`), with
    the tables the notebook shows and markdown ``notes`` (phrase banks, regions without rules)."""

    long: pd.DataFrame
    accuracy: pd.DataFrame
    summary: pd.DataFrame
    uncertainty: pd.DataFrame
    prf: pd.DataFrame
    mcnemar: pd.DataFrame | None
    mcnemar_models: pd.DataFrame | None
    notes: list[str]
    n_regions: int

    def all_regions(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of a per-region ``table`` that cover all regions: ``overall``, or the one region's rows when
        there is one (no ``overall`` row is computed then)."""
        return table[table.region == ("overall" if self.n_regions > 1 else table.region.iloc[0])]

    def uncertainty_shown(self) -> pd.DataFrame:
        """Uncertainty detection over all regions (the one region's rows when there is one)."""
        return self.all_regions(self.uncertainty)

    def mean_prf(self) -> pd.DataFrame:
        """Precision, recall and F1 per system and template value, averaged over findings."""
        return (self.prf.groupby(["system", "value"], sort=False)[["precision", "recall", "f1"]].mean()
                .rename(columns=lambda c: f"mean {c} over findings"))

    def f1_table(self) -> pd.DataFrame:
        """F1 per region, finding and value (columns: systems) with the support, values that occur only."""
        key = ["region", "finding", "value"]
        f1 = (self.prf.pivot_table(index=key, columns="system", values="f1", sort=False)
              .join(self.prf.groupby(key, sort=False)["support"].first()))
        return f1[f1["support"] > 0]


def score_extraction(d: Design, runs: Mapping[tuple[str, str], engine.LabelRun], rules: Mapping[str, str] | None = None,
                     n_resamples: int = 1000, seed: int = 0) -> Extraction:
    """Score every model and the rule baseline (``rules``: your rules file per region, else the manifest's, else
    the schema's) on the same labels, with cluster-bootstrap CIs over reports and label-level McNemar tests."""
    parts, bank_notes, notes = [], [], []
    for r, ev in d.evalsets.items():
        schema = d.datasets[r].schema
        systems = {m: runs[m, r].answers for m in d.models}
        labeler = rule_baseline(schema, (rules or {}).get(r) or d.datasets[r].rules)
        if labeler is not None:
            systems["rule baseline"] = labeler.label_frame(ev)
            bank_notes.append(synthetic.phrase_bank_statement(ev, note=False).replace("here", f"for {r}"))
        else:
            notes.append(f"_Rule baseline for {r}: {NO_RULES} ({schema.name})._")
        parts.append(extraction.long_labels(ev, systems, schema, region=r,
                                            failures={m: runs[m, r].failures for m in d.models}))
    long = pd.concat(parts, ignore_index=True)
    if any(bank_notes):  # synthetic reports: which phrase bank the rule baseline is scored on
        notes.append(" ".join(b for b in bank_notes if b) + " " + synthetic.PHRASE_BANKS_NOTE)
    models = d.models
    return Extraction(
        long=long, accuracy=extraction.label_accuracy(long, n_resamples=n_resamples, seed=seed),
        summary=extraction.extraction_summary(long, n_resamples=n_resamples, seed=seed),
        uncertainty=extraction.uncertainty_detection(long, n_resamples=n_resamples, seed=seed),
        prf=extraction.state_prf(long),
        mcnemar=extraction.mcnemar_vs(long, "rule baseline") if "rule baseline" in set(long.system) else None,
        mcnemar_models=extraction.mcnemar_vs(long[long.system.isin(models)], None) if len(models) > 1 else None,
        notes=notes, n_regions=len(d.datasets))


def accuracy_figure(acc: pd.DataFrame):
    """Label accuracy per region (bars: systems, whiskers: 95 % CI); the paper's GPT-4o figures as black markers."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    regions = list(dict.fromkeys(acc["region"]))
    systems = list(dict.fromkeys(acc["system"]))
    palette = dict(zip(systems, sns.color_palette("deep", len(systems))))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(regions) * max(1, len(systems)) / 2, 3.4))
    width = 0.8 / len(systems)
    for j, system in enumerate(systems):
        sub = acc[acc["system"] == system].set_index("region").reindex(regions)
        x = np.arange(len(regions)) + (j - (len(systems) - 1) / 2) * width
        ax.bar(x, sub["label_accuracy"], width, color=palette[system], label=system)
        ax.errorbar(x, sub["label_accuracy"], yerr=[sub["label_accuracy"] - sub["ci_low"],
                                                    sub["ci_high"] - sub["label_accuracy"]],
                    fmt="none", ecolor="black", lw=0.8, capsize=2)
    pub = {r["region"]: r["accuracy"] / 100 for r in published("label_extraction")["label_accuracy"]}
    xs = [i for i, r in enumerate(regions) if r in pub]
    ax.scatter(xs, [pub[regions[i]] for i in xs], marker="D", color="black", zorder=5, s=18,
               label="published (GPT-4o, clinical reports)")
    ax.set_xticks(np.arange(len(regions)), regions)
    ax.set_ylabel("label accuracy (3 states)")
    ax.set_ylim(max(0.0, float(np.nanmin(acc["ci_low"])) - 0.05) if len(acc) else 0, 1.01)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# downstream: inclusive vs exclusive
# ---------------------------------------------------------------------------------------------
def subset_by_split(frame: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` reports, each split keeping its share (at least 2 per split); ``None``: all of them."""
    if limit is None or int(limit) >= len(frame):
        return frame.reset_index(drop=True)
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column (train/validation/test)")
    share = frame["split"].value_counts(normalize=True)
    parts = [g.sample(n=min(len(g), max(2, round(int(limit) * share[s]))), random_state=seed)
             for s, g in frame.groupby("split", sort=False)]
    keep = pd.concat(parts).index
    return frame.loc[sorted(keep)].reset_index(drop=True)


@dataclass
class ImageExperiment:
    """The image model trained on every label set (``comparison``), the reference it is scored against and,
    on the embedded default, the synthetic radiographs it saw (None with your image manifest)."""

    comparison: Comparison
    reference: pd.DataFrame
    images: SyntheticImages | None = None

    def summary(self) -> str:
        c = self.comparison
        excluded = ", ".join(f"{f} ({why})" for f, why in c.excluded.items()) or "none"
        return (f"Test split: **{len(c.y_test)}** cases; reference: *{c.reference_name}*; **{len(c.findings)}** "
                f"findings compared; excluded (too few positives): {excluded}.")


@dataclass
class Downstream:
    """One region's reports labelled by ``labeler`` (failed answers count as not mentioned), the inclusive and
    exclusive label sets from those labels (``llm_*``) and from ground truth (``truth_*``), and the models
    trained on them as the experiment proceeds (:meth:`train_images`, :meth:`train_text`, :meth:`summarize`)."""

    region: str
    labeler: str
    schema: Schema
    corpus: pd.DataFrame
    label_sets: dict[str, pd.DataFrame]
    labeler_failures: pd.DataFrame
    image: ImageExperiment | None = None
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    aucs: pd.DataFrame | None = None
    tests: pd.DataFrame | None = None

    def summary(self) -> str:
        return (f"**{len(self.corpus)}** {self.region} reports ({self.corpus.split.value_counts().to_dict()}), "
                f"labelled by **{self.labeler}**; {len(self.labeler_failures)} failed answer(s) counted as not "
                "mentioned.")

    def label_set_summary(self) -> pd.DataFrame:
        return label_set_summary(self.label_sets)

    def train_images(self, image_manifest: str | None = None, size: int = 64, width: int = 12, epochs: int = 30,
                     model: str = "resnet50", weights: str | None = None, resnet_epochs: int = 15,
                     device: str = "auto", seed: int = 0) -> ImageExperiment:
        """The image model on every label set: without ``image_manifest``, synthetic radiographs drawn from the
        ground truth and a small CNN (``size``, ``width``, ``epochs``), scored against what is drawn; with it,
        your radiographs and ``model`` (ResNet-50 from local ``weights``, or the small CNN), scored against the
        manifest's labels (exclusive) or else the reports' ground truth (exclusive)."""
        import torch

        torch.manual_seed(seed)  # the first label set's model is initialised from torch's global generator
        if image_manifest is None:
            images, cmp = pipeline.synthetic_image_study(
                self.corpus, self.label_sets, region=self.region, size=size, seed=seed, width=width,
                config=CNNTrainConfig(epochs=epochs, seed=seed, device=device, progress=True))
            self.image = ImageExperiment(cmp, images.visible, images)
        else:
            manifest = read_image_manifest(image_manifest, self.schema)
            reference = (label_matrix(manifest.frame, self.schema, "exclusive") if manifest.has_labels()
                         else self.label_sets["truth_exclusive"])
            cmp = pipeline.manifest_image_study(
                manifest, self.label_sets, reference, model=model, weights=weights,
                config=CNNTrainConfig(epochs=resnet_epochs, batch_size=16, lr=3e-4, seed=seed, device=device))
            self.image = ImageExperiment(cmp, reference)
        self.comparisons[cmp.kind] = cmp
        return self.image

    def train_text(self) -> Comparison:
        """Frozen MiniLM features and logistic heads on every label set, scored against the image reference."""
        name = self.image.comparison.reference_name
        cmp = pipeline.text_study(self.corpus, self.label_sets, {name: self.image.reference})[name]
        self.comparisons[cmp.kind] = cmp
        return cmp

    def summarize(self, n_resamples: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Macro AUC per experiment and label set (DeLong CI) and the paired tests of :data:`PAIRS`."""
        self.aucs, self.tests = pipeline.summary_table(self.comparisons, pairs=PAIRS, n_resamples=n_resamples)
        return self.aucs, self.tests

    def threshold_summary(self) -> pd.DataFrame:
        """Mean sensitivity, specificity, PPV and F1 at the validation-chosen thresholds, per experiment."""
        return pd.concat([c.threshold_summary().assign(experiment=name) for name, c in self.comparisons.items()],
                         ignore_index=True)


def downstream_labels(d: Design, region: str, labeler: str, rules: Mapping[str, str] | None = None,
                      limit: int | None = None, allow_hosts: Sequence[str] = (), timeout: float = 600,
                      seed: int = 0) -> Downstream:
    """Label ``region``'s reports (at most ``limit``, split shares kept) with ``labeler`` (a model name, or
    ``"rule baseline"``) and build the inclusive and exclusive label sets from them and from ground truth. An LLM
    labeler uses the design's examples; with ``knn:K`` a training report is never its own example, but its
    neighbours' reference labels are shown (what a site with a small labelled set would do)."""
    ds = d.datasets[region]
    schema = ds.schema
    corpus = subset_by_split(ds.frame, limit, seed=seed)
    if labeler == "rule baseline":
        rules_ = rule_baseline(schema, (rules or {}).get(region) or ds.rules)
        if rules_ is None:
            raise ValueError(f"downstream_labeler 'rule baseline': {NO_RULES} {schema.name}; "
                             "name an LLM or a rules file")
        extracted, failed = rules_.label_frame(corpus), pd.DataFrame(columns=["report_id", "reason"])
    else:
        run = engine.label_frame(corpus, schema, registry.get_model(labeler), mode=d.mode, allow_hosts=allow_hosts,
                                 few_shot=d.few_shot.get(region), timeout=timeout, progress=True)
        extracted, failed = evaluate.fill_failures(corpus, run.answers, run.failures, schema), run.failures
    return Downstream(region, labeler, schema, corpus, build_label_sets({"llm": extracted, "truth": corpus}, schema),
                      failed)


def per_finding(cmp: Comparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AUC per finding (columns: label sets) with the reference's positives and negatives, and the per-finding
    DeLong tests inclusive vs exclusive on the extracted labels (Holm over findings)."""
    per = cmp.auc_table()
    table = (per.pivot_table(index="finding", columns="label_set", values="auc", sort=False)
             .join(per.groupby("finding", sort=False)[["n_pos", "n_neg"]].first()))
    _, tests = cmp.delong_tests([PAIRS[0]], n_resamples=0)
    return table, tests


def radiograph_figure(images: SyntheticImages, schema: Schema, k: int = 4):
    """The first ``k`` synthetic cases, one column each (views in rows), titled with what is drawn on them."""
    import matplotlib.pyplot as plt

    k = min(k, len(images))
    fig, axes = plt.subplots(len(images.views), k, figsize=(1.8 * k, 3.8), squeeze=False)
    for j in range(k):
        drawn = [f for f in schema.ids if images.visible.iloc[j][f]]
        for v, view in enumerate(images.views):
            axes[v, j].imshow(images.images[j, v], cmap="gray", vmin=0, vmax=1)
            axes[v, j].set_axis_off()
            axes[v, j].set_title(f"{view}" + ("" if v else "\n" + (", ".join(drawn)[:40] or "no finding")), fontsize=6)
    fig.suptitle("SYNTHETIC radiographs (generated, not real patients)", fontsize=9)
    return fig


def macro_auc_figure(aucs: pd.DataFrame):
    """Macro AUC with its 95 % CI per experiment (rows) and label set (colours); the paper's downstream rows as
    dashed lines, one per distinct value, labelled with the label policies that reached it."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    exps = list(dict.fromkeys(aucs["experiment"]))
    sets = list(dict.fromkeys(aucs["label_set"]))
    palette = dict(zip(sets, sns.color_palette("deep", len(sets))))
    fig, ax = plt.subplots(figsize=(6.4, 0.7 + 0.55 * len(exps) * len(sets) / 2))
    h = 0.8 / len(sets)
    for j, name in enumerate(sets):
        sub = aucs[aucs["label_set"] == name].set_index("experiment").reindex(exps)
        y = np.arange(len(exps)) + (j - (len(sets) - 1) / 2) * h
        ax.errorbar(sub["macro_auc"], y, xerr=[sub["macro_auc"] - sub["ci_low"], sub["ci_high"] - sub["macro_auc"]],
                    fmt="o", color=palette[name], capsize=2, label=name)
    by_value: dict[float, list[str]] = {}
    for row in published("label_extraction")["downstream"]:
        by_value.setdefault(float(row["macro_auc"]), []).append(f"{row['region']} {row['labels']}")
    for value, who in by_value.items():
        ax.axvline(value, ls="--", c="grey", lw=0.8, label=f"published {', '.join(who)}: {value:.2f}")
    ax.axvline(0.5, ls=":", c="lightgrey", lw=0.8)
    ax.set_yticks(np.arange(len(exps)), exps, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("macro AUC (test split, 95 % DeLong CI)")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# beside the paper; provenance and saved results
# ---------------------------------------------------------------------------------------------
def accuracy_beside_published(acc: pd.DataFrame) -> pd.DataFrame:
    """Label accuracy per region: the paper's GPT-4o rows and each system of this run."""
    rows = [{"source": "published (GPT-4o, clinical reports)", "region": p["region"],
             "label accuracy": p["accuracy"] / 100} for p in published("label_extraction")["label_accuracy"]]
    rows += [{"source": f"this run: {a.system}", "region": a.region, "label accuracy": round(a.label_accuracy, 3)}
             for a in acc.itertuples()]
    return pd.DataFrame(rows).pivot_table(index="source", columns="region", values="label accuracy", sort=False)


def auc_beside_published(down: Downstream) -> pd.DataFrame:
    """Macro AUC per label policy: the paper's ResNet-50 rows and this run's models on the extracted labels."""
    rows = [{"source": "published (elbow radiographs, ResNet-50)", "labels": p["labels"], "macro AUC": p["macro_auc"]}
            for p in published("label_extraction")["downstream"]]
    rows += [{"source": f"this run: {a.experiment} ({down.labeler} labels)", "labels": a.label_set[len("llm_"):],
              "macro AUC": round(a.macro_auc, 3)} for a in down.aucs.itertuples() if a.label_set.startswith("llm_")]
    return pd.DataFrame(rows).pivot_table(index="source", columns="labels", values="macro AUC", sort=False)


def published_note(down: Downstream) -> str:
    """The paper's conclusion beside this run's inclusive-vs-exclusive differences (extracted labels)."""
    ours = "; ".join(f"{t.experiment}: difference {t.difference:+.3f}, p = {t.p_delong:.3g}"
                     for t in down.tests.itertuples() if t.a == "llm_inclusive")
    return f"Published: {published('label_extraction')['note']}. This run (extracted labels, paired DeLong): {ours}"


def provenance_extra(runs: Mapping[tuple[str, str], engine.LabelRun], down: Downstream | None) -> dict:
    """Run statistics of every extraction run, and the downstream models' findings, exclusions and training."""
    image = down.image if down is not None else None
    return {"llm_runs": {f"{m}/{r}": x.stats for (m, r), x in runs.items()},
            "downstream": {n: {"findings": c.findings, "excluded": c.excluded,
                               "train": {k: {kk: vv for kk, vv in v.info.items() if kk != "history"}
                                         for k, v in c.runs.items()}} for n, c in down.comparisons.items()}
            if down is not None else None,
            "synthetic_images": image.images.params if image is not None and image.images is not None else None}


def results(ext: Extraction, down: Downstream | None, configs: Configurations | None = None) -> dict:
    """What the notebook saves (:func:`radpriv.run.save_results`): every label scored, the accuracy table, the
    McNemar tests, the configurations compared (table and every label of each) and the image experiment's test
    labels and probabilities, so that a test can recompute them."""
    cmp = down.image.comparison if down is not None else None
    return {"labels_long": ext.long, "label_accuracy": ext.accuracy, "mcnemar_vs_rules": ext.mcnemar,
            "configurations": configs.table if configs is not None else None,
            "configuration_labels": ({c: e.long for c, e in configs.extractions.items()} if configs is not None
                                     else None),
            "downstream": {"macro_auc": down.aucs, "tests": down.tests, "findings": cmp.findings, "y_test": cmp.y_test,
                           "proba_test": {n: r.proba_test for n, r in cmp.runs.items()}} if down is not None else None}
