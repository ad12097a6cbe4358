"""Instructions, answer JSON schemas and few-shot examples built from a label ``Schema``.

Template mode (the papers' method): the model writes one JSON object per report.
- single-label schemas: ``{"category": "<id>"}`` with the ids as an enum;
- multi-label schemas: ``{"<finding id>": "true" | "false" | "uncertain", ...}`` over all findings,
  in schema order. Mapping to states: true -> present, uncertain -> uncertain, false -> absent. The
  template (like the published one) does not separate "absent" from "not mentioned": both are false.

Scoring mode: the same instructions, then one short question per finding (or one for the category);
the answer is read from the next-token log-probabilities of the option words. Multi-label schemas on
the in-process llama.cpp backend ask each finding as the start of the assistant's answer instead
(``answer_prefix``: "<label>:" then " present" / " absent" / " uncertain"), a few tokens per finding
on the shared report state; servers get the question as a chat turn (``question``).

Rules (issue text of Study 2): true only when stated without hedging; uncertain for hedges
("possible", "cannot be excluded", "equivocal", "versus", ...: ``HEDGES``); false when negated or not
mentioned; a true or uncertain sub-finding makes its parent true or uncertain (enforced again in code
after parsing); findings of other anatomic regions are ignored.
"""

from __future__ import annotations

import random

import pandas as pd

from radpriv.schemas import Schema, State

TEMPLATE_VALUES = {"true": State.PRESENT, "uncertain": State.UNCERTAIN, "false": State.ABSENT}
SCORING_OPTIONS = ("present", "absent", "uncertain")
CATEGORY_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: hedge cues named in the multi-label instructions: the uncertainty triggers of the rule baseline's ConText
#: rules (baselines/rules/context.yaml, after NegEx, medspaCy and the CheXpert labeler) in plain words
HEDGES = ("possible, probable, likely, most likely, suspected, suspicious for, questionable, equivocal, "
          "borderline, suggestive of, suggestion of, may represent, could be, cannot be excluded, cannot be "
          "ruled out, not excluded, concerning for, presumed, query, A versus B, differential diagnosis")


def answer_schema(schema: Schema) -> dict:
    """The JSON schema every template-mode answer must satisfy."""
    if schema.task == "single":
        return {"type": "object", "properties": {"category": {"type": "string", "enum": list(schema.ids)}},
                "required": ["category"], "additionalProperties": False}
    props = {fid: {"type": "string", "enum": list(TEMPLATE_VALUES)} for fid in schema.ids}
    return {"type": "object", "properties": props, "required": list(schema.ids), "additionalProperties": False}


def _finding_lines(schema: Schema) -> str:
    lines = []
    for f in schema.findings:
        parent = f" (sub-finding of {f.parent})" if f.parent else ""
        desc = f": {f.description}" if f.description else ""
        lines.append(f"- {f.id} ({f.label}){parent}{desc}")
    return "\n".join(lines)


def instructions(schema: Schema, mode: str = "template") -> str:
    """The system prompt: the task, the label definitions and the rules. Shared by every report.

    The reader's role and the task come from the schema (``role:``, ``instruction:``); a schema without
    them gets neutral wording built from its title (CMR wording lives only in the CMR schema)."""
    if schema.task == "single":
        cats = "\n".join(f"{CATEGORY_LETTERS[i]}) {f.id}: {f.label} - {f.description}"
                         for i, f in enumerate(schema.findings))
        role = schema.role or f"a physician reading {schema.title} reports"
        task = schema.instruction or "Classify each report into exactly one of these categories"
        head = f"You are {role}. {task}:\n" + cats + "\n"
        if mode == "template":
            return head + 'Answer only with JSON: {"category": "<category id>"}.'
        return head + "When asked for the category, answer with its letter only."
    role = schema.role or f"a radiologist extracting labels from {schema.title} reports"
    task = schema.instruction or "For each finding below decide whether the report states it"
    head = (f"You are {role}. {task}.\n" + _finding_lines(schema) + "\n"
            "Rules: 'true' only when the finding is stated without hedging; 'uncertain' when it is hedged "
            f"({HEDGES}); 'false' when it is negated or not mentioned. If a sub-finding is true or uncertain, "
            "its parent is too. Ignore findings of other anatomic regions than the one examined.\n")
    if mode == "template":
        return head + "Answer only with a JSON object mapping every finding id to true, false or uncertain."
    return head + ("When asked about one finding, answer with one word: present (stated without hedging), "
                   "absent (negated or not mentioned) or uncertain (hedged).")


def question(schema: Schema, finding_id: str | None = None) -> str:
    """A scoring-mode question (one per finding, or the category question)."""
    if schema.task == "single":
        return "Primary diagnostic category (letter only)?"
    f = schema.finding(finding_id)
    return f"{f.label}: present, absent or uncertain?"


def answer_prefix(schema: Schema, finding_id: str) -> str:
    """Scoring mode on backends that can continue the assistant's turn (llama.cpp in process): the
    finding is cued as the start of the answer (``"Cardiomegaly:"``) and the option word is read as
    the next token. A few tokens per finding instead of a whole chat turn with a question."""
    return f"{schema.finding(finding_id).label}:"


def scoring_example_answer(schema: Schema, answer: dict) -> str:
    """A few-shot example's answer in scoring mode (multi-label): one line per finding in the words that
    scoring reads after each finding's :func:`answer_prefix` ("Fracture: absent")."""
    word = {"true": "present", "false": "absent", "uncertain": "uncertain"}
    return "\n".join(f"{answer_prefix(schema, fid)} {word[answer[fid]]}" for fid in schema.ids)


def options(schema: Schema) -> list[str]:
    if schema.task == "single":
        return list(CATEGORY_LETTERS[: len(schema.ids)])
    return list(SCORING_OPTIONS)


def option_orders(n: int, k: int) -> list[list[int]]:
    """``k`` orders of ``n`` options for order-averaged scoring: the schema's own order, its reverse, then the
    strides ``i -> i*s mod n`` for each ``s`` coprime with ``n`` (2 < s < n-1), each a different permutation.
    Refused (one line) when ``n`` options do not have ``k`` such orders."""
    from math import gcd

    orders = [list(range(n)), list(range(n))[::-1]]
    orders += [[(i * s) % n for i in range(n)] for s in range(3, n - 1) if gcd(s, n) == 1]
    distinct = [o for i, o in enumerate(orders) if o not in orders[:i]]
    if not 1 <= k <= len(distinct):
        raise ValueError(f"orders={k}: {n} categories have 1 to {len(distinct)} option orders here")
    return distinct[:k]


def user_message(report_text: str) -> str:
    return f"Report:\n{report_text.strip()}"


def answer_json(schema: Schema, labels: dict) -> dict:
    """The JSON answer a perfect model would give for reference labels (used for few-shot examples)."""
    if schema.task == "single":
        return {"category": labels["label"]}
    inv = {State.PRESENT: "true", State.UNCERTAIN: "uncertain", State.ABSENT: "false", State.NOT_MENTIONED: "false"}
    return {fid: inv[State.parse(labels[fid])] for fid in schema.ids}


def parse_answer(schema: Schema, obj: dict) -> dict:
    """JSON answer -> {"label": id} or {finding id: State value}, parents propagated. Raises ValueError."""
    if not isinstance(obj, dict):
        raise ValueError(f"answer is not a JSON object: {obj!r}")
    if schema.task == "single":
        cat = obj.get("category")
        if cat not in schema.ids:
            raise ValueError(f"category {cat!r} is not one of {schema.ids}")
        return {"label": cat}
    missing = [f for f in schema.ids if f not in obj]
    if missing:
        raise ValueError(f"answer lacks finding(s) {missing}")
    states = {}
    for fid in schema.ids:
        v = str(obj[fid]).strip().lower()
        if v not in TEMPLATE_VALUES:
            raise ValueError(f"finding {fid}: value {obj[fid]!r} is not true/false/uncertain")
        states[fid] = TEMPLATE_VALUES[v]
    return {k: v.value for k, v in schema.propagate(states).items()}


def template_probs(schema: Schema, field_probs: dict) -> dict:
    """A template answer's per-field value probabilities (jump-forward decoding) in scoring mode's columns:
    ``p__<category>`` (single-label) or ``p_<present|absent|uncertain>__<finding>``."""
    if schema.task == "single":
        return {f"p__{c}": float(p) for c, p in field_probs.get("category", {}).items()}
    word = {"true": "present", "false": "absent", "uncertain": "uncertain"}
    return {f"p_{word[v]}__{fid}": float(p) for fid, vals in field_probs.items() if fid in schema.ids
            for v, p in vals.items() if v in word}


def few_shot_examples(train: pd.DataFrame, schema: Schema, seed: int = 0, per_class: int = 1,
                      max_examples: int = 4) -> list[tuple[str, dict]]:
    """Example (report text, JSON answer) pairs drawn from the TRAINING split only.

    Single-label: ``per_class`` report(s) per category. Multi-label: up to ``max_examples`` reports
    chosen to cover present and uncertain findings. Pass the training frame only; rows from other
    splits are refused so evaluation reports never leak into prompts.
    """
    if "split" in train and (train["split"] != "train").any():
        raise ValueError("few-shot examples must come from the training split only; pass ds.split('train')")
    rng = random.Random(f"few-shot/{schema.name}/{seed}")
    rows = train.to_dict("records")
    if schema.task == "single":
        out = []
        for cat in schema.ids:
            pool = [r for r in rows if r["label"] == cat]
            for r in rng.sample(pool, min(per_class, len(pool))):
                out.append((r["text"], answer_json(schema, r)))
        return out
    rng.shuffle(rows)
    rows.sort(key=lambda r: -sum(str(r[f]) in ("present", "uncertain") for f in schema.ids))
    picked = [r for r in rows if any(str(r[f]) == "uncertain" for f in schema.ids)][:1]
    picked += [r for r in rows if r not in picked][: max_examples - len(picked)]
    return [(r["text"], answer_json(schema, r)) for r in picked]
