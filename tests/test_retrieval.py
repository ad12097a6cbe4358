"""Retrieved few-shot examples (issue 16 item 1): the k most similar training reports per report, most similar
last, from a training split only; wired into the engine, the studies and `radpriv label --shots knn:K`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from radpriv import paths
from radpriv.cli import main
from radpriv.data import DataError, load_dataset
from radpriv.llm import engine, retrieval
from radpriv.llm.prompts import answer_json
from radpriv.studies import prompting

REAL_MODELS = paths.models_dir()


@pytest.fixture(scope="module")
def cmr():
    return load_dataset("synthetic_cmr")


@pytest.mark.parametrize("spec, expected", [
    ("zero-shot", retrieval.Shots("zero")), ("none", retrieval.Shots("zero")), ("0", retrieval.Shots("zero")),
    ("few-shot", retrieval.Shots("fixed")), ("fixed", retrieval.Shots("fixed")),
    ("knn:4", retrieval.Shots("knn", 4)), (" KNN:16 ", retrieval.Shots("knn", 16)),
])
def test_shots_specs(spec, expected):
    assert retrieval.parse_shots(spec) == expected
    assert retrieval.parse_shots(str(expected)) == expected  # round trip


@pytest.mark.parametrize("spec", ["knn", "knn:0", "knn:17", "knn:four", "two-shot", "knn:-1"])
def test_bad_shots_say_what_to_write(spec):
    with pytest.raises(ValueError, match=r"use zero-shot, few-shot .* or knn:K .*e\.g\. knn:4"):
        retrieval.parse_shots(spec)


def _strip(text):
    return "\n".join(line for line in text.splitlines()
                     if not line.lower().lstrip().startswith(("patient", "dob", "mrn", "accession", "exam date")))


def test_neighbours_are_the_most_similar_training_reports_most_similar_last(cmr):
    train, test = cmr.split("train"), cmr.split("test")
    r = retrieval.ExampleRetriever(train, cmr.schema, k=4)
    idx = r.neighbours(test.text.tolist())
    # independent computation: a separately fitted vectoriser, sklearn's cosine, a full sort
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    sims = cosine_similarity(vec.fit(train.text.map(_strip)).transform(test.text.map(_strip)),
                             vec.transform(train.text.map(_strip)))
    for row, got in zip(sims, idx):
        want = list(np.argsort(-row, kind="stable")[:4])[::-1]
        assert np.allclose(row[got], row[want]), "not the 4 most similar"
        assert list(row[got]) == sorted(row[got]), "the most similar must come last"
    # and they are relevant: the nearest example's category is the report's far more often than chance (1/7)
    nearest = [train.label.iloc[i[-1]] for i in idx]
    assert np.mean(np.array(nearest) == test.label.to_numpy()) > 0.4


def test_examples_carry_the_reference_answers_and_feed_the_prompt(cmr):
    train, test = cmr.split("train"), cmr.split("test").head(3)
    r = retrieval.ExampleRetriever(train, cmr.schema, k=2, source="synthetic_cmr")
    per = r.examples_for(test.text.tolist())
    for (text, rid), ex in zip(zip(test.text, test.report_id), per):
        assert len(ex) == 2
        for ex_text, ans in ex:
            row = train[train.text == ex_text].iloc[0]
            assert ans == answer_json(cmr.schema, row) == {"category": row.label}
        msgs = engine.build_messages(cmr.schema, "template", text, ex)
        assert msgs[0]["role"] == "system" and msgs[-1]["content"].endswith(text.strip())
        assert [m["content"] for m in msgs[1:-1:2]] == [f"Report:\n{t.strip()}" for t, _ in ex]
    assert r(test.text.iloc[0]) == per[0]
    assert r.describe()["examples_from"] == "synthetic_cmr"


def test_a_report_never_gets_itself_as_an_example(cmr):
    train = cmr.split("train")
    r = retrieval.ExampleRetriever(train, cmr.schema, k=3)
    same = train.text.iloc[5]
    got = r(same)
    assert same not in [t for t, _ in got] and len(got) == 3
    assert r.self_matches == 1


def test_only_training_reports_are_ever_examples(cmr):
    with pytest.raises(ValueError, match=r"training split only; the frame also holds \['test', 'validation'\]"):
        retrieval.ExampleRetriever(cmr.frame, cmr.schema, k=2)
    with pytest.raises(ValueError, match="has 3 training reports; knn:4 needs at least 5"):
        retrieval.ExampleRetriever(cmr.split("train").head(3), cmr.schema, k=4)
    with pytest.raises(ValueError, match=r"no reference labels for \['label'\]"):
        retrieval.ExampleRetriever(cmr.split("train").drop(columns="label"), cmr.schema, k=2)
    with pytest.raises(ValueError, match="needs an embed function"):
        retrieval.ExampleRetriever(cmr.split("train"), cmr.schema, k=2, method="minilm")


def test_minilm_retriever_matches_an_independent_cosine(cmr):
    from radpriv.downstream.text import MiniLMEncoder

    enc = MiniLMEncoder()
    train, test = cmr.split("train"), cmr.split("test").head(6)
    r = retrieval.ExampleRetriever(train, cmr.schema, k=3, method="minilm", embed=enc.encode)
    sims = cosine_similarity(enc.encode(test.text.map(_strip).tolist()), enc.encode(train.text.map(_strip).tolist()))
    for row, got in zip(sims, r.neighbours(test.text.tolist())):
        assert np.allclose(sorted(row[got]), np.sort(row)[-3:], atol=1e-5)
        assert list(row[got]) == sorted(row[got])


def test_study_examples_come_from_another_manifest_of_the_same_schema(tmp_path, cmr):
    own = _user_manifest(tmp_path, cmr)
    ds = load_dataset(own)
    fs = prompting.few_shot("knn:2", ds, ds.schema, examples_from="synthetic_cmr")
    assert "synthetic_cmr (train, 180 reports)" == fs.source
    with pytest.raises(DataError, match=r"own.yaml, field .split.: no training split to draw examples from .*--examples-from"):
        prompting.few_shot("knn:2", ds, ds.schema)
    with pytest.raises(DataError, match="labelled with schema elbow, the reports to label with cmr"):
        prompting.few_shot("few-shot", ds, ds.schema, examples_from="synthetic_elbow")
    assert prompting.few_shot("zero-shot", ds, ds.schema) is None


def _user_manifest(tmp_path, cmr, n=4):
    """A user's evaluation-only CSV in the CMR schema (own column names, no split column): reports the
    project's generator wrote, taken from the test split."""
    test = cmr.split("test").head(n)
    pd.DataFrame({"id": [f"u{i}" for i in range(n)], "report": test.text, "dx": test.label}).to_csv(
        tmp_path / "own.csv", index=False)
    m = tmp_path / "own.yaml"
    m.write_text("name: my_cmr\nschema: cmr\nfiles:\n  - path: own.csv\n"
                 "columns: {id: id, text: report, label: dx}\nsplits: none\n")
    return m


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RADPRIV_MODELS", str(REAL_MODELS))
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)
    return tmp_path


def test_cli_refuses_bad_example_requests_with_one_line(capsys, isolated, cmr):
    if not (REAL_MODELS / "smollm2-135m-instruct.Q4_1.gguf").exists():
        pytest.skip("smollm2-135m not fetched (run `make models`)")
    own = _user_manifest(isolated, cmr)
    base = ["label", "--model", "smollm2-135m", "--out", isolated / "x.csv"]
    cases = [
        (["--manifest", "synthetic_cmr", "--shots", "knn:x"], "use zero-shot, few-shot"),
        (["--manifest", "synthetic_cmr", "--shots", "knn:2", "--split", "train"],
         "include synthetic_cmr's training split, which the examples are retrieved from"),
        (["--manifest", own, "--shots", "knn:2"], "no training split to draw examples from"),
        (["--manifest", own, "--shots", "knn:2", "--examples-from", "synthetic_elbow"],
         "labelled with schema elbow, the reports to label with cmr"),
        (["--manifest", own, "--examples-from", "synthetic_cmr"], "examples go with --shots few-shot or knn:K"),
        (["--manifest", own, "--model", "rules", "--shots", "knn:2"], "the rule baseline reads no examples"),
        (["--manifest", own, "--shots", "knn:2", "--retriever", "bm25"], "invalid choice: 'bm25'"),
    ]
    for extra, message in cases:
        code, _, err = _run(capsys, *base, *extra)
        last = err.strip().splitlines()[-1]  # (argparse prints its usage lines first)
        assert code == 2 and message in last and "error:" in last and "Traceback" not in err, (extra, err)
        assert not (isolated / "x.csv").exists()


@pytest.mark.slow
def test_own_reports_labelled_with_examples_from_the_synthetic_training_split(capsys, isolated, cmr):
    """The new-user path: an evaluation-only CSV of the user's, a bundled model, examples retrieved from the
    synthetic corpus' training split; every input accounted for, the prompts hold the retrieved reports."""
    if not (REAL_MODELS / "smollm2-135m-instruct.Q4_1.gguf").exists():
        pytest.skip("smollm2-135m not fetched (run `make models`)")
    own = _user_manifest(isolated, cmr, n=3)
    out = isolated / "labels.csv"
    code, stdout, err = _run(capsys, "label", "--manifest", own, "--model", "smollm2-135m", "--out", out,
                             "--shots", "knn:2", "--examples-from", "synthetic_cmr", "--quiet")
    assert code == 0, err
    assert "3 inputs = " in stdout and "2 retrieved (tfidf)" in err and "0 non-loopback" in stdout
    assert "'shots': 'knn:2'" in stdout and "'examples_from': 'synthetic_cmr (train, 180 reports)'" in stdout
    answers = pd.read_csv(out)
    assert set(answers.report_id) <= {"u0", "u1", "u2"}
    # the same answers come from the engine called directly with the same retriever (cache keys hold the prompt)
    r = retrieval.ExampleRetriever(cmr.split("train"), cmr.schema, k=2)
    run = engine.label_frame(load_dataset(own).frame, cmr.schema, "smollm2-135m", few_shot=r, progress=False)
    assert run.stats["cache_hits"] == len(answers)
    assert run.answers.reset_index(drop=True).equals(answers)


@pytest.mark.slow
def test_calibrated_configuration_is_the_validation_fitted_bias_applied_to_test_scores(isolated):
    """Study 1's `few-shot/calibrated` configuration, in process on SmolLM2: its predictions are recomputed here
    from the engine's own scoring answers (validation and test) with the bias refitted independently, and its
    uncalibrated twin is the plain arg-max of the same answers."""
    if not (REAL_MODELS / "smollm2-135m-instruct.Q4_1.gguf").exists():
        pytest.skip("smollm2-135m not fetched (run `make models`)")
    from radpriv.evaluate import apply_category_bias, fit_category_bias
    from radpriv.studies import study1

    d = study1.design("synthetic_cmr", ["smollm2-135m"], "few-shot", "template", ["test"], limit=8)
    val = d.dataset.split("validation").head(24)
    d.dataset.frame = d.dataset.frame[~d.dataset.frame.report_id.isin(
        d.dataset.split("validation").report_id[24:])]  # a smaller validation split keeps the test short
    with pytest.raises(ValueError, match="after '/' write template, scoring, calibrated, orders, orders-calibrated or "
                                         "template-calibrated"):
        study1.configurations(d, ["few-shot/platt"])
    conf = study1.configurations(d, ["few-shot/scoring", "few-shot/calibrated", "few-shot/orders"], progress=False,
                                 n_resamples=50)
    cols = [f"p__{c}" for c in d.schema.ids]
    ids = list(d.schema.ids)
    runs = {name: engine.label_frame(frame, d.schema, "smollm2-135m", mode="scoring", few_shot=d.few_shot,
                                     progress=False) for name, frame in (("val", val), ("test", d.evalset))}
    assert all(r.stats["cache_hits"] == r.stats["n_inputs"] for r in runs.values())  # the same prompts
    pv = runs["val"].answers.set_index("report_id").loc[val.report_id, cols].to_numpy()
    pt = runs["test"].answers.set_index("report_id").loc[d.evalset.report_id, cols].to_numpy()
    want = [ids[j] for j in apply_category_bias(pt, fit_category_bias(pv, val.label.map(ids.index))).argmax(1)]
    got = conf.predictions[("smollm2-135m", "few-shot/calibrated")].set_index("report_id").loc[d.evalset.report_id]
    assert got.label.tolist() == want
    plain = conf.predictions[("smollm2-135m", "few-shot/scoring")].set_index("report_id").loc[d.evalset.report_id]
    assert plain.label.tolist() == [ids[j] for j in pt.argmax(1)]
    row = conf.table.set_index("configuration").loc["fixed few-shot, scoring calibrated"]
    assert row["accuracy"] == pytest.approx(np.mean(np.array(want) == d.evalset.label.to_numpy()), abs=1e-4)
    assert "24 validation reports" in " ".join(conf.notes)
    orun = engine.label_frame_orders(d.evalset, d.schema, "smollm2-135m", orders=3, few_shot=d.few_shot,
                                     progress=False)
    assert orun.stats["cache_hits"] == 3 * len(d.evalset)  # the configuration ran the same three prompts
    got = conf.predictions[("smollm2-135m", "few-shot/orders")].set_index("report_id").loc[d.evalset.report_id]
    assert got.label.tolist() == orun.answers.set_index("report_id").loc[d.evalset.report_id].label.tolist()
    row = conf.table.set_index("configuration").loc["fixed few-shot, scoring over 3 option orders"]
    assert row["accuracy"] == pytest.approx(np.mean(got.label.to_numpy() == d.evalset.label.to_numpy()), abs=1e-4)
    fig = conf.figure(d)
    assert len(fig.axes[0].lines) >= 4  # the published rows as reference lines


def test_teacher_examples_come_from_the_public_corpus_never_from_the_reports_it_labels(tmp_path):
    """Study 3's teacher labels training reports whose gold labels a teacher-student setting does not have: its
    examples (retrieved or fixed) come from the labelled public corpus (an independent synthetic draw), with the
    public reports' own reference answers; a schema no generator writes is refused with one line."""
    from radpriv.dp import grid
    from radpriv.schemas import load_schema
    from radpriv.studies import study3

    schema = load_schema("chexpert14")
    pub = grid.public_frame(schema, n=60)
    train = load_dataset("synthetic_cxr").split("train")
    assert study3.teacher_examples(schema, "zero-shot", 60) is None
    r = study3.teacher_examples(schema, "knn:2", 60)
    assert r.texts == pub.text.tolist() and not set(r.texts) & set(train.text)
    assert r.describe()["examples_from"] == "public corpus (60 synthetic reports, seed 1)"
    by_text = pub.set_index("text")
    for report in train.text.head(5):
        pairs = r(report)
        assert len(pairs) == 2
        for text, answer in pairs:
            assert answer == answer_json(schema, by_text.loc[text].to_dict())
    fixed = study3.teacher_examples(schema, "few-shot", 60)
    assert fixed and all(t in set(pub.text) for t, _ in fixed)
    p = tmp_path / "knee.yaml"
    p.write_text("name: knee\ntask: multilabel\nfindings:\n  - {id: effusion}\n  - {id: fracture}\n")
    with pytest.raises(ValueError, match="teacher_shots knn:2: the teacher's examples come from the labelled public "
                                         "corpus, and no synthetic generator writes schema 'knee'; set teacher_shots: "
                                         "zero-shot"):
        study3.teacher_examples(load_schema(str(p)), "knn:2", 60)
