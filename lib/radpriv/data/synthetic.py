"""Synthetic radiology report corpora: the embedded default of every study.

Each corpus is generated deterministically from a seed with :class:`random.Random` only (no numpy
RNG, no ``hash()``, no set iteration), so the CSV bytes -- and the sha256 pinned in the manifests --
are identical on every machine. Ground truth is exact by construction: it is sampled first, and each
finding's sentence is then written from a present / negation / hedge template around one of several
phrasings of that finding, so a negated finding always carries a negation cue and an uncertain one a
hedge.

Phrase banks (the rule baseline is not scored on its own phrases): every phrasing the generator draws
from -- sentence templates, negation and hedge constructions, descriptive noun phrases and synonyms of
each finding, normal-anatomy sentences, distractors, indications, impressions, the CMR wording -- lives
in exactly one of two banks, ``phrases/development/`` and ``phrases/heldout/``. The bundled rules
(``radpriv/baselines/rules``) were written from the development bank (and real public reports), never
from the held-out bank. Ground truth and splits are drawn first; then every **train** report is written
from the development bank and every **validation** and **test** report from the held-out bank
(:func:`phrase_bank_of`, column ``phrase_bank``, :data:`PHRASE_BANKS_NOTE`). Only the canonical name of
a finding (``pneumothorax``, ``pleural effusion``: a term listed in both banks, see
:func:`shared_phrases`) occurs on both sides.

Corpora (``CORPORA``): ``cmr`` (single-label CMR category + a simulated human reader), ``clavicle``,
``elbow``, ``thumb`` (upper-extremity templates with hedges and distractors from other regions),
``cxr`` (CheXpert 14, FINDINGS/IMPRESSION), ``ct`` (CT-RATE 18, long reports).

Columns: ``report_id, split, text`` then one State column per finding (``label`` for ``cmr``, with
``reader``), then ``region`` (upper extremity), ``canary`` and ``phrase_bank``.

Canaries (memorization audit): with ``canaries=True`` the train split carries secret record numbers
``"Internal record number NNNN-NNNN."``; canary *j* of :data:`CANARY_REPEATS` is inserted into
``k_j`` distinct training reports (k = 1, 1, 4, 4, 16, 16). Every other row has ``canary=""``.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from radpriv.data.splits import assign_splits
from radpriv.schemas import STATE_PRECEDENCE, Schema, State, load_schema

PHRASES = Path(__file__).resolve().parent / "phrases"

#: Bumped whenever the generated text changes (the manifests' file names and sha256 pins carry it).
GENERATOR_VERSION = 2

CORPORA: dict[str, dict] = {
    "cmr": {"schema": "cmr", "n": 300, "description": "cardiac MRI reports, one primary diagnostic category each"},
    "clavicle": {"schema": "clavicle", "n": 300, "description": "clavicle radiograph reports (26-finding template)"},
    "elbow": {"schema": "elbow", "n": 300, "description": "elbow radiograph reports (29-finding template)"},
    "thumb": {"schema": "thumb", "n": 300, "description": "thumb radiograph reports (25-finding template)"},
    "cxr": {"schema": "chexpert14", "n": 600, "description": "chest radiograph reports (CheXpert 14)"},
    "ct": {"schema": "ctrate18", "n": 600, "description": "chest CT reports (CT-RATE 18), ~1,500-2,000 characters"},
}
#: How many training reports carry each canary (one entry per canary).
CANARY_REPEATS = (1, 1, 4, 4, 16, 16)
CANARY_TEMPLATE = "Internal record number {secret}."

#: The two phrase banks (directories under ``phrases/``).
PHRASE_BANKS = ("development", "heldout")
#: Which bank each split is written from.
SPLIT_BANK = {"train": "development", "validation": "heldout", "test": "heldout"}
#: One sentence a report can cite about the embedded corpora's wording.
PHRASE_BANKS_NOTE = (
    "Synthetic reports are written from two disjoint phrase banks: train-split reports from the development "
    "bank the rule baseline was written from, validation- and test-split reports from a held-out bank of "
    "phrasings (templates, negation and hedge constructions, synonyms, normal-anatomy sentences) the rules "
    "never saw; only canonical finding names are shared. Rule-baseline scores on validation/test reports "
    "therefore measure generalisation to unseen wording, not recall of the generator's own phrases.")

# probabilities of the sampled state of a finding: (present, uncertain, absent); the rest is not mentioned
STATE_PROBS = {
    "clavicle": (0.10, 0.06, 0.12), "elbow": (0.09, 0.06, 0.12), "thumb": (0.10, 0.06, 0.12),
    "cxr": (0.16, 0.08, 0.18), "ct": (0.20, 0.06, 0.14),
}
_UPPER_EXTREMITY = ("clavicle", "elbow", "thumb")


def phrase_bank_of(split: str) -> str:
    """The phrase bank a split's reports are written from: ``development`` for train, ``heldout`` otherwise."""
    try:
        return SPLIT_BANK[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_BANK)}") from None


def phrase_bank_statement(frame, note: bool = True) -> str:
    """What a rule-baseline score on ``frame`` measures, for a report: which phrase banks its reports were
    written from (column ``phrase_bank``), then (``note``) :data:`PHRASE_BANKS_NOTE`. ``""`` for reports this generator did
    not write (a user's own data has no ``phrase_bank`` column), so nothing false is said about them."""
    if "phrase_bank" not in frame or not len(frame):
        return ""
    counts = frame["phrase_bank"].fillna("").value_counts()
    shown = ", ".join(f"{n} from the {b or 'unrecorded'} bank" for b, n in counts.items())
    return f"Phrase banks of the {len(frame)} reports scored here: {shown}." + (f" {PHRASE_BANKS_NOTE}" if note else "")


@dataclass
class Case:
    """One generated report with its exact ground truth and the sentence behind each finding."""

    text: str
    labels: dict[str, str]  # finding id -> State value (multilabel) or {"label": category}
    evidence: dict[str, tuple[str, str]] = field(default_factory=dict)  # finding -> (sampled state, sentence)
    reader: str = ""
    region: str = ""
    split: str = ""
    bank: str = ""
    phrasings: list[str] = field(default_factory=list)  # every bank entry (template or phrase) the text used


# ---------------------------------------------------------------------------------------------
# phrase banks
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _yaml(relpath: str) -> dict:
    path = PHRASES / relpath
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def _phrases(name: str) -> dict:
    """``phrases/<name>.yaml`` (shared, bank-independent data such as the names in report headers)."""
    return _yaml(f"{name}.yaml")


_TEMPLATE_KINDS = ("present", "absent", "absent_list", "uncertain")


def _expand_group(group: dict, key_name: str, names: list[str]) -> dict[str, list[str]]:
    return {kind: [t.replace("{" + key_name + "}", n) for t in group.get(kind, []) for n in names]
            for kind in ("terms", "present", "uncertain")}


@lru_cache(maxsize=None)
def phrase_bank(corpus: str, bank: str) -> dict:
    """The resolved phrase bank of one corpus: ``templates`` (present / absent / absent_list / uncertain),
    ``findings`` (finding id -> ``terms`` for negated and hedged mentions, ``present`` descriptions,
    optional ``uncertain`` phrasings and whole ``absent`` sentences) and the corpus's other sentence lists
    (fillers, normals, distractors, indications, impressions; or the CMR wording)."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    if bank not in PHRASE_BANKS:
        raise ValueError(f"unknown phrase bank {bank!r}; known: {', '.join(PHRASE_BANKS)}")
    common = _yaml(f"{bank}/templates.yaml")
    if corpus == "cmr":
        return {"cmr": _yaml(f"{bank}/cmr.yaml"), "templates": {}, "findings": {}}
    parts = ([_yaml(f"{bank}/upper_extremity.yaml")] if corpus in _UPPER_EXTREMITY else []) + [_yaml(f"{bank}/{corpus}.yaml")]
    schema = load_schema(CORPORA[corpus]["schema"])
    templates = {k: list(common.get(k, [])) for k in _TEMPLATE_KINDS}
    findings: dict[str, dict[str, list[str]]] = {}
    out: dict = {}
    site_t = {k: v for doc in parts for k, v in (doc.get("site_templates") or {}).items()}
    joint_t = {k: v for doc in parts for k, v in (doc.get("joint_templates") or {}).items()}
    for doc in parts:
        for k, v in (doc.get("templates") or {}).items():
            templates[k] += list(v)
        for fid, names in (doc.get("sites") or {}).items():  # fracture sites: phrases from site_templates
            findings[fid] = _expand_group(site_t, "site", names)
        for key, names in (doc.get("joints") or {}).items():  # <joint>_joint_<kind> from joint_templates
            for kind, group in joint_t.items():
                fid = f"{key}_joint_{kind}"
                if fid in schema.ids:
                    findings[fid] = _expand_group(group, "joint", names)
        for fid, spec in (doc.get("findings") or {}).items():
            if fid not in schema.ids:
                continue
            cur = findings.setdefault(fid, {"terms": [], "present": [], "uncertain": []})
            for kind, vals in spec.items():
                cur[kind] = list(cur.get(kind, [])) + list(vals)
        for k, v in doc.items():
            if k not in ("templates", "sites", "site_templates", "joints", "joint_templates", "findings"):
                out[k] = v
    missing = [f for f in schema.ids if f != "no_finding" and not (findings.get(f, {}).get("terms")
                                                                   and findings.get(f, {}).get("present"))]
    if missing:
        raise ValueError(f"phrase bank {bank}/{corpus}: no terms or present phrases for {missing}")
    out.update(templates=templates, findings=findings, list_last=common.get("list_last", " or "))
    return out


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def bank_phrases(corpus: str, bank: str) -> set[str]:
    """Every string of one corpus's bank: templates, finding phrasings and sentence lists."""
    b = phrase_bank(corpus, bank)
    return set(_strings({k: v for k, v in b.items() if k not in ("list_last", "absent_pairs")}))


def shared_phrases(corpus: str) -> set[str]:
    """Strings listed in both banks of a corpus: by design only canonical names -- a finding's name or
    anatomical site (``pneumothorax``, ``fracture of the radial head``), for CMR the coronary territories
    and scar depths -- never a template, descriptive phrase or sentence."""
    return bank_phrases(corpus, "development") & bank_phrases(corpus, "heldout")


def cues(bank: str) -> dict[str, list[str]]:
    """The negation and hedge cues the bank's absent and uncertain templates are built around."""
    t = _yaml(f"{bank}/templates.yaml")
    return {"negation": list(t.get("negation_cues", [])), "hedge": list(t.get("hedge_cues", []))}


# ---------------------------------------------------------------------------------------------
# sentences
# ---------------------------------------------------------------------------------------------
def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _strip_article(np_: str) -> str:
    for art in ("a ", "an ", "the "):
        if np_.startswith(art):
            return np_[len(art):]
    return np_


_PREP = re.compile(r" (?:of|in|at|with|through|along|involving|from|to|on|within|around|adjacent|reaching|"
                   r"extending|into|over|between|across|without|near|about|consistent|measuring|causing)\b")
_PLURAL_WORDS = {"septa", "sequelae", "bullae", "data", "leads", "changes", "calcifications", "nodes", "bodies"}
_SINGULAR_S = ("ss", "is", "us", "ous", "xis", "ics")


def _plural(np_: str) -> bool:
    head = _PREP.split(_strip_article(np_))[0].split()
    if not head:
        return False
    w = head[-1].lower().strip(",")
    return w in _PLURAL_WORDS or (w.endswith("s") and not w.endswith(_SINGULAR_S))


def _fill(template: str, phrase: str, plural: bool | None = None) -> str:
    plural = _plural(phrase) if plural is None else plural
    n = _strip_article(phrase)
    return template.format(a=phrase, n=n, N=_cap(n), be="are" if plural else "is",
                           was="were" if plural else "was", have="have" if plural else "has")


def _join(items: list[str], last: str) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + last + items[-1]


class _Writer:
    """Writes finding sentences from one bank, recording every bank entry it used."""

    def __init__(self, rng: random.Random, bank: dict):
        self.rng, self.bank, self.used = rng, bank, []

    def pick(self, options: list[str]) -> str:
        choice = self.rng.choice(options)
        self.used.append(choice)
        return choice

    def pick_group(self, groups: list[list[str]]) -> list[str]:
        group = self.rng.choice(groups)
        self.used += group
        return group

    def sample(self, options: list[str], k: int) -> list[str]:
        chosen = self.rng.sample(options, k)
        self.used += chosen
        return chosen

    def present(self, fid: str) -> str:
        return _fill(self.pick(self.bank["templates"]["present"]), self.pick(self.bank["findings"][fid]["present"]))

    def uncertain(self, fid: str) -> str:
        f = self.bank["findings"][fid]
        return _fill(self.pick(self.bank["templates"]["uncertain"]), self.pick(f.get("uncertain") or f["terms"]))

    def absent(self, fids: list[str]) -> str:
        t = self.bank["templates"]
        if len(fids) == 1:
            f = self.bank["findings"][fids[0]]
            if f.get("absent") and self.rng.random() < 0.4:
                return self.pick(f["absent"])
            return _fill(self.pick(t["absent"]), self.pick(f["terms"]))
        terms = [_strip_article(self.pick(self.bank["findings"][fid]["terms"])) for fid in fids]
        return _fill(self.pick(t["absent_list"]), _join(terms, self.bank.get("list_last", " or ")), plural=False)


def _finding_sentences(w: _Writer, schema: Schema, sampled: dict[str, State], skip: tuple[str, ...] = ()
                       ) -> tuple[dict[str, State], dict[str, tuple[str, str]], list[str]]:
    """Sentences for the sampled states (in report order); a parent whose sub-findings are positive gets no
    own sentence (its label comes from propagation), so text and truth never contradict each other.
    Negated findings are often listed together ("No fracture or dislocation.")."""
    sampled = _effective(schema, sampled)
    truth = schema.propagate({k: v for k, v in sampled.items() if k not in skip})
    evidence: dict[str, tuple[str, str]] = {}
    order, negated = [], []
    for f in schema.findings:
        if f.id in skip:
            continue
        s = sampled[f.id]
        if s is State.NOT_MENTIONED:
            continue
        if s is State.ABSENT:
            negated.append(f.id)
            continue
        sent = w.present(f.id) if s is State.PRESENT else w.uncertain(f.id)
        evidence[f.id] = (s.value, sent)
        order.append(sent)
    w.rng.shuffle(negated)
    for pair in w.bank.get("absent_pairs", []):  # findings a report negates together ("No fracture or dislocation.")
        if all(fid in negated for fid in pair):
            sent = w.absent(list(pair))
            for fid in pair:
                negated.remove(fid)
                evidence[fid] = ("absent", sent)
            order.append(sent)
    while negated:
        k = min(len(negated), w.rng.choice((1, 1, 2, 2, 3)))
        group, negated = negated[:k], negated[k:]
        sent = w.absent(group)
        for fid in group:
            evidence[fid] = ("absent", sent)
        order.append(sent)
    return truth, evidence, order


def _effective(schema: Schema, sampled: dict[str, State]) -> dict[str, State]:
    """The sampled states with every parent of a positive (present/uncertain) sub-finding unmentioned: such a
    parent gets no sentence of its own, so its truth comes from its sub-findings by propagation only."""
    out = dict(sampled)
    for f in schema.findings:
        if any(STATE_PRECEDENCE[sampled[c]] >= STATE_PRECEDENCE[State.UNCERTAIN] for c in _descendants(schema, f.id)):
            out[f.id] = State.NOT_MENTIONED
    return out


def _descendants(schema: Schema, fid: str) -> list[str]:
    out, todo = [], list(schema.children(fid))
    while todo:
        c = todo.pop()
        out.append(c)
        todo += schema.children(c)
    return out


def _identity(rng: random.Random) -> dict:
    common = _phrases("common")
    year = rng.randint(2015, 2025)
    return {
        "name": f"{rng.choice(common['first_names'])} {rng.choice(common['last_names'])}",
        "dob": f"{rng.randint(1935, 2010)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "mrn": f"{rng.randint(10_000_000, 99_999_999)}",
        "acc": f"ACC{year}{rng.randint(100_000, 999_999)}",
    }


def _header(rng: random.Random, title: str) -> str:
    i = _identity(rng)
    return (f"{title}\nPatient: {i['name']}  DOB: {i['dob']}  MRN: {i['mrn']}\n"
            f"Exam date: {i['date']}  Accession: {i['acc']}\n")


def _sample_states(rng: random.Random, schema: Schema, probs: tuple[float, float, float]) -> dict[str, State]:
    p_present, p_unc, p_abs = probs
    out = {}
    for f in schema.findings:
        u = rng.random()
        out[f.id] = (State.PRESENT if u < p_present else State.UNCERTAIN if u < p_present + p_unc
                     else State.ABSENT if u < p_present + p_unc + p_abs else State.NOT_MENTIONED)
    return out


def _impression(w: _Writer, evidence: dict[str, tuple[str, str]], normal_key: str) -> str:
    positives = list(dict.fromkeys(sent for s, sent in evidence.values() if s in ("present", "uncertain")))
    return " ".join(positives) if positives else w.pick(w.bank[normal_key])


# ---------------------------------------------------------------------------------------------
# upper extremity
# ---------------------------------------------------------------------------------------------
_UE_TITLES = {"clavicle": "RADIOGRAPH CLAVICLE, 2 VIEWS", "elbow": "RADIOGRAPH ELBOW, AP AND LATERAL",
              "thumb": "RADIOGRAPH THUMB, 2 VIEWS"}


def _upper_extremity_text(w: _Writer, corpus: str, schema: Schema, sampled: dict[str, State]) -> Case:
    b = w.bank
    truth, evidence, sentences = _finding_sentences(w, schema, sampled)
    sentences += w.sample(b["normals"], w.rng.randint(0, 2))
    if w.rng.random() < 0.3:
        sentences.append(w.pick(b["distractors"]))
    w.rng.shuffle(sentences)
    text = (_header(w.rng, _UE_TITLES[corpus]) + f"Indication: {w.pick(b['indications'])}.\n"
            + "Findings: " + " ".join(sentences) + f"\nImpression: {_impression(w, evidence, 'impressions_normal')}\n")
    return Case(text=text, labels={k: v.value for k, v in truth.items()}, evidence=evidence, region=corpus)


# ---------------------------------------------------------------------------------------------
# chest X-ray and chest CT
# ---------------------------------------------------------------------------------------------
def _cxr_truth(schema: Schema, sampled: dict[str, State]) -> dict[str, State]:
    truth = schema.propagate({k: v for k, v in _effective(schema, sampled).items() if k != "no_finding"})
    abnormal = any(truth[k] in (State.PRESENT, State.UNCERTAIN) for k in truth if k != "support_devices")
    truth["no_finding"] = State.ABSENT if abnormal else State.PRESENT
    return truth


def _cxr_text(w: _Writer, schema: Schema, sampled: dict[str, State]) -> Case:
    b = w.bank
    _, evidence, findings = _finding_sentences(w, schema, sampled, skip=("no_finding",))
    truth = _cxr_truth(schema, sampled)
    findings += w.sample(b["fillers"], w.rng.randint(2, 4))
    w.rng.shuffle(findings)
    text = (_header(w.rng, "CHEST RADIOGRAPH, PA AND LATERAL") + f"INDICATION: {w.pick(b['indications'])}.\n"
            + "FINDINGS: " + " ".join(findings) + "\nIMPRESSION: " + _impression(w, evidence, "no_finding_sentences") + "\n")
    return Case(text=text, labels={k: v.value for k, v in truth.items()}, evidence=evidence)


def _ct_text(w: _Writer, schema: Schema, sampled: dict[str, State]) -> Case:
    b = w.bank
    truth, evidence, body = _finding_sentences(w, schema, sampled)
    fillers = w.rng.sample(b["fillers"], len(b["fillers"]))
    chosen = fillers[: w.rng.randint(12, 15)]
    w.used += chosen
    findings = body + chosen
    w.rng.shuffle(findings)
    text = (_header(w.rng, "CT CHEST WITHOUT CONTRAST") + f"Clinical information: {w.pick(b['indications'])}.\n"
            + f"Technique: {w.pick(b['technique'])}\n"
            + "Findings: " + " ".join(findings) + "\nImpression: " + _impression(w, evidence, "impressions_normal") + "\n")
    return Case(text=text, labels={k: v.value for k, v in truth.items()}, evidence=evidence)


# ---------------------------------------------------------------------------------------------
# cardiac MRI
# ---------------------------------------------------------------------------------------------
_CMR_WEIGHTS = [("normal", 0.22), ("ischemic", 0.2), ("dilated_cardiomyopathy", 0.14),
                ("hypertrophic_cardiomyopathy", 0.12), ("myocarditis", 0.12), ("infiltrative_storage", 0.1),
                ("other", 0.1)]
# plausible reader confusions (the paper's cardiologist reached F1 0.94)
_CMR_CONFUSION = {"normal": ["myocarditis", "other"], "ischemic": ["dilated_cardiomyopathy"],
                  "dilated_cardiomyopathy": ["ischemic", "myocarditis"],
                  "hypertrophic_cardiomyopathy": ["infiltrative_storage"], "myocarditis": ["normal", "dilated_cardiomyopathy"],
                  "infiltrative_storage": ["hypertrophic_cardiomyopathy"], "other": ["normal", "dilated_cardiomyopathy"]}


def _cmr_plan(rng: random.Random) -> tuple[str, str]:
    """The category and the simulated reader's call (drawn before any wording)."""
    u, acc = rng.random(), 0.0
    cat = _CMR_WEIGHTS[-1][0]
    for c, w in _CMR_WEIGHTS:
        acc += w
        if u < acc:
            cat = c
            break
    reader = cat if rng.random() < 0.94 else rng.choice(_CMR_CONFUSION[cat])
    return cat, reader


def _cmr_text(w: _Writer, cat: str, reader: str) -> Case:
    b, r = w.bank["cmr"], w.rng
    v = {"lvef": r.randint(56, 68), "edvi": r.randint(62, 92), "wall": r.randint(7, 10), "t1": r.randint(950, 1030),
         "t2": r.randint(44, 50), "ecv": r.randint(23, 28), "rvef": r.randint(42, 62)}
    spec = b["categories"][cat]
    extra: list[str] = []
    if cat == "ischemic":
        art, terr = r.choice(b["territories"])
        v.update(lvef=r.randint(25, 50), edvi=r.randint(85, 130), art=art, terr=terr)
        v["depth"] = w.pick(spec["depth"])
        v["Depth"] = _cap(v["depth"])
        v["motion"] = w.pick(spec["motion"])
    elif cat == "dilated_cardiomyopathy":
        v.update(lvef=r.randint(15, 40), edvi=r.randint(115, 185))
    elif cat == "hypertrophic_cardiomyopathy":
        v.update(wall=r.randint(16, 28), lvef=r.randint(62, 78))
        if r.random() < 0.5:
            extra.append(w.pick(spec["obstruction"]))
    elif cat == "myocarditis":
        v.update(lvef=r.randint(45, 60), t2=r.randint(54, 64), t1=r.randint(1060, 1140))
    if cat in ("infiltrative_storage", "other"):
        kind = r.choice(sorted(spec))
        spec = spec[kind]
        if kind == "amyloid":
            v.update(wall=r.randint(13, 18), t1=r.randint(1100, 1200), ecv=r.randint(42, 60))
        elif kind == "fabry":
            v["t1"] = r.randint(820, 900)
    lge = w.pick(spec.get("lge") or b["no_lge"])
    extra = [w.pick(spec["extra"])] + extra if spec.get("extra") else extra
    impression = w.pick(spec["impression"])
    v["esvi"] = round(v["edvi"] * (100 - v["lvef"]) / 100)
    sentences = [t.format(**v) for t in w.pick_group(b["measurements"])]
    sentences += [t.format(**v) for t in extra] + [lge.format(**v)]
    if r.random() < 0.25 and cat != "other":
        sentences.append(w.pick(b["incidental"]))
    text = (_header(r, "CARDIAC MRI") + f"Indication: {w.pick(b['indications'])}.\n"
            + f"Technique: {w.pick(b['technique'])}\nFindings: " + " ".join(sentences)
            + f"\nImpression: {impression.format(**v)}\n")
    return Case(text=text, labels={"label": cat}, reader=reader)


# ---------------------------------------------------------------------------------------------
# corpus assembly
# ---------------------------------------------------------------------------------------------
def _plans(corpus: str, n: int, seed: int, schema: Schema) -> tuple[list, np.ndarray]:
    """Ground truth first (one RNG stream per corpus and seed), and the stratification matrix of the splits."""
    rng = random.Random(f"radpriv/{corpus}/{seed}")
    if corpus == "cmr":
        plans = [_cmr_plan(rng) for _ in range(n)]
        return plans, np.array([cat for cat, _ in plans])
    plans = []
    for _ in range(n):
        sampled = _sample_states(rng, schema, STATE_PROBS[corpus])
        if corpus == "cxr":
            sampled["no_finding"] = State.NOT_MENTIONED
        plans.append(sampled)
    truth = [_cxr_truth(schema, p) if corpus == "cxr" else schema.propagate(_effective(schema, p)) for p in plans]
    strat = np.array([[int(t[f] in (State.PRESENT, State.UNCERTAIN)) for f in schema.ids] for t in truth])
    return plans, strat


def generate_cases(corpus: str, n: int | None = None, seed: int = 0) -> list[Case]:
    """The generated reports with their ground truth, split, phrase bank and per-finding evidence sentences.

    Ground truth and the train/validation/test split are drawn first; each report is then written (its own
    RNG stream) from the phrase bank of its split (:func:`phrase_bank_of`)."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    n = CORPORA[corpus]["n"] if n is None else int(n)
    if n < 10:
        raise ValueError(f"n={n} is too small for train/validation/test splits; use n >= 10")
    schema = load_schema(CORPORA[corpus]["schema"])
    plans, strat = _plans(corpus, n, seed, schema)
    splits = assign_splits(strat, seed=seed)
    cases = []
    for i, (plan, split) in enumerate(zip(plans, splits)):
        bank = phrase_bank_of(str(split))
        w = _Writer(random.Random(f"radpriv/{corpus}/{seed}/text/{i}"), phrase_bank(corpus, bank))
        if corpus == "cmr":
            case = _cmr_text(w, *plan)
        elif corpus == "cxr":
            case = _cxr_text(w, schema, plan)
        elif corpus == "ct":
            case = _ct_text(w, schema, plan)
        else:
            case = _upper_extremity_text(w, corpus, schema, plan)
        case.split, case.bank, case.phrasings = str(split), bank, list(w.used)
        cases.append(case)
    return cases


def _secret(rng: random.Random) -> str:
    return f"{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"


def generate(corpus: str, n: int | None = None, seed: int = 0, canaries: bool = True) -> pd.DataFrame:
    """A corpus as a DataFrame in the dataset-frame convention (see module docstring)."""
    cases = generate_cases(corpus, n, seed)
    rows = []
    for i, c in enumerate(cases):
        row = {"report_id": f"{corpus}-{seed}-{i:05d}", "split": c.split, "text": c.text}
        row.update(c.labels)
        if corpus == "cmr":
            row["reader"] = c.reader
        if c.region:
            row["region"] = c.region
        rows.append(row)
    df = pd.DataFrame(rows)
    df["canary"] = ""
    if canaries:
        rng = random.Random(f"radpriv/{corpus}/{seed}/canaries")
        train_idx = [i for i in range(len(df)) if df.at[i, "split"] == "train"]
        needed = sum(CANARY_REPEATS)
        if len(train_idx) >= needed * 2:
            chosen = rng.sample(train_idx, needed)
            pos = 0
            for k in CANARY_REPEATS:
                secret = _secret(rng)
                for idx in chosen[pos: pos + k]:
                    text = df.at[idx, "text"]
                    cut = text.rfind("\nImpression")
                    cut = cut if cut >= 0 else len(text.rstrip("\n"))
                    df.at[idx, "text"] = text[:cut] + " " + CANARY_TEMPLATE.format(secret=secret) + text[cut:]
                    df.at[idx, "canary"] = secret
                pos += k
    df["phrase_bank"] = [c.bank for c in cases]
    return df


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_corpus(corpus: str, path: str | Path, seed: int = 0, n: int | None = None, canaries: bool = True) -> str:
    """Write the corpus CSV atomically; return its sha256."""
    data = to_csv_bytes(generate(corpus, n, seed, canaries))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()
