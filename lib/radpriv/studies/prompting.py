"""The few-shot examples of the LLM studies (01, 02 and Study 3's teacher) and where they come from.

``prompt_variant`` (a notebook parameter) is ``zero-shot``, ``few-shot`` (a fixed example per category) or
``knn:K`` (the K most similar training reports per report, :mod:`radpriv.llm.retrieval`); ``retriever`` is
``tfidf`` or ``minilm`` (the registry's MiniLM-L6, sha256-verified). Examples come from the training split of
the study's own manifest, or of ``examples_from`` (another manifest with the same label schema) when your own
reports are evaluation-only.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from radpriv.data import Dataset, load_dataset
from radpriv.llm import retrieval
from radpriv.schemas import Schema

__all__ = ["configuration_label", "example_source", "few_shot", "from_frame", "parse_configuration"]


def example_source(ds: Dataset, schema: Schema, examples_from: str | None = None) -> tuple[pd.DataFrame, str]:
    """The training reports examples are drawn from, and a name for them: ``ds``'s own training split, or that of
    the manifest ``examples_from`` (same schema)."""
    src = load_dataset(examples_from) if examples_from else ds
    train = src.training_examples(schema if examples_from else None)
    return train, f"{src.name} (train, {len(train)} reports)"


def few_shot(prompt_variant: str, ds: Dataset, schema: Schema, retriever: str = "tfidf",
             examples_from: str | None = None, seed: int = 0, eval_splits: Sequence[str] = ()):
    """What ``engine.label_frame(few_shot=...)`` takes: None, the fixed examples, or a per-report retriever.
    Retrieved examples are refused when ``eval_splits`` include the training split they are drawn from."""
    shots = retrieval.parse_shots(prompt_variant)
    if shots.kind == "zero":
        return None
    if shots.kind == "knn" and "train" in eval_splits and not examples_from:
        raise ValueError(f"prompt_variant {prompt_variant}: the evaluation reports include the training split the "
                         "examples are retrieved from; evaluate validation/test, or name examples_from")
    train, source = example_source(ds, schema, examples_from)
    return from_frame(prompt_variant, train, schema, retriever, source, seed)


def from_frame(prompt_variant: str, train: pd.DataFrame, schema: Schema, retriever: str = "tfidf", source: str = "",
               seed: int = 0):
    """:func:`few_shot` over a given frame of labelled training reports (``source`` names them in the report)."""
    shots = retrieval.parse_shots(prompt_variant)
    embed = None
    if shots.kind == "knn" and retriever == "minilm":
        from radpriv.downstream.text import MiniLMEncoder

        embed = MiniLMEncoder().encode
    return retrieval.examples_for_design(shots, train, schema, retriever, embed, seed=seed, source=source)


# ---------------------------------------------------------------------------------------------
# prompt configurations (the `configurations` parameter of the LLM notebooks)
# ---------------------------------------------------------------------------------------------
HOWS = ("template", "scoring", "calibrated", "orders", "orders-calibrated", "template-calibrated")
#: option orders a ``/orders`` configuration averages (:func:`radpriv.llm.engine.label_frame_orders`)
ORDERS = 3


def parse_configuration(spec: str) -> tuple[str, str, bool]:
    """``"<shots>"`` (template mode), ``"<shots>/scoring"`` (the option with the highest probability),
    ``"<shots>/calibrated"`` (scoring, the option prior corrected by a bias fitted on validation reports) or
    ``"<shots>/orders"`` (single-label scoring averaged over :data:`ORDERS` orders of the categories; mode
    ``orders``), ``"<shots>/orders-calibrated"`` (that average, calibrated) or
    ``"<shots>/template-calibrated"`` (template answers decoded with a per-state bias fitted on validation reports;
    multi-label) -> (shots, mode, calibrated); shots as :func:`radpriv.llm.retrieval.parse_shots` reads them
    (zero-shot, few-shot, knn:K)."""
    shots, _, how = str(spec).strip().partition("/")
    how = how.strip() or "template"
    if how not in HOWS:
        raise ValueError(f"configuration {spec!r}: after '/' write {', '.join(HOWS[:-1])} or {HOWS[-1]} "
                         "(e.g. knn:4, few-shot/calibrated)")
    mode = {"scoring": "scoring", "calibrated": "scoring", "orders": "orders", "orders-calibrated": "orders"
            }.get(how, "template")
    return str(retrieval.parse_shots(shots)), mode, how.endswith("calibrated")


def configuration_label(spec: str, retriever: str = "tfidf") -> str:
    """A configuration's readable name: 'fixed few-shot', '4 retrieved (tfidf), scoring calibrated', ..."""
    shots, mode, calibrated = parse_configuration(spec)
    how = {("scoring", True): ", scoring calibrated", ("scoring", False): ", scoring",
           ("template", True): ", template calibrated", ("template", False): "",
           ("orders", False): f", scoring over {ORDERS} option orders",
           ("orders", True): f", scoring over {ORDERS} option orders calibrated"}[mode, calibrated]
    return retrieval.parse_shots(shots).label(retriever) + how
