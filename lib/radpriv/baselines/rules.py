"""Rule-based (NegEx / ConText-style) labeler: the non-LLM comparator in every study.

Rules are data: ``rules/context.yaml`` holds the shared triggers (pseudo, uncertainty, negation,
clause-opening negation, termination) and their precedence; ``rules/<schema>.yaml`` holds mention
patterns per finding (and, for the single-label CMR schema, weighted evidence per category: a hedged
match counts half, a negated one nothing). Add a schema's rules by adding a YAML file; no code changes.

The bundled rules were written from the synthetic generator's *development* phrase bank, a radiologist's
vocabulary and real public reports (CT-RATE for ``ctrate18``), never from its *held-out* bank -- the bank
the embedded corpora's validation and test reports are written from (:mod:`radpriv.data.synthetic`), so
rule-baseline scores there measure generalisation to unseen wording.

Your own rules: a YAML file anywhere on disk (name it in a manifest's ``rules:`` key, a notebook's
``rules`` parameter or ``radpriv label --model rules --rules FILE``), for example::

    # rules for my schema `my_cxr` (findings: effusion, pneumothorax)
    exclude_sentences: ['\\bhistory of\\b']   # optional: sentences to ignore
    findings:                              # finding id -> regular expressions (case-insensitive)
      effusion: ['effusions?', 'fluid in the (left|right)? ?pleural space']   # quote ? [ ] { } :
      pneumothorax: [pneumothorax, '\\bptx\\b']

Negation ("no effusion"), uncertainty ("possible pneumothorax") and termination come from the shared
``context.yaml`` (or a ``context:`` key naming your own file). A schema without rules gets no rule
baseline: :func:`rule_baseline` returns None and the reports say "no rules for this schema".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml
from radpriv.progress import tqdm

from radpriv import paths
from radpriv.schemas import STATE_PRECEDENCE, Schema, State, load_schema

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_TOKEN = re.compile(r"\S+")


_EVIDENCE_FACTOR = {State.PRESENT: 1.0, State.UNCERTAIN: 0.5, State.ABSENT: 0.0, State.NOT_MENTIONED: 0.0}


class RuleError(ValueError):
    pass


def _load_yaml(path: Path) -> dict:
    if not path.exists():
        raise RuleError(f"{path}: no rules file; add one with a `findings:` mapping of finding id -> patterns")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise RuleError(f"{path}: must be a mapping")
    return doc


def _compile(patterns, where: str) -> re.Pattern:
    if not isinstance(patterns, list) or not patterns:
        raise RuleError(f"{where}: expected a non-empty list of patterns")
    try:
        return re.compile("|".join(rf"(?:\b{p}\b)" if re.match(r"\w", str(p)) else f"(?:{p})" for p in patterns),
                          re.IGNORECASE)
    except re.error as exc:
        raise RuleError(f"{where}: invalid regular expression ({exc})") from None


@lru_cache(maxsize=None)
def _context(rules_dir: str, name: str = "context.yaml") -> dict:
    path = Path(rules_dir) / name
    doc = _load_yaml(path)
    out = {"window": int(doc.get("window", 8))}
    for key in ("pseudo", "uncertainty_pre", "uncertainty_post", "negation_pre", "negation_post", "termination"):
        if key not in doc:
            raise RuleError(f"{path}: missing key {key!r}")
        out[key] = _compile(doc[key], f"{path}: key {key!r}")
    # optional: triggers that negate the whole clause they open ("No A, B or C was detected ...")
    clause = doc.get("clause_negation")
    out["clause_negation"] = (re.compile(r"^[\W_]*(?:" + _compile(clause, f"{path}: key 'clause_negation'").pattern + ")",
                                         re.IGNORECASE) if clause else None)
    return out


@dataclass
class Mention:
    finding: str
    sentence: str
    span: tuple[int, int]
    state: State
    trigger: str = ""


class RuleLabeler:
    """NegEx/ConText-style labeler for any schema with a rules file."""

    def __init__(self, schema: str | Schema, rules_dir: str | Path | None = None, rules: str | Path | None = None):
        self.schema = schema if isinstance(schema, Schema) else load_schema(schema)
        self.rules_dir = Path(rules_dir or paths.RULES)
        path = Path(rules).expanduser() if rules else self.rules_dir / f"{self.schema.name}.yaml"
        if rules and not path.exists():
            raise RuleError(f"{path}: rules file not found; check the path (see radpriv.baselines.rules for the format)")
        doc = _load_yaml(path)
        if doc.get("context"):
            ctx_path = Path(doc["context"]).expanduser()
            ctx_path = ctx_path if ctx_path.is_absolute() else path.parent / ctx_path
            self.ctx = _context(str(ctx_path.parent), ctx_path.name)
        else:
            self.ctx = _context(str(self.rules_dir))
        self.path = path
        self.exclude = _compile(doc["exclude_sentences"], f"{path}: key 'exclude_sentences'") if doc.get("exclude_sentences") else None
        if self.schema.task == "single":
            self._init_single(doc, path)
            return
        findings = doc.get("findings")
        if not isinstance(findings, dict):
            raise RuleError(f"{path}: missing key 'findings' (finding id -> list of patterns)")
        self.derived = dict(doc.get("derived") or {})
        unknown = [k for k in findings if k not in self.schema.ids]
        if unknown:
            raise RuleError(f"{path}, field 'findings': {', '.join(map(repr, unknown))} "
                            f"{'is not a finding' if len(unknown) == 1 else 'are not findings'} of schema "
                            f"{self.schema.name}; use its ids ({', '.join(self.schema.ids)})")
        missing = [f for f in self.schema.ids if f not in findings and f not in self.derived]
        if missing:
            raise RuleError(f"{path}: no patterns for finding(s) {missing}")
        self.patterns = {fid: _compile(p, f"{path}: key 'findings.{fid}'") for fid, p in findings.items()}

    # ---- multi-label ---------------------------------------------------------------------
    def _state_of(self, sentence: str, start: int, end: int) -> tuple[State, str]:
        low = sentence
        # 1. mask pseudo triggers
        for m in self.ctx["pseudo"].finditer(low):
            low = low[: m.start()] + " " * (m.end() - m.start()) + low[m.end():]
        before, after = low[:start], low[end:]
        # scope: cut at the last termination before / first termination after
        terms_before = list(self.ctx["termination"].finditer(before))
        if terms_before:
            before = before[terms_before[-1].end():]
        term_after = self.ctx["termination"].search(after)
        if term_after:
            after = after[: term_after.start()]
        clause = self.ctx["clause_negation"].match(before) if self.ctx.get("clause_negation") else None
        w = self.ctx["window"]
        before = " ".join(_TOKEN.findall(before)[-w:])
        after = " ".join(_TOKEN.findall(after)[:w])
        # 2. uncertainty wins over negation in the same scope
        for key in ("uncertainty_post",):
            m = self.ctx[key].search(after)
            if m:
                return State.UNCERTAIN, m.group(0)
        m = self.ctx["uncertainty_pre"].search(before)
        if m:
            return State.UNCERTAIN, m.group(0)
        # 3. negation
        m = self.ctx["negation_pre"].search(before) or self.ctx["negation_post"].search(after) or clause
        if m:
            return State.ABSENT, m.group(0).strip()
        return State.PRESENT, ""

    def _sentences(self, text: str) -> list[str]:
        out = []
        for s in _SENT_SPLIT.split(text):
            s = s.strip()
            if not s or (self.exclude and self.exclude.search(s)):
                continue
            out.append(s)
        return out

    def mentions(self, text: str) -> list[Mention]:
        out = []
        for sent in self._sentences(text):
            for fid, pat in self.patterns.items():
                for m in pat.finditer(sent):
                    state, trig = self._state_of(sent, m.start(), m.end())
                    out.append(Mention(fid, sent, (m.start(), m.end()), state, trig))
        return out

    def label(self, text: str) -> dict[str, State]:
        if self.schema.task == "single":
            raise RuleError(f"schema {self.schema.name} is single-label: use classify()")
        best = {fid: State.NOT_MENTIONED for fid in self.schema.ids}
        for men in self.mentions(text):
            if STATE_PRECEDENCE[men.state] > STATE_PRECEDENCE[best[men.finding]]:
                best[men.finding] = men.state
        out = self.schema.propagate(best)
        if self.derived.get("no_finding"):
            abnormal = any(out[f] in (State.PRESENT, State.UNCERTAIN) for f in self.schema.ids
                           if f not in ("no_finding", "support_devices"))
            out["no_finding"] = State.ABSENT if abnormal else State.PRESENT
        return out

    def explain(self, text: str) -> list[dict]:
        """Matched spans with their state and trigger (debugging aid)."""
        if self.schema.task == "single":
            return [{"category": c, "score": s} for c, s in self.scores(text).items()]
        return [{"finding": m.finding, "match": m.sentence[m.span[0]:m.span[1]], "state": m.state.value,
                 "trigger": m.trigger, "sentence": m.sentence} for m in self.mentions(text)]

    # ---- single-label (CMR) -------------------------------------------------------------
    def _init_single(self, doc: dict, path: Path) -> None:
        ev = doc.get("evidence")
        if not isinstance(ev, dict):
            raise RuleError(f"{path}: missing key 'evidence' (category -> list of {{pattern, weight}})")
        bad = [k for k in ev if k not in self.schema.ids]
        if bad:
            raise RuleError(f"{path}: key(s) {bad} are not categories of schema {self.schema.name}")
        self.evidence = {}
        for cat, items in ev.items():
            self.evidence[cat] = [(re.compile(it["pattern"], re.IGNORECASE), float(it.get("weight", 1))) for it in items]
        self.order = list(doc.get("order") or self.schema.ids)
        self.default = doc.get("default", self.schema.ids[0])
        self.numeric = list(doc.get("numeric") or [])

    # measurements read by the numeric rules (the first match in the report; common spellings of each)
    _NUM = {"lvef": re.compile(r"(?:LVEF|LV[ -]?EF|\bLV\b[^.]{0,80}?ejection fraction|left ventricular ejection fraction)"
                               r"\s*(?:of|was|is|=|:)?\s*(\d+)", re.I),
            "wall": re.compile(r"wall thickness\s*(?:of|was|is|=|:|up to)?\s*(\d+)", re.I),
            "t1": re.compile(r"native (?:myocardial )?T1(?: values?)?\s*(?:of|was|is|=|:)?\s*(\d+)", re.I)}

    def scores(self, text: str) -> dict[str, float]:
        score = {c: 0.0 for c in self.schema.ids}
        for sent in self._sentences(text):
            for cat, items in self.evidence.items():
                for pat, w in items:
                    m = pat.search(sent)
                    if m:  # a hedged statement ("suggestive of sarcoidosis") still counts, at half weight
                        score[cat] += w * _EVIDENCE_FACTOR[self._state_of(sent, m.start(), m.end())[0]]
        for rule in self.numeric:
            m = self._NUM[rule["field"]].search(text)
            if not m:
                continue
            v = float(m.group(1))
            if ("below" in rule and v < rule["below"]) or ("atleast" in rule and v >= rule["atleast"]):
                score[rule["category"]] += float(rule["weight"])
        return score

    def classify(self, text: str) -> str:
        if self.schema.task != "single":
            raise RuleError(f"schema {self.schema.name} is multi-label: use label()")
        s = self.scores(text)
        top = max(s.values())
        if top <= 0:
            return self.default
        return next(c for c in self.order if s[c] == top)

    # ---- frames -------------------------------------------------------------------------
    def label_frame(self, frame: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
        """Label every row of a dataset frame; returns report_id + a State column per finding (or `label`)."""
        rows = []
        for rid, text in tqdm(zip(frame["report_id"], frame["text"]), total=len(frame), disable=not progress,
                              desc=f"rules:{self.schema.name}"):
            if self.schema.task == "single":
                rows.append({"report_id": rid, "label": self.classify(text)})
            else:
                rows.append({"report_id": rid, **{k: v.value for k, v in self.label(text).items()}})
        return pd.DataFrame(rows)


def has_rules(schema: str | Schema, rules: str | Path | None = None) -> bool:
    """True when a rules file exists for this schema (the user's ``rules``, or the bundled one)."""
    name = schema.name if isinstance(schema, Schema) else str(schema)
    return bool(rules) or (Path(paths.RULES) / f"{name}.yaml").exists()


def rule_baseline(schema: str | Schema, rules: str | Path | None = None) -> RuleLabeler | None:
    """The rule labeler for ``schema`` (from the user's ``rules`` file when given), or None when the
    schema has no rules: every study then runs without the rule-baseline row and says so."""
    if not has_rules(schema, rules):
        return None
    return RuleLabeler(schema, rules=rules)


NO_RULES = "no rules for this schema"
