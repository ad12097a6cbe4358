"""Synthetic corpora: determinism, exact ground truth, diversity, splits, canaries."""

import hashlib
from collections import Counter

import pytest

from radpriv.data import synthetic as syn
from radpriv.data.splits import assign_splits
from radpriv.schemas import State, load_schema

COMMON = syn._phrases("common")


def sha(df):
    return hashlib.sha256(syn.to_csv_bytes(df)).hexdigest()


@pytest.mark.parametrize("corpus", list(syn.CORPORA))
def test_deterministic_from_seed(corpus):
    a, b, c = syn.generate(corpus, n=60, seed=1), syn.generate(corpus, n=60, seed=1), syn.generate(corpus, n=60, seed=2)
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)


@pytest.mark.parametrize("corpus", ["clavicle", "elbow", "thumb", "cxr", "ct"])
def test_ground_truth_matches_wording(corpus):
    schema = load_schema(syn.CORPORA[corpus]["schema"])
    cases = syn.generate_cases(corpus, n=150, seed=0)
    seen_states = Counter()
    for case in cases:
        for fid, (state, sentence) in case.evidence.items():
            low = sentence.lower()
            assert sentence in case.text
            if state == "absent":
                assert any(c in low for c in COMMON["negation_cues"]), sentence
                assert case.labels[fid] != "present" or any(
                    case.labels.get(ch) == "present" for ch in schema.children(fid)), (fid, sentence)
            if state == "uncertain":
                assert any(c in low for c in COMMON["hedge_cues"]), sentence
            if state == "present":
                assert not any(c in low for c in COMMON["hedge_cues"]), sentence
        # truth is closed under parent propagation
        assert schema.propagate(case.labels) == {k: State(v) for k, v in case.labels.items()}
        seen_states.update(case.labels.values())
        assert sum(v in ("present", "uncertain", "absent") for v in case.labels.values()) >= 1
    assert set(seen_states) == {"present", "absent", "uncertain", "not_mentioned"}
    # several findings per report on average
    assert sum(len(c.evidence) for c in cases) / len(cases) >= 2


@pytest.mark.parametrize("corpus", ["clavicle", "elbow", "thumb", "cxr", "ct"])
def test_many_phrasings_per_finding(corpus):
    cases = syn.generate_cases(corpus, n=300, seed=0)
    per_finding = {}
    for c in cases:
        for fid, (state, sentence) in c.evidence.items():
            per_finding.setdefault(fid, set()).add(sentence)
    assert min(len(v) for v in per_finding.values()) >= 5


def test_uncertainty_hedges_from_the_paper_occur():
    text = " ".join(syn.generate("elbow").text).lower()
    for hedge in ("possible", "cannot be excluded", "suspected", "most likely"):
        assert hedge in text


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
    assert df.text.str.contains("LVEF").all()


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
    pos = df["fracture"].isin(["present", "uncertain"])
    rates = pos.groupby(df.split).mean()
    assert rates.max() - rates.min() < 0.08
    with pytest.raises(ValueError, match="fractions must be three positive numbers"):
        assign_splits([0, 1] * 10, fractions=(0.5, 0.5, 0.5))


def test_write_corpus_is_atomic_and_returns_sha(tmp_path):
    p = tmp_path / "x.csv"
    digest = syn.write_corpus("thumb", p, n=40)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="unknown corpus 'knee'"):
        syn.generate("knee")
