"""Few-shot examples per report: none (zero-shot), a fixed set, or the k most similar training reports.

``parse_shots(spec)`` reads what a notebook parameter or ``radpriv label --shots`` says:

- ``"zero-shot"`` (also ``zero``, ``none``, ``0``): the instructions and the report only;
- ``"few-shot"`` (also ``fixed``): one fixed training report per category (multi-label: up to four chosen
  to cover present and uncertain findings), the same for every report (:func:`prompts.few_shot_examples`);
- ``"knn:K"``: per report, the K most similar **training** reports with their reference answers, the most
  similar last (nearest the report it precedes). Similarity is the cosine of TF-IDF vectors (``tfidf``: word
  1-2-grams, sublinear term frequency, fitted on the training reports) or of MiniLM sentence embeddings
  (``minilm``: an ``embed`` function, e.g. ``downstream.text.MiniLMEncoder().encode``, which this module does
  not import: engines stay apart).

Examples come from a training split only: a frame with any other split is refused, so no evaluation report
is ever shown to the model as an example. A user whose own reports are evaluation-only draws them from
another manifest's training split (``examples_from``). A report whose text is also an example candidate
(the same words, after whitespace) never gets itself as an example; how often that happened is counted.

The instructions stay the first turn of every prompt, so the llama.cpp backend evaluates them once and
keeps them in its KV cache; only the examples and the report are evaluated per report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from radpriv.llm import prompts
from radpriv.schemas import Schema

__all__ = ["Shots", "parse_shots", "RETRIEVERS", "ExampleRetriever", "examples_for_design"]

RETRIEVERS = ("tfidf", "minilm")
_ZERO = ("zero-shot", "zero", "none", "0")
_FIXED = ("few-shot", "fixed")
_KNN = re.compile(r"^knn:(\d+)$")


@dataclass(frozen=True)
class Shots:
    """What a prompt shows before the report: ``kind`` is ``zero``, ``fixed`` or ``knn`` (with ``k``)."""

    kind: str
    k: int = 0

    def __str__(self) -> str:
        return {"zero": "zero-shot", "fixed": "few-shot"}.get(self.kind, f"knn:{self.k}")

    def label(self, retriever: str = "tfidf") -> str:
        """Readable name for tables: 'zero-shot', 'fixed few-shot', '4 retrieved (tfidf)'."""
        return {"zero": "zero-shot", "fixed": "fixed few-shot"}.get(self.kind, f"{self.k} retrieved ({retriever})")


def parse_shots(spec: str | Shots | None) -> Shots:
    """``zero-shot`` | ``few-shot`` | ``knn:K`` (K from 1 to 16) -> :class:`Shots`; anything else: one clear line."""
    if isinstance(spec, Shots):
        return spec
    s = str(spec if spec is not None else "zero-shot").strip().lower()
    if s in _ZERO:
        return Shots("zero")
    if s in _FIXED:
        return Shots("fixed")
    m = _KNN.match(s)
    if m and 1 <= int(m.group(1)) <= 16:
        return Shots("knn", int(m.group(1)))
    raise ValueError(f"shots {spec!r}: use zero-shot, few-shot (one fixed example per category) or knn:K "
                     "(the K most similar training reports, K from 1 to 16), e.g. knn:4")


#: identifier header lines (name, birth date, record and accession numbers, exam date) carry no clinical
#: similarity; they are left out of the vectors (the examples shown to the model are the reports as they are)
_IDENTIFIERS = re.compile(r"^\s*(patient|name|dob|date of birth|mrn|accession|exam date)\b.*$", re.I | re.M)


def _norm(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _content(text: str) -> str:
    return _IDENTIFIERS.sub(" ", str(text))


@dataclass
class ExampleRetriever:
    """The k most similar training reports of each report, as (text, JSON answer) few-shot pairs.

    ``train`` holds the example reports with their reference labels (a ``split`` column, if present, must
    be ``train`` everywhere); ``method`` is ``tfidf`` or ``minilm`` (then ``embed`` maps texts to
    L2-normalised vectors). Call it with a report's text to get its examples, least similar first."""

    train: pd.DataFrame
    schema: Schema
    k: int = 4
    method: str = "tfidf"
    embed: Callable[[Sequence[str]], np.ndarray] | None = None
    source: str = ""
    self_matches: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if "split" in self.train and (self.train["split"] != "train").any():
            bad = sorted(set(self.train["split"]) - {"train"})
            raise ValueError(f"retrieved examples must come from a training split only; {self.source or 'the frame'} "
                             f"also holds {bad} rows: pass ds.split('train')")
        if self.method not in RETRIEVERS:
            raise ValueError(f"retriever {self.method!r} is not one of {RETRIEVERS}")
        if self.method == "minilm" and self.embed is None:
            raise ValueError("retriever 'minilm' needs an embed function (downstream.text.MiniLMEncoder().encode)")
        if not 1 <= self.k <= 16:
            raise ValueError(f"k={self.k}: retrieve between 1 and 16 examples")
        if len(self.train) < self.k + 1:
            raise ValueError(f"{self.source or 'the example set'} has {len(self.train)} training reports; "
                             f"knn:{self.k} needs at least {self.k + 1}")
        cols = ["label"] if self.schema.task == "single" else list(self.schema.ids)
        missing = [c for c in cols if c not in self.train]
        if missing:
            raise ValueError(f"{self.source or 'the example set'} has no reference labels for {missing} (schema "
                             f"{self.schema.name}): draw examples from a labelled training split of this schema")
        self.texts = self.train["text"].astype(str).tolist()
        self.answers = [prompts.answer_json(self.schema, r) for r in self.train.to_dict("records")]
        self._norms = [_norm(t) for t in self.texts]
        self._norm_set = set(self._norms)
        if self.method == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
            self._matrix = self._vec.fit_transform([_content(t) for t in self.texts])
        else:
            self._matrix = self._vectors(self.texts)

    def _vectors(self, texts: Sequence[str]):
        content = [_content(t) for t in texts]
        if self.method == "tfidf":
            return self._vec.transform(content)
        v = np.asarray(self.embed(content), dtype=np.float64)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # cosine, whatever embed returns

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text to each training report (rows: texts)."""
        sim = self._vectors(texts) @ self._matrix.T
        return np.asarray(sim.todense() if hasattr(sim, "todense") else sim, dtype=np.float64)

    def neighbours(self, texts: Sequence[str]) -> list[list[int]]:
        """Per text, the indices of its k most similar training reports, least similar first (ties: lower
        index first among equals, deterministic); a training report with the same text is skipped."""
        sims = self.similarities(texts)
        out = []
        for text, row in zip(texts, sims):
            order = np.lexsort((np.arange(len(row)), -row))  # most similar first, stable on ties
            me = _norm(text)
            picked = [int(i) for i in order if self._norms[i] != me][: self.k]
            self.self_matches += int(me in self._norm_set)
            out.append(picked[::-1])
        return out

    def __call__(self, text: str) -> list[tuple[str, dict]]:
        return [(self.texts[i], self.answers[i]) for i in self.neighbours([text])[0]]

    def examples_for(self, texts: Sequence[str]) -> list[list[tuple[str, dict]]]:
        """Few-shot pairs for many reports at once (one vectorisation)."""
        return [[(self.texts[i], self.answers[i]) for i in idx] for idx in self.neighbours(texts)]

    def describe(self) -> dict:
        return {"shots": f"knn:{self.k}", "retriever": self.method, "examples_from": self.source,
                "candidates": len(self.texts), "self_matches_skipped": self.self_matches}


def examples_for_design(shots: str | Shots, train: pd.DataFrame, schema: Schema, retriever: str = "tfidf",
                        embed: Callable | None = None, seed: int = 0, source: str = ""):
    """What ``engine.label_frame(few_shot=...)`` takes for ``shots``: None, a fixed list, or a retriever."""
    s = parse_shots(shots)
    if s.kind == "zero":
        return None
    if s.kind == "fixed":
        return prompts.few_shot_examples(train, schema, seed=seed)
    return ExampleRetriever(train, schema, k=s.k, method=retriever, embed=embed, source=source)
