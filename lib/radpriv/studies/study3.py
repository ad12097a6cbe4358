"""Study 3 (``notebooks/03_dp_lora.ipynb``): an encoder fine-tuned for multi-label report classification, with
LoRA under DP-SGD over a grid of ε, beside non-private LoRA and full fine-tuning, two TF-IDF rows, public-then-
private and a student trained on an LLM teacher's labels.

The notebook calls, in order: :func:`load`, :func:`baselines`, :func:`run_grid`, the tables and figures below,
:func:`teacher_rows` and :func:`results`. Training, caching and scoring are :mod:`radpriv.dp.grid`'s; the teacher
labels are made here with the LLM engine and reach :func:`radpriv.dp.grid.teacher_student` as a label matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radpriv import evaluate
from radpriv.data import Dataset, load_dataset
from radpriv.dp import grid
from radpriv.dp.grid import Split
from radpriv.models import registry
from radpriv.papers import published

#: the columns of the baseline table the notebook shows
BASELINE_COLUMNS = ["dataset", "mode", "epsilon", "seed", "weighted_f1", "weighted_f1_lo", "weighted_f1_hi", "macro_f1",
                    "train_seconds"]
#: the headline run's fields saved for a reader to recompute its F1 (beside the test split's labels)
HEADLINE_FIELDS = ("mode", "init", "epsilon", "seed", "weighted_f1", "macro_f1", "thresholds", "test_proba",
                   "achieved_epsilon", "n_train")


@dataclass
class Data:
    """What every section reads: the encoder checkpoint and, per manifest, its dataset, its train/validation/
    test splits and its public corpus (an independent synthetic draw of the same schema)."""

    encoder_path: str
    datasets: dict[str, Dataset]
    splits: dict[str, dict[str, Split]]
    public: dict[str, Split]

    def table(self) -> pd.DataFrame:
        """One row per dataset: its schema, number of labels and reports per split."""
        return pd.DataFrame([{"dataset": n, "schema": ds.schema.name, "labels": len(ds.schema.ids),
                              **{f"{s} reports": len(self.splits[n][s].texts) for s in ("train", "validation", "test")}}
                             for n, ds in self.datasets.items()])


def encoder_path(encoder: str) -> str:
    """A registered encoder's verified local checkpoint, or ``encoder`` itself when it is a directory."""
    return encoder if Path(encoder).is_dir() else str(registry.get_model(encoder).local_path)


def load(manifests, encoder: str, limit: int | None = None, public_n: int = 300,
         public_then_private: bool = True) -> Data:
    """The datasets (``limit`` reports per split at most), their splits and public corpora of ``public_n``
    reports (labelled when ``public_then_private``; otherwise only the TF-IDF vocabulary reads them)."""
    datasets = {name: load_dataset(name) for name in manifests}
    return Data(encoder_path(encoder), datasets, {n: grid.prepare(ds, limit) for n, ds in datasets.items()},
                {n: grid.public_corpus(ds.schema, n=public_n, labelled=public_then_private)
                 for n, ds in datasets.items()})


def baselines(data: Data, epsilons, seeds, n_resamples: int = 1000) -> dict[str, pd.DataFrame]:
    """Per dataset the two cheap rows (:func:`radpriv.dp.grid.run_baselines`): TF-IDF + logistic regression and
    the DP linear model over the public corpus's TF-IDF features at each ε and seed."""
    return {n: pd.DataFrame(grid.run_baselines(d["train"], d["validation"], d["test"], data.public[n].texts, epsilons,
                                               seeds, n_resamples)) for n, d in data.splits.items()}


def baseline_table(rows: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([b.assign(dataset=n) for n, b in rows.items()])[BASELINE_COLUMNS]


@dataclass
class Grid:
    """The grid's results: ``runs`` the encoder runs per dataset (one row per run, as
    :func:`radpriv.dp.grid.run_grid` returns them); ``allruns`` those and the baselines of every dataset;
    ``per_run`` each run as a flat row (modes named ``<dataset> · <mode>``); ``summary`` one row per
    (mode, init, ε) with its interval."""

    runs: dict[str, pd.DataFrame]
    baselines: dict[str, pd.DataFrame]
    allruns: pd.DataFrame
    per_run: pd.DataFrame
    summary: pd.DataFrame

    @property
    def search_note(self) -> str:
        return grid.search_note(self.allruns)


def run_grid(data: Data, baseline_rows: dict[str, pd.DataFrame], modes, epsilons, seeds, train: dict,
             train_by_mode: dict | None = None, public_then_private: bool = True, public_train: dict | None = None,
             search: dict | None = None, random_init_modes=None, n_resamples: int = 1000) -> Grid:
    """Every mode × ε × seed on every dataset (cached; see :func:`radpriv.dp.grid.run_grid`), then the per-run
    rows and the summary of those runs together with ``baseline_rows``."""
    runs = {n: grid.run_grid(d["train"], d["validation"], d["test"], data.encoder_path, modes, epsilons, seeds,
                             base=train, by_mode=train_by_mode, public=data.public[n] if public_then_private else None,
                             n_resamples=n_resamples, public_train=public_train, search=search,
                             random_init_modes=random_init_modes)
            for n, d in data.splits.items()}
    allruns = pd.concat([pd.concat([r, baseline_rows[n]], ignore_index=True).assign(dataset=n)
                         for n, r in runs.items()], ignore_index=True)
    allruns["init"] = allruns["init"].fillna("none")
    per_run = grid.run_rows(allruns.assign(mode=allruns["dataset"] + " · " + allruns["mode"]))
    return Grid(runs, baseline_rows, allruns, per_run, grid.summarize(per_run))


def utility_figure(g: Grid, dataset: str):
    """Weighted F1 against ε for one dataset, one line per mode and init (non-private modes horizontal)."""
    d = g.allruns[g.allruns.dataset == dataset].copy()
    d["system"] = d["mode"] + d["init"].map({"none": "", "public": " (public init)"})
    fig = evaluate.privacy_utility_curve(d, hue="system")
    fig.axes[0].set_title(dataset)
    return fig


def per_label_table(g: Grid, data: Data, dataset: str) -> pd.DataFrame:
    """Test F1 per label (columns) of each encoder run of one dataset (rows), rounded to two decimals."""
    runs = g.runs[dataset]
    index = [f"{r.mode} ε={r.epsilon:g}" + (" (public init)" if r.init == "public" else "") + f" s{r.seed}"
             for r in runs.itertuples()]
    return pd.DataFrame([r.per_label_f1 for r in runs.itertuples()], columns=list(data.datasets[dataset].schema.ids),
                        index=index).round(2)


def loss_figure(g: Grid, dataset: str):
    """Training and validation loss per epoch of each encoder run of one dataset."""
    fig = evaluate.loss_curves(g.runs[dataset])
    fig.suptitle(dataset)
    return fig


def accounting(g: Grid) -> pd.DataFrame:
    """Each DP run's ε from opacus beside dp_accounting's (encoder runs, then the DP TF-IDF rows). A mismatch
    above 2 % already fails the run; a row not ``ok`` here is an error."""
    table = pd.concat([grid.accounting_table(r).assign(dataset=n) for n, r in g.runs.items()]
                      + [grid.accounting_table(b).assign(dataset=n) for n, b in g.baselines.items()],
                      ignore_index=True)
    if not (table.empty or table["ok"].all()):
        raise AssertionError(f"accountants disagree:\n{table[~table['ok']]}")
    return table


def public_gain(g: Grid) -> pd.DataFrame:
    """Weighted F1 of each DP encoder mode and ε from the public init, the random init and their difference."""
    a = g.allruns
    dp = a[a["mode"].astype(str).str.startswith("dp") & a["init"].isin(["none", "public"])
           & ~a["mode"].isin(["dp-tfidf-linear"])]
    gain = dp.pivot_table(index=["dataset", "mode", "epsilon"], columns="init", values="weighted_f1", aggfunc="mean")
    gain["gain"] = gain.get("public") - gain.get("none")
    return gain


def teacher_examples(schema, shots: str = "zero-shot", public_n: int = 600, retriever: str = "tfidf"):
    """The teacher's few-shot examples (``zero-shot``, ``few-shot`` or ``knn:K``), drawn from the labelled PUBLIC
    corpus (:func:`radpriv.dp.grid.public_frame`, the public stage's reports): never from the training reports the
    teacher labels, whose gold labels a teacher-student setting does not have."""
    from radpriv.llm.retrieval import parse_shots
    from radpriv.studies import prompting

    if parse_shots(shots).kind == "zero":
        return None
    pool = grid.public_frame(schema, n=public_n)
    if pool is None:
        raise ValueError(f"teacher_shots {shots}: the teacher's examples come from the labelled public corpus, and no "
                         f"synthetic generator writes schema {schema.name!r}; set teacher_shots: zero-shot")
    return prompting.from_frame(shots, pool.assign(split="train"), schema, retriever,
                                source=f"public corpus ({len(pool)} synthetic reports, seed 1)")


def teacher_labels(frame: pd.DataFrame, schema, model: str, mode: str = "scoring", progress: bool = True,
                   policy: str = "exclusive", allow_hosts=(), few_shot=None) -> tuple[np.ndarray, dict]:
    """0/1 labels of ``frame``'s reports from a local LLM through the engine (cached), and the run's stats;
    failed reports are labelled all-absent and counted, never dropped. ``few_shot``: :func:`teacher_examples`."""
    from radpriv.llm import engine

    run = engine.label_frame(frame, schema, model, mode=mode, progress=progress, allow_hosts=allow_hosts,
                             few_shot=few_shot)
    pred = evaluate.fill_failures(frame, run.answers, run.failures, schema)
    return evaluate.binarize(pred, list(schema.ids), policy), dict(run.stats)


def teacher_rows(data: Data, teacher_model: str | None, teacher_mode: str, student_mode: str, seeds, train: dict,
                 train_by_mode: dict | None = None, teacher_limit: int | None = None, limit: int | None = None,
                 allow_hosts=(), n_resamples: int = 1000, teacher_shots: str = "zero-shot", public_n: int = 600,
                 retriever: str = "tfidf") -> pd.DataFrame:
    """Per dataset: the teacher labels the first ``teacher_limit`` (else ``limit``, else all) training reports, with
    ``teacher_shots`` examples from the public corpus of ``public_n`` reports (:func:`teacher_examples`);
    per seed a ``student_mode`` student is trained on those labels and on the same reports' gold labels
    (:func:`radpriv.dp.grid.teacher_student`), both scored on the gold test labels. No rows without a teacher."""
    from sklearn.metrics import f1_score

    rows = []
    if not teacher_model:
        return pd.DataFrame(rows)
    for n, ds in data.datasets.items():
        frame = ds.split("train")
        if teacher_limit or limit:
            frame = frame.head(teacher_limit or limit)
        Yt, stats = teacher_labels(frame, ds.schema, teacher_model, mode=teacher_mode, allow_hosts=allow_hosts,
                                   few_shot=teacher_examples(ds.schema, teacher_shots, public_n, retriever))
        gold = Split.from_frame(frame, list(ds.schema.ids))
        d = data.splits[n]
        for seed in seeds:
            cfg = grid.mode_config(train, train_by_mode, student_mode, seed=seed)
            rec, gold_rec = grid.teacher_student(cfg, data.encoder_path, gold, Yt, d["validation"], d["test"],
                                                 n_resamples=n_resamples)
            rows.append({"dataset": n, "teacher": teacher_model, "teacher mode": teacher_mode,
                         "teacher examples": teacher_shots,
                         "reports labelled": len(frame), "teacher failures": stats.get("n_failures"),
                         "teacher F1 vs gold (train)": f1_score(gold.Y, Yt, average="weighted", zero_division=0),
                         "student": cfg.mode, "seed": seed,
                         "student F1 (teacher labels)": rec["weighted_f1"],
                         "student F1 (gold labels, same reports)": gold_rec["weighted_f1"]})
    return pd.DataFrame(rows)


def paper_tables(g: Grid) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's published rows and ours (system, init, ε, weighted F1), each tagged with its source."""
    paper = pd.DataFrame(published("dp_lora")["rows"])
    paper.insert(0, "source", "published")
    ours = g.summary.rename(columns={"mode": "system"})[["system", "init", "epsilon", "weighted_f1"]]
    ours.insert(0, "source", "this run")
    return paper, ours


def results(data: Data, g: Grid, trend: pd.DataFrame, trend_note: str, accounting_table: pd.DataFrame,
            teacher: pd.DataFrame, gain: pd.DataFrame | None) -> dict:
    """What the notebook saves (:func:`radpriv.run.save_results`): the summary, every run's row, the trend and
    accounting tables, the teacher rows and public-init gain, and the headline run
    (:func:`radpriv.dp.grid.headline_run` of the first dataset) with its test labels, probabilities and
    thresholds, so a reader can recompute its F1."""
    name = next(iter(data.datasets))
    head = grid.headline_run(g.runs[name])
    return {"summary": g.summary, "runs": g.per_run, "trend": trend, "trend_note": trend_note,
            "accounting": accounting_table, "teacher": teacher,
            "public_gain": gain.reset_index() if gain is not None else None,
            "headline": {"dataset": name, "label_ids": list(data.datasets[name].schema.ids),
                         "test_Y": data.splits[name]["test"].Y, **{k: head[k] for k in HEADLINE_FIELDS}}}


def headline_note(res: dict, saved: Path) -> str:
    h = res["headline"]
    return (f"Headline run: {h['dataset']} · {h['mode']} at ε = {h['epsilon']:g}, seed {h['seed']}: weighted F1 "
            f"{h['weighted_f1']:.3f}, macro F1 {h['macro_f1']:.3f} on {len(h['test_proba'])} test reports "
            f"(saved to `_results/{saved.name}`).")


def models(encoder: str, teacher_model: str | None) -> list:
    """The registered models a run used (provenance): the encoder unless it is a directory, and the teacher."""
    return (([] if Path(encoder).is_dir() else [registry.get_model(encoder)])
            + ([registry.get_model(teacher_model)] if teacher_model else []))


def provenance_extra(g: Grid) -> dict:
    """Each mode's resolved training settings and every run's cache key, for the provenance block."""
    return {"train_configs": grid.resolved_configs(g.allruns),
            "run_keys": g.allruns.get("key", pd.Series(dtype=str)).dropna().tolist()}
