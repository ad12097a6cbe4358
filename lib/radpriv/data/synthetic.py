"""Synthetic radiology report corpora: the embedded default of every study.

Each corpus is generated deterministically from a seed with :class:`random.Random` only (no numpy
RNG, no ``hash()``, no set iteration), so the CSV bytes -- and the sha256 pinned in the manifests --
are identical on every machine. Ground truth is exact by construction: every finding's sentence is
built from a present / negation / hedge template (``phrases/common.yaml``) around one of several
noun phrases per finding (``phrases/<corpus>.yaml``), so a negated finding always carries a negation
cue and an uncertain one a hedge.

Corpora (``CORPORA``): ``cmr`` (single-label CMR category + a simulated human reader), ``clavicle``,
``elbow``, ``thumb`` (upper-extremity templates with hedges and distractors from other regions),
``cxr`` (CheXpert 14, FINDINGS/IMPRESSION), ``ct`` (CT-RATE 18, long reports).

Columns: ``report_id, split, text`` then one State column per finding (``label`` for ``cmr``, with
``reader``), then ``region`` (upper extremity) and ``canary``.

Canaries (memorization audit): with ``canaries=True`` the train split carries secret record numbers
``"Internal record number NNNN-NNNN."``; canary *j* of :data:`CANARY_REPEATS` is inserted into
``k_j`` distinct training reports (k = 1, 1, 4, 4, 16, 16). Every other row has ``canary=""``.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from radpriv.data.splits import assign_splits
from radpriv.schemas import STATE_PRECEDENCE, Schema, State, load_schema

PHRASES = Path(__file__).resolve().parent / "phrases"

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

# probabilities of the sampled state of a finding: (present, uncertain, absent); the rest is not mentioned
STATE_PROBS = {
    "clavicle": (0.10, 0.06, 0.12), "elbow": (0.09, 0.06, 0.12), "thumb": (0.10, 0.06, 0.12),
    "cxr": (0.16, 0.08, 0.18), "ct": (0.20, 0.06, 0.14),
}


@dataclass
class Case:
    """One generated report with its exact ground truth and the sentence behind each finding."""

    text: str
    labels: dict[str, str]  # finding id -> State value (multilabel) or {"label": category}
    evidence: dict[str, tuple[str, str]] = field(default_factory=dict)  # finding -> (sampled state, sentence)
    reader: str = ""
    region: str = ""


@lru_cache(maxsize=None)
def _phrases(name: str) -> dict:
    with open(PHRASES / f"{name}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _strip_article(np_: str) -> str:
    for art in ("a ", "an "):
        if np_.startswith(art):
            return np_[len(art):]
    return np_


def _sentence(rng: random.Random, state: State, np_: str) -> str:
    common = _phrases("common")
    if state is not State.PRESENT:
        np_ = _strip_article(np_)
    tmpl = rng.choice(common[state.value])
    return tmpl.format(np=np_, NP=_cap(np_))


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


def _finding_sentences(rng: random.Random, schema: Schema, sampled: dict[str, State], nps: dict[str, list[str]],
                       skip: tuple[str, ...] = ()) -> tuple[dict[str, State], dict[str, tuple[str, str]]]:
    """Sentences for the sampled states; a parent whose sub-findings are positive gets no own sentence
    (its label comes from propagation), so text and truth never contradict each other."""
    truth = schema.propagate({k: v for k, v in sampled.items() if k not in skip})
    evidence: dict[str, tuple[str, str]] = {}
    for f in schema.findings:
        if f.id in skip:
            continue
        s = sampled[f.id]
        positive_child = any(STATE_PRECEDENCE[sampled[c]] >= STATE_PRECEDENCE[State.UNCERTAIN]
                             for c in _descendants(schema, f.id))
        if s is State.NOT_MENTIONED or positive_child:
            continue
        evidence[f.id] = (s.value, _sentence(rng, s, rng.choice(nps[f.id])))
    return truth, evidence


def _descendants(schema: Schema, fid: str) -> list[str]:
    out, todo = [], list(schema.children(fid))
    while todo:
        c = todo.pop()
        out.append(c)
        todo += schema.children(c)
    return out


# ---------------------------------------------------------------------------------------------
# upper extremity
# ---------------------------------------------------------------------------------------------
_UE_TITLES = {"clavicle": "RADIOGRAPH CLAVICLE, 2 VIEWS", "elbow": "RADIOGRAPH ELBOW, AP AND LATERAL",
              "thumb": "RADIOGRAPH THUMB, 2 VIEWS"}
_UE_INDICATIONS = ["fall on outstretched hand", "pain after sports injury", "follow-up after fracture",
                   "swelling and tenderness", "trauma, rule out fracture", "chronic pain", "post-operative control"]
_UE_NORMAL = {
    "clavicle": ["The clavicle is otherwise intact.", "Normal alignment of the acromioclavicular joint otherwise.",
                 "Bone mineralization is normal."],
    "elbow": ["Bone mineralization is normal.", "The visualized bones are otherwise intact.",
              "Alignment of the elbow is otherwise preserved."],
    "thumb": ["Bone mineralization is normal.", "The remaining bones of the thumb are intact.",
              "Alignment is otherwise anatomic."],
}


def _upper_extremity_case(rng: random.Random, corpus: str, schema: Schema) -> Case:
    ph = _phrases(corpus)
    sampled = _sample_states(rng, schema, STATE_PROBS[corpus])
    truth, evidence = _finding_sentences(rng, schema, sampled, ph["findings"])
    sentences = [e[1] for e in evidence.values()]
    sentences += rng.sample(_UE_NORMAL[corpus], rng.randint(0, 2))
    if rng.random() < 0.3:
        sentences.append(rng.choice(ph["distractors"]))
    rng.shuffle(sentences)
    positives = [schema.finding(k).label.lower() for k, (s, _) in evidence.items() if s != "absent"]
    impression = ("No acute osseous abnormality." if not positives else
                  "See findings above.")
    text = (_header(rng, _UE_TITLES[corpus]) + f"Indication: {rng.choice(_UE_INDICATIONS)}.\n"
            + "Findings: " + " ".join(sentences) + f"\nImpression: {impression}\n")
    return Case(text=text, labels={k: v.value for k, v in truth.items()}, evidence=evidence, region=corpus)


# ---------------------------------------------------------------------------------------------
# chest X-ray and chest CT
# ---------------------------------------------------------------------------------------------
def _cxr_case(rng: random.Random, schema: Schema) -> Case:
    ph = _phrases("cxr")
    sampled = _sample_states(rng, schema, STATE_PROBS["cxr"])
    sampled["no_finding"] = State.NOT_MENTIONED
    truth, evidence = _finding_sentences(rng, schema, sampled, ph["findings"], skip=("no_finding",))
    abnormal = any(truth[k] in (State.PRESENT, State.UNCERTAIN) for k in truth if k != "support_devices")
    truth["no_finding"] = State.ABSENT if abnormal else State.PRESENT
    findings = [e[1] for e in evidence.values()] + rng.sample(ph["fillers"], rng.randint(2, 4))
    rng.shuffle(findings)
    positives = [sent for k, (s, sent) in evidence.items() if s in ("present", "uncertain")]
    impression = " ".join(positives) if positives else rng.choice(ph["no_finding_sentences"])
    text = (_header(rng, "CHEST RADIOGRAPH, PA AND LATERAL") + f"INDICATION: {rng.choice(ph['indications'])}.\n"
            + "FINDINGS: " + " ".join(findings) + "\nIMPRESSION: " + impression + "\n")
    return Case(text=text, labels={k: v.value for k, v in truth.items()}, evidence=evidence)


def _ct_case(rng: random.Random, schema: Schema) -> Case:
    ph = _phrases("ct")
    sampled = _sample_states(rng, schema, STATE_PROBS["ct"])
    truth, evidence = _finding_sentences(rng, schema, sampled, ph["findings"])
    body = [e[1] for e in evidence.values()]
    fillers = rng.sample(ph["fillers"], len(ph["fillers"]))
    findings = body + fillers[: rng.randint(12, 15)]
    rng.shuffle(findings)
    positives = [sent for k, (s, sent) in evidence.items() if s in ("present", "uncertain")]
    impression = " ".join(positives) if positives else "No acute thoracic pathology."
    text = (_header(rng, "CT CHEST WITHOUT CONTRAST") + f"Clinical information: {rng.choice(ph['indications'])}.\n"
            + "Technique: Axial thin-section non-contrast images of the thorax were obtained.\n"
            + "Findings: " + " ".join(findings) + "\nImpression: " + impression + "\n")
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
_TERRITORIES = [("LAD", "anterior and anteroseptal"), ("RCA", "inferior and inferoseptal"), ("LCx", "inferolateral and anterolateral")]


def _pick(rng: random.Random, options: list[str]) -> str:
    return rng.choice(options)


def _cmr_case(rng: random.Random) -> Case:
    u, acc = rng.random(), 0.0
    cat = _CMR_WEIGHTS[-1][0]
    for c, w in _CMR_WEIGHTS:
        acc += w
        if u < acc:
            cat = c
            break
    r = rng
    lvef, edvi, wall, t1, t2, ecv = r.randint(56, 68), r.randint(62, 92), r.randint(7, 10), r.randint(950, 1030), r.randint(44, 50), r.randint(23, 28)
    lge, impression, extra = "", "", []
    if cat == "normal":
        lge = _pick(r, ["No late gadolinium enhancement.", "No pathological LGE.", "Late enhancement imaging shows no scar or fibrosis."])
        impression = _pick(r, ["Normal cardiac MRI.", "Structurally and functionally normal heart without evidence of myocardial scar or inflammation.",
                               "No evidence of cardiomyopathy, myocarditis or ischemic scar."])
    elif cat == "ischemic":
        art, terr = r.choice(_TERRITORIES)
        lvef, edvi = r.randint(25, 50), r.randint(85, 130)
        depth = r.choice(["subendocardial", "transmural", "near-transmural (>75 %)", "subendocardial (<50 %)"])
        lge = f"{depth.capitalize()} late gadolinium enhancement in the {terr} segments ({art} territory)."
        extra.append(f"Regional {r.choice(['akinesia', 'hypokinesia', 'dyskinesia'])} of the {terr} wall.")
        impression = _pick(r, [f"Chronic myocardial infarction in the {art} territory.",
                               f"Ischemic cardiomyopathy with {depth} scar in the {art} territory.",
                               f"Findings consistent with prior {art} infarction; viability limited in segments with transmural scar."])
    elif cat == "dilated_cardiomyopathy":
        lvef, edvi = r.randint(15, 40), r.randint(115, 185)
        lge = _pick(r, ["Midwall septal late gadolinium enhancement.", "Linear midwall LGE in the basal septum.",
                        "No ischemic pattern of late enhancement; subtle midwall septal LGE."])
        extra.append("Global hypokinesia of the left ventricle.")
        impression = _pick(r, ["Non-ischemic dilated cardiomyopathy.", "Dilated left ventricle with severely reduced function, no ischemic scar: DCM.",
                               "Findings consistent with dilated cardiomyopathy."])
    elif cat == "hypertrophic_cardiomyopathy":
        wall, lvef = r.randint(16, 28), r.randint(62, 78)
        lge = _pick(r, ["Patchy midwall LGE at the RV insertion points and in the hypertrophied septum.",
                        "Patchy late enhancement within the hypertrophied segments."])
        extra.append(f"Asymmetric septal hypertrophy with maximal wall thickness {wall} mm.")
        if r.random() < 0.5:
            extra.append("Systolic anterior motion of the mitral valve with LVOT flow acceleration.")
        impression = _pick(r, ["Hypertrophic cardiomyopathy.", "Asymmetric septal HCM with fibrosis.",
                               "Findings consistent with hypertrophic (obstructive) cardiomyopathy."])
    elif cat == "myocarditis":
        lvef, t2, t1 = r.randint(45, 60), r.randint(54, 64), r.randint(1060, 1140)
        lge = _pick(r, ["Subepicardial late gadolinium enhancement in the basal inferolateral wall.",
                        "Patchy subepicardial and midwall LGE in the lateral wall (non-ischemic pattern)."])
        extra.append("Myocardial edema on T2-weighted images in the same segments.")
        impression = _pick(r, ["Acute myocarditis (Lake Louise criteria fulfilled).", "Findings consistent with acute myocarditis.",
                               "Myocardial inflammation with subepicardial scar: myocarditis."])
    elif cat == "infiltrative_storage":
        kind = r.choice(["amyloid", "sarcoid", "fabry"])
        if kind == "amyloid":
            wall, t1, ecv = r.randint(13, 18), r.randint(1100, 1200), r.randint(42, 60)
            lge = "Diffuse global subendocardial late enhancement with difficult myocardial nulling."
            impression = _pick(r, ["Findings consistent with cardiac amyloidosis.", "Infiltrative cardiomyopathy, most consistent with amyloidosis."])
        elif kind == "sarcoid":
            lge = "Patchy midwall and subepicardial LGE in the basal septum, extending into the right ventricle."
            impression = _pick(r, ["Pattern suggestive of cardiac sarcoidosis.", "Cardiac sarcoidosis."])
        else:
            t1 = r.randint(820, 900)
            lge = "Midwall LGE in the basal inferolateral wall with low native T1."
            impression = _pick(r, ["Findings consistent with Anderson-Fabry disease.", "Storage cardiomyopathy (Fabry disease)."])
    else:
        kind = r.choice(["valve", "pericard", "congenital", "arvc"])
        lge = _pick(r, ["No late gadolinium enhancement.", "No myocardial LGE."])
        if kind == "valve":
            extra.append("Severe aortic stenosis with a peak velocity of 4.6 m/s." if r.random() < 0.5
                         else "Severe mitral regurgitation with a regurgitant fraction of 52 %.")
            impression = "Severe valvular heart disease; normal myocardium."
        elif kind == "pericard":
            extra.append("Thickened pericardium (5 mm) with septal bounce.")
            impression = "Findings consistent with constrictive pericarditis."
        elif kind == "congenital":
            extra.append("Secundum atrial septal defect with left-to-right shunt (Qp:Qs 1.8).")
            impression = "Congenital heart disease: secundum ASD with significant shunt."
        else:
            extra.append("Dilated right ventricle with regional RV dyskinesia of the free wall.")
            impression = "Findings fulfil major criteria for arrhythmogenic right ventricular cardiomyopathy."
    esvi = round(edvi * (100 - lvef) / 100)
    sentences = [
        f"Left ventricle: LVEDV index {edvi} ml/m2, LVESV index {esvi} ml/m2, LVEF {lvef} %.",
        f"Maximal end-diastolic wall thickness {wall} mm.",
        f"Right ventricle: RVEF {r.randint(42, 62)} %.",
        f"Native T1 {t1} ms, T2 {t2} ms, ECV {ecv} %.",
    ] + extra + [lge]
    if r.random() < 0.25 and cat != "other":
        sentences.append(_pick(r, ["Small pericardial effusion without hemodynamic relevance.", "Incidental small hepatic cyst.",
                                   "Mild mitral regurgitation."]))
    indication = _pick(r, ["dyspnea", "chest pain", "palpitations", "reduced EF on echocardiography", "suspected cardiomyopathy",
                           "elevated troponin", "family history of cardiomyopathy"])
    text = (_header(r, "CARDIAC MRI") + f"Indication: {indication}.\n"
            + "Technique: cine SSFP, T1/T2 mapping, late gadolinium enhancement.\nFindings: " + " ".join(sentences)
            + f"\nImpression: {impression}\n")
    reader = cat if r.random() < 0.94 else r.choice(_CMR_CONFUSION[cat])
    return Case(text=text, labels={"label": cat}, reader=reader)


# ---------------------------------------------------------------------------------------------
# corpus assembly
# ---------------------------------------------------------------------------------------------
def generate_cases(corpus: str, n: int | None = None, seed: int = 0) -> list[Case]:
    """The generated reports with their ground truth and per-finding evidence sentences."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    n = CORPORA[corpus]["n"] if n is None else int(n)
    if n < 10:
        raise ValueError(f"n={n} is too small for train/validation/test splits; use n >= 10")
    schema = load_schema(CORPORA[corpus]["schema"])
    rng = random.Random(f"radpriv/{corpus}/{seed}")
    if corpus == "cmr":
        return [_cmr_case(rng) for _ in range(n)]
    if corpus == "cxr":
        return [_cxr_case(rng, schema) for _ in range(n)]
    if corpus == "ct":
        return [_ct_case(rng, schema) for _ in range(n)]
    return [_upper_extremity_case(rng, corpus, schema) for _ in range(n)]


def _secret(rng: random.Random) -> str:
    return f"{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"


def generate(corpus: str, n: int | None = None, seed: int = 0, canaries: bool = True) -> pd.DataFrame:
    """A corpus as a DataFrame in the dataset-frame convention (see module docstring)."""
    cases = generate_cases(corpus, n, seed)
    schema = load_schema(CORPORA[corpus]["schema"])
    rows = []
    for i, c in enumerate(cases):
        row = {"report_id": f"{corpus}-{seed}-{i:05d}", "text": c.text}
        row.update(c.labels)
        if corpus == "cmr":
            row["reader"] = c.reader
        if c.region:
            row["region"] = c.region
        rows.append(row)
    df = pd.DataFrame(rows)
    if schema.task == "single":
        strat = df["label"].to_numpy()
    else:
        strat = np.array([[int(v in ("present", "uncertain")) for v in df[f]] for f in schema.ids]).T
    df.insert(1, "split", assign_splits(strat, seed=seed))
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
