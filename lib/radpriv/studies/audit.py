"""The privacy audit (``notebooks/04_privacy_audit.ipynb``): canary exposure of a causal LM fine-tuned with and
without DP-SGD, membership inference against Study 3 classifiers with the one-run ε lower bound, and masked-token
reconstruction of findings through a probe MLM head.

The notebook calls, in order: :func:`load`, :func:`train_lms`, :func:`score_exposure`, :func:`membership`,
:func:`reconstruct`, then :func:`summary` and :func:`results`. The measurements are :mod:`radpriv.audit`'s; the
tables and figures come from :mod:`radpriv.audit.report`. Each step records its wall time (``seconds``).
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radpriv.audit import causal_lm, mia, one_run, reconstruction
from radpriv.audit import report as audit_report
from radpriv.data import Dataset, load_dataset
from radpriv.dp.train import TrainConfig, load_encoder
from radpriv.models import registry

#: confidence of the one-run ε lower bounds (the better of the two attacks holds at this level)
CONFIDENCE = 0.95
#: the membership table's columns the notebook shows
MIA_COLUMNS = ["model", "attack", "epsilon", "epsilon_at_audit_delta", "auc", "auc_low", "auc_high", "tpr_at_0.01_fpr",
               "k_plus", "k_minus", "correct", "eps_lower_bound", "member_loss", "nonmember_loss", "train_seconds"]
#: per-secret exposure columns shown, and those saved
EXPOSURE_COLUMNS = ["model", "secret", "k", "logppl", "median_candidate_logppl", "rank", "exposure",
                    "exposure_extrapolated"]
EXPOSURE_SAVED = ["model", "secret", "k", "epsilon", "logppl", "rank", "n_candidates", "exposure"]


def _local(model: str) -> str:
    return model if Path(model).is_dir() else str(registry.get_model(model).local_path)


@dataclass
class Corpus:
    """The audited corpus: every report (``canary`` as text, "" for none), its train and test splits, and how
    many training reports carry each canary (``counts``: {secret: k}, read from the data)."""

    dataset: Dataset
    frame: pd.DataFrame
    train: pd.DataFrame
    held: pd.DataFrame
    counts: dict

    def note(self) -> str:
        return (f"`{self.dataset.name}`: **{len(self.frame)}** reports ({len(self.train)} train); "
                f"**{len(self.counts)}** canaries in **{sum(self.counts.values())}** training reports, inserted k = "
                f"{sorted(self.counts.values())} times.")


def load(manifest: str) -> Corpus:
    ds = load_dataset(manifest)
    frame = ds.frame.copy()
    frame["canary"] = frame["canary"].fillna("").astype(str)
    return Corpus(ds, frame, frame[frame.split == "train"], frame[frame.split == "test"],
                  audit_report.repeat_counts(frame))


@dataclass
class LMAudit:
    """The causal LM before fine-tuning (``tokenizer``, ``base``), the secrets scored (``canaries``) and the
    fine-tuned runs by name (non-private first, then DP at each ε)."""

    tokenizer: object
    base: object
    canaries: list[dict]
    runs: dict
    seconds: float

    def table(self) -> pd.DataFrame:
        return audit_report.lm_runs_table(self.runs)

    def group_privacy(self, counts: dict) -> pd.DataFrame:
        """What each DP run promises a canary repeated k times, for every k of ``counts`` (group privacy)."""
        return audit_report.group_privacy_table(self.runs, counts)


def train_lms(corpus: Corpus, lm_model: str, epsilons, epochs: int, batch_size: int, lr: float, max_length: int,
              top_layers: int, n_other: int | None, n_val: int, n_controls: int, seed: int = 0) -> LMAudit:
    """LoRA fine-tuning of ``lm_model`` on the canary-bearing training reports plus ``n_other`` others, without DP
    and with DP-SGD at each ε; validation loss on the first ``n_val`` test reports. The secrets: every inserted
    canary and ``n_controls`` never-inserted ones."""
    t = time.time()
    lm_train = causal_lm.lm_training_set(corpus.train, n_other, seed=seed)
    canaries = causal_lm.audit_canaries(corpus.train, corpus.held.text, n_controls, seed=seed)
    base = causal_lm.load_causal_lm(lm_model)
    recipe = dict(epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, top_layers=top_layers, seed=seed)
    configs = [causal_lm.LMConfig(**recipe)] + [causal_lm.LMConfig(dp=True, epsilon=float(e), **recipe)
                                                for e in epsilons]
    runs = {cfg.label: causal_lm.train_lm(cfg, list(lm_train.text), val_texts=list(corpus.held.text[:n_val]), base=base)
            for cfg in configs}
    return LMAudit(base[0], base[1], canaries, runs, time.time() - t)


@dataclass
class Exposure:
    """Every secret's exposure under every scored model (``table``), its mean per model and repetition group
    (``summary``) and the models scored by name."""

    table: pd.DataFrame
    summary: pd.DataFrame
    models: dict
    n_candidates: int
    seconds: float

    def note(self) -> str:
        return (f"Mean sampled exposure (bits; maximum log2({self.n_candidates}+1) = "
                f"{math.log2(self.n_candidates + 1):.2f}; a never-seen secret averages ≈ "
                f"{audit_report.CHANCE_EXPOSURE:.2f}):")


def score_exposure(lm: LMAudit, n_candidates: int, score_base: bool = False, seed: int = 0) -> Exposure:
    """Each secret ranked among ``n_candidates`` random candidates by every fine-tuned LM (and the base LM when
    ``score_base``)."""
    t = time.time()
    models = {**({"base (not fine-tuned)": lm.base} if score_base else {}),
              **{name: r.model for name, r in lm.runs.items()}}
    table = pd.concat([causal_lm.exposure_table(model, lm.tokenizer, lm.canaries, n_candidates=n_candidates, seed=seed)
                       .assign(model=name, epsilon=lm.runs[name].epsilon if name in lm.runs else math.nan)
                       for name, model in models.items()], ignore_index=True)
    seconds = time.time() - t
    return Exposure(table, audit_report.exposure_summary(table, list(models)), models, n_candidates, seconds)


def exposure_figure(lm: LMAudit, exp: Exposure):
    return audit_report.exposure_figure(exp.table, list(exp.models), list(lm.runs), exp.n_candidates)


def completions(lm: LMAudit, exp: Exposure) -> pd.DataFrame:
    return audit_report.completions_table(exp.models, lm.tokenizer, lm.canaries)


# (the result dataclasses below share the shape of a field list and a note(): declarations, not logic)
@dataclass
class Membership:
    """The membership audit: target configurations by name, the metrics table, the attack scores
    (``scores[name] = (member, loss score, calibrated score)``), the trained classifiers and the draw."""

    configs: dict
    table: pd.DataFrame
    scores: dict
    classifiers: dict
    split: dict
    encoder_path: str
    seconds: float

    def note(self) -> str:
        return (f"Inclusion draw: **{int(self.split['member'].sum())}** of {len(self.split['member'])} audit reports "
                f"trained on (each with probability 1/2); {len(self.split['reference'])} reference reports.")

    def roc_figure(self):
        return audit_report.mia_roc_figure(self.scores)

    def epsilon_comparison(self) -> pd.DataFrame:
        return audit_report.epsilon_comparison(self.table, list(self.configs))


def membership(corpus: Corpus, encoder: str, epsilons, epochs: int, batch_size: int, lr: float, max_length: int,
               n_members: int, n_reference: int, seed: int = 0) -> Membership:
    """Non-private LoRA and DP-LoRA at each ε (one window per report: the privacy unit is one report) attacked
    on 2 × ``n_members`` audit reports, each trained on with probability 1/2
    (:func:`radpriv.audit.mia.run_membership_audit`)."""
    t = time.time()
    enc_path = _local(encoder)
    common = dict(epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length, max_chunks=1, stride=0, seed=seed)
    configs = {"LoRA (non-private)": TrainConfig(mode="lora", **common)}
    configs.update({f"DP-LoRA ε={e:g}": TrainConfig(mode="dp-lora", epsilon=float(e), **common) for e in epsilons})
    table, scores, classifiers, split = mia.run_membership_audit(corpus.frame, corpus.dataset.label_columns, enc_path,
                                                                 configs, n_members=n_members,
                                                                 n_reference=n_reference, seed=seed,
                                                                 confidence=CONFIDENCE)
    return Membership(configs, table, scores, classifiers, split, enc_path, time.time() - t)


@dataclass
class Reconstruction:
    """Per report and encoder, the cosine similarity and token accuracy of the reconstructed findings
    (``table``, with ``membership``), the first examples, the encoders in order and the probe's fit."""

    table: pd.DataFrame
    examples: dict
    encoders: list[str]
    n_public: int
    fit_info: dict
    seconds: float

    def note(self) -> str:
        return (f"Probe fitted on **{self.n_public}** public reports ({self.fit_info['n_masked_tokens']} masked "
                f"tokens, final loss {self.fit_info['final_loss']:.2f}).")

    def by_membership(self) -> pd.DataFrame:
        return (self.table.pivot_table(index="encoder", columns="membership", values=["cosine", "token_accuracy"])
                .reindex(self.encoders).round(3))

    def figure(self):
        return audit_report.reconstruction_figure(self.table, self.encoders)

    def example(self) -> pd.DataFrame:
        """The first member report's original findings and each encoder's reconstruction."""
        return pd.DataFrame({"original findings": [self.examples[self.encoders[0]][0][0]],
                             **{name: [self.examples[name][1][0]] for name in self.encoders}}).T.rename(
                                 columns={0: "member report #1"})


def reconstruct(corpus: Corpus, mem: Membership, n: int, fraction: float, n_public: int, probe_steps: int,
                seed: int = 0) -> Reconstruction:
    """A probe MLM head fitted on the base encoder over ``n_public`` public reports (no canary, in neither the
    audit nor the reference set), then applied to the base encoder and every classifier's encoder on ``n``
    member and ``n`` non-member reports of the membership draw, ``fraction`` of their FINDINGS tokens masked."""
    t = time.time()
    tok, base = load_encoder(mem.encoder_path)
    used = set(mem.split["audit"].index) | set(mem.split["reference"].index)
    public = corpus.frame[(corpus.frame.canary == "") & ~corpus.frame.index.isin(used)].head(n_public)
    head = reconstruction.fit_probe(base, tok, list(public.text), steps=probe_steps, seed=seed)
    members, nonmembers = mem.split["members"].head(n), mem.split["nonmembers"].head(n)
    encoders = {"base (not fine-tuned)": base, **{name: mem.classifiers[name].model for name in mem.configs}}
    table, examples = reconstruction.reconstruction_similarity(encoders, head, tok, base,
                                                               list(members.text) + list(nonmembers.text),
                                                               fraction=fraction, seed=seed)
    table["membership"] = np.where(table.row < len(members), "member", "non-member")
    return Reconstruction(table, examples, list(encoders), len(public), head.fit_info, time.time() - t)


def summary(corpus: Corpus, lm: LMAudit, exp: Exposure, eps_cmp: pd.DataFrame, rec: Reconstruction,
            mem: Membership, t0: float) -> tuple[list[str], dict]:
    """The summary's bullet points (:func:`radpriv.audit.report.summary_lines`) with a last one on wall times,
    and the timings themselves (seconds per step, total since ``t0``, this process's CPU time)."""
    lines = audit_report.summary_lines(lm.runs, exp.table, eps_cmp, corpus.counts, exp.n_candidates,
                                       confidence=CONFIDENCE)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    timings = {"causal LM training": lm.seconds, "exposure scoring": exp.seconds, "membership inference": mem.seconds,
               "reconstruction": rec.seconds, "total": time.time() - t0,
               "kernel CPU time (user+sys)": ru.ru_utime + ru.ru_stime}
    lines.append("- wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) +
                 f" (on {os.cpu_count()} CPUs; 1-minute load average at the end {os.getloadavg()[0]:.1f})")
    return lines, timings


def results(corpus: Corpus, lm: LMAudit, exp: Exposure, group_privacy: pd.DataFrame, mem: Membership,
            eps_cmp: pd.DataFrame, lines: list[str]) -> dict:
    """What the notebook saves: the repetition counts, every secret's exposure, the inclusion draw, every attack
    score and the guess grid, so each headline figure can be recomputed."""
    return {
        "repeat_counts": corpus.counts, "n_candidates": exp.n_candidates,
        "lm_runs": {name: {"epsilon": r.epsilon, "delta": r.accounting.get("delta"),
                           "val_loss": r.history[-1]["val_loss"]} for name, r in lm.runs.items()},
        "exposure": exp.table[EXPOSURE_SAVED], "exposure_summary": exp.summary.reset_index(),
        "group_privacy": group_privacy,
        "mia": {"member": mem.split["member"], "audit_rows": list(mem.split["audit"].index), "confidence": CONFIDENCE,
                "grid": one_run.guess_grid(len(mem.split["member"])),
                "scores": {name: {"loss threshold": sc[1], "reference-calibrated": sc[2]}
                           for name, sc in mem.scores.items()},
                "table": mem.table},
        "eps_comparison": eps_cmp.reset_index(), "summary": lines}


def models(*names: str) -> list:
    """The registered models among ``names`` (local directories are not registered), for the provenance."""
    return [registry.get_model(m) for m in names if not Path(m).is_dir()]


def provenance_extra(lm: LMAudit, mem: Membership, timings: dict) -> dict:
    """Each LM and classifier run's config and ε, and the timings, for the provenance block."""
    return {"lm_runs": {n: {"config": r.config.to_json(), "epsilon": r.epsilon, "accounting": r.accounting,
                            "seconds": r.seconds} for n, r in lm.runs.items()},
            "classifier_runs": {n: {"config": r.config.to_json(), "epsilon": r.epsilon, "accounting": r.accounting}
                                for n, r in mem.classifiers.items()},
            "timings_s": {k: round(v, 1) for k, v in timings.items()}}
