"""Synthetic corpora: determinism, exact ground truth, diversity, splits, phrase banks, canaries."""

import hashlib
import re
from collections import Counter

import numpy as np
import pytest

from radpriv.data import synthetic as syn
from radpriv.data.splits import assign_splits
from radpriv.schemas import State, load_schema

MULTILABEL = ["clavicle", "elbow", "thumb", "cxr", "ct"]


def sha(df):
    return hashlib.sha256(syn.to_csv_bytes(df)).hexdigest()


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_deterministic_from_seed(corpus):
    a, b, c = syn.generate(corpus, n=60, seed=1), syn.generate(corpus, n=60, seed=1), syn.generate(corpus, n=60, seed=2)
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)


@pytest.mark.parametrize("corpus", MULTILABEL)
def test_ground_truth_matches_wording(corpus):
    schema = load_schema(syn.CORPORA[corpus]["schema"])
    cases = syn.generate_cases(corpus, n=150, seed=0)
    seen_states = Counter()
    for case in cases:
        cue = syn.cues(case.bank)
        for fid, (state, sentence) in case.evidence.items():
            low = sentence.lower()
            assert sentence in case.text
            if state == "absent":
                assert any(c in low for c in cue["negation"]), sentence
                assert case.labels[fid] != "present" or any(
                    case.labels.get(ch) == "present" for ch in schema.children(fid)), (fid, sentence)
            if state == "uncertain":
                assert any(c in low for c in cue["hedge"]), sentence
            if state == "present":
                assert not any(c in low for c in cue["hedge"]), sentence
        # truth is closed under parent propagation
        assert schema.propagate(case.labels) == {k: State(v) for k, v in case.labels.items()}
        # a parent without a sentence of its own takes its state from its sub-findings only
        for f in schema.findings:
            kids = [case.labels[c] for c in schema.children(f.id)]
            if f.id not in case.evidence and kids and f.id != "no_finding":
                positive = [k for k in kids if k in ("present", "uncertain")]
                expected = max(positive, key=lambda v: syn.STATE_PRECEDENCE[State(v)]) if positive else "not_mentioned"
                assert case.labels[f.id] == expected, (f.id, case.labels[f.id], kids)
        seen_states.update(case.labels.values())
        assert sum(v in ("present", "uncertain", "absent") for v in case.labels.values()) >= 1
    assert set(seen_states) == {"present", "absent", "uncertain", "not_mentioned"}
    # several findings per report on average
    assert sum(len(c.evidence) for c in cases) / len(cases) >= 2


@pytest.mark.parametrize("corpus", MULTILABEL)
def test_many_phrasings_per_finding(corpus):
    cases = syn.generate_cases(corpus, n=300, seed=0)
    per_finding = {}
    for c in cases:
        for fid, (state, sentence) in c.evidence.items():
            per_finding.setdefault(fid, set()).add(sentence)
    assert min(len(v) for v in per_finding.values()) >= 5


def test_uncertainty_hedges_from_the_paper_occur():
    df = syn.generate("elbow")
    text = " ".join(df[df.split == "train"].text).lower()
    for hedge in ("possible", "cannot be excluded", "suspected", "most likely"):
        assert hedge in text
    held = " ".join(df[df.split != "train"].text).lower()
    assert sum(h in held for h in syn.cues("heldout")["hedge"]) >= 5


def test_no_finding_logic_cxr():
    df = syn.generate("cxr", n=200)
    others = [c for c in load_schema("chexpert14").ids if c not in ("no_finding", "support_devices")]
    abnormal = df[others].isin(["present", "uncertain"]).any(axis=1)
    assert ((df["no_finding"] == "present") == ~abnormal).all()


def test_ct_reports_are_long_like_ct_rate():
    assert 1300 <= syn.generate("ct", n=100).text.str.len().mean() <= 2300


def test_cmr_categories_and_reader_agreement():
    df = syn.generate("cmr")
    assert len(df) >= 109
    assert set(df["label"]) == set(load_schema("cmr").ids)
    agree = (df["label"] == df["reader"]).mean()
    assert 0.88 <= agree <= 0.99
    assert df.text.str.contains("LVEF|LV ejection fraction").all()


def test_identifiers_and_canaries_only_in_train():
    df = syn.generate("cxr")
    assert df.text.str.contains("MRN: ").all() and df.text.str.contains("Accession: ").all()
    can = df[df.canary != ""]
    assert set(can.split) == {"train"}
    counts = sorted(Counter(can.canary).values())
    assert counts == sorted(syn.CANARY_REPEATS)
    for _, row in can.iterrows():
        assert syn.CANARY_TEMPLATE.format(secret=row.canary) in row.text
    assert not syn.generate("cxr", canaries=False).text.str.contains("Internal record number").any()


def test_splits_fractions_and_stratification():
    df = syn.generate("elbow")
    frac = df.split.value_counts(normalize=True)
    assert abs(frac["train"] - 0.6) < 0.03 and abs(frac["test"] - 0.2) < 0.03
    # per-finding positive rates agree across splits: the mean spread is small and well below that of
    # random (unstratified) splits of the same reports
    pos = df[load_schema("elbow").ids].isin(["present", "uncertain"])

    def spread(split):
        rates = pos.groupby(split).mean()
        return float((rates.max() - rates.min()).mean())

    rng = np.random.default_rng(0)
    random_spread = np.mean([spread(rng.permutation(df.split.to_numpy())) for _ in range(20)])
    assert spread(df.split) < 0.05 and spread(df.split) < 0.6 * random_spread
    with pytest.raises(ValueError, match="fractions must be three positive numbers"):
        assign_splits([0, 1] * 10, fractions=(0.5, 0.5, 0.5))


def test_write_corpus_is_atomic_and_returns_sha(tmp_path):
    p = tmp_path / "x.csv"
    digest = syn.write_corpus("thumb", p, n=40)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="unknown corpus 'knee'"):
        syn.generate("knee")


# ---------------------------------------------------------------------------------------------
# phrase banks: train reports from the development bank, validation/test reports from the held-out bank
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_split_decides_the_phrase_bank(corpus):
    df = syn.generate(corpus, n=120, seed=3)
    assert (df.phrase_bank == df.split.map(syn.phrase_bank_of)).all()
    assert set(df.phrase_bank[df.split == "train"]) == {"development"}
    assert set(df.phrase_bank[df.split != "train"]) == {"heldout"}
    assert syn.phrase_bank_of("validation") == syn.phrase_bank_of("test") == "heldout"
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        syn.phrase_bank_of("holdout")
    assert "held-out" in syn.PHRASE_BANKS_NOTE and "train" in syn.PHRASE_BANKS_NOTE


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_reports_use_only_their_own_banks_phrasings(corpus):
    """Every template, phrase and sentence a report was written from belongs to its split's bank, and none
    belongs to the other bank unless both banks list it (canonical names only)."""
    dev, held = syn.bank_phrases(corpus, "development"), syn.bank_phrases(corpus, "heldout")
    shared = dev & held
    other = {"development": held - shared, "heldout": dev - shared}
    own = {"development": dev, "heldout": held}
    cases = syn.generate_cases(corpus, n=150, seed=1)
    assert {c.bank for c in cases} == {"development", "heldout"}
    for case in cases:
        assert case.bank == syn.phrase_bank_of(case.split)
        assert case.phrasings and set(case.phrasings) <= own[case.bank], set(case.phrasings) - own[case.bank]
        assert not set(case.phrasings) & other[case.bank]
    # whole sentences of the other bank never occur in a report's text
    for case in cases:
        body = case.text.split("\n", 3)[3]
        for sentence in other[case.bank]:
            if re.fullmatch(r"[A-Z][^{}]*[.]", sentence) and len(sentence.split()) >= 3:
                assert sentence not in body, (case.bank, sentence)


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_banks_share_only_canonical_names(corpus):
    dev, held = syn.phrase_bank(corpus, "development"), syn.phrase_bank(corpus, "heldout")
    shared = syn.shared_phrases(corpus)
    if corpus == "cmr":
        canonical = {s for b in (dev, held) for s in syn._strings(b["cmr"]["territories"]) + b["cmr"]["categories"]["ischemic"]["depth"]}
    else:
        canonical = {t for b in (dev, held) for f in b["findings"].values() for t in f["terms"]}
        assert not shared & {t for b in (dev, held) for t in syn._strings(b["templates"])}
    assert shared <= canonical, shared - canonical
    # the held-out bank is a real alternative, not a copy: most of its phrasings are its own
    held_all = syn.bank_phrases(corpus, "heldout")
    assert len(held_all - shared) >= 0.8 * len(held_all)


@pytest.mark.parametrize("corpus", MULTILABEL)
def test_no_sentence_says_a_finding_is_absent(corpus):
    """The old generator wrote "Small right pneumothorax is absent."; no report says "<finding> is absent."."""
    text = "\n".join(syn.generate(corpus, n=200).text)
    assert not re.search(r"\b(is|are) absent\.", text)


def _sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s]


@pytest.mark.parametrize("corpus", MULTILABEL)
def test_negated_findings_read_as_a_radiologist_writes(corpus):
    """"No pneumothorax." / "No fracture or dislocation.", never "Small right pneumothorax is absent."."""
    cases = syn.generate_cases(corpus, n=200, seed=0)
    for case in cases:
        for sent in _sentences(case.text):
            assert not re.search(r"\b(is|are) absent\.", sent), sent
        bank = syn.phrase_bank(corpus, case.bank)["findings"]
        for fid, (state, sentence) in case.evidence.items():
            if state != "absent":
                continue
            low = sentence.lower()
            # a negated finding is named by a bare term (or is one of its whole "absent" sentences) ...
            assert sentence in bank[fid].get("absent", []) or any(
                syn._strip_article(t).lower() in low for t in bank[fid]["terms"]), (fid, sentence)
            # ... never by a description that only fits a present finding
            descriptive = [p for p in bank[fid]["present"] if syn._strip_article(p) not in bank[fid]["terms"]
                           and len(p.split()) >= 3]
            assert not any(re.search(rf"\b{re.escape(syn._strip_article(p).lower())}\b", low) for p in descriptive), (fid, sentence)
    lists = [s for c in cases for st, s in c.evidence.values() if st == "absent" and " or " in s]
    assert len(lists) >= 10  # negated findings are often listed together


def test_eval_reports_name_negated_findings_plainly():
    df = syn.generate("cxr")
    held = " ".join(df[df.split != "train"].text)
    for phrase in ("No pneumothorax", "No focal consolidation", "pleural effusion"):
        assert phrase.lower() in held.lower(), phrase
    # findings a radiologist negates together are listed together: "No fracture or dislocation."
    both = [c for c in syn.generate_cases("elbow", n=300) if c.evidence.get("fracture", ("",))[0] == "absent"
            and c.evidence.get("dislocation", ("",))[0] == "absent"]
    assert both
    for c in both:
        sent = c.evidence["fracture"][1]
        assert sent == c.evidence["dislocation"][1] and re.search(r"\bfracture\b.* or .*\bdislocation\b", sent), sent


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_banked_generation_stays_deterministic_per_seed(corpus):
    """Truth and splits are drawn before the wording, each report from its own seeded stream: the same seed
    gives the same bytes (phrase banks included), another seed other reports."""
    a, b = syn.generate(corpus, n=80, seed=5), syn.generate(corpus, n=80, seed=5)
    assert sha(a) == sha(b) and list(a.phrase_bank) == list(b.phrase_bank)
    assert sha(a) != sha(syn.generate(corpus, n=80, seed=6))
    assert [c.phrasings for c in syn.generate_cases(corpus, n=40, seed=5)] == \
        [c.phrasings for c in syn.generate_cases(corpus, n=40, seed=5)]


def test_phrase_bank_statement_counts_the_banks_and_says_nothing_about_user_data():
    import pandas as pd

    from radpriv.data import load_dataset

    ds = load_dataset("synthetic_elbow")
    for split in ("train", "test"):
        part = ds.split(split)
        n = int((part["phrase_bank"] == syn.phrase_bank_of(split)).sum())
        assert n == len(part)  # every report of a split comes from that split's bank
        line = syn.phrase_bank_statement(part)
        assert line.startswith(f"Phrase banks of the {len(part)} reports scored here: {n} from the "
                               f"{syn.phrase_bank_of(split)} bank.") and line.endswith(syn.PHRASE_BANKS_NOTE)
    mixed = pd.concat([ds.split("train").head(3), ds.split("test").head(2)])
    assert syn.phrase_bank_statement(mixed, note=False) == ("Phrase banks of the 5 reports scored here: 3 from the "
                                                          "development bank, 2 from the heldout bank.")
    assert syn.phrase_bank_statement(ds.split("test").drop(columns=["phrase_bank"])) == ""  # a user's own CSV
