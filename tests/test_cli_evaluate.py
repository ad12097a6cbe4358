"""`radpriv label --model rules` and `radpriv evaluate`: numbers checked against independent computations
(numpy, scipy.stats.binomtest, a hand Holm), the files written, and every refused input's message.

Datasets are invented here (a 3-category single-label schema and a 3-finding multi-label schema; the text
is made up, never real report text) or the bundled synthetic corpora, generated locally."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chi2

from radpriv.cli import main

CATS = ["benign", "malignant", "indeterminate"]
FINDINGS = ["effusion", "nodule", "fracture"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("RADPRIV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RADPRIV_MODELS", str(tmp_path / "models"))
    # synthetic corpora: generated once for this module, not per test
    monkeypatch.setenv("RADPRIV_DATA", str(tmp_path_factory.getbasetemp() / "evaluate-data"))
    monkeypatch.delenv("RADPRIV_ALLOW_HOSTS", raising=False)
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_single(tmp_path, n=40, seed=1):
    """A single-label dataset (schema `lesion3`, 3 categories), every report a test report."""
    (tmp_path / "lesion3.yaml").write_text(
        "name: lesion3\ntitle: Invented lesion categories\ntask: single\nfindings:\n"
        "  - {id: benign, label: Benign}\n  - {id: malignant, label: Malignant}\n"
        "  - {id: indeterminate, label: Indeterminate lesion}\n")
    rng = np.random.default_rng(seed)
    labels = rng.choice(CATS, size=n, p=[0.5, 0.3, 0.2])
    pd.DataFrame({"rid": [f"r{i:03d}" for i in range(n)],
                  "body": [f"Invented report number {i}, category {c}." for i, c in enumerate(labels)],
                  "truth": labels}).to_csv(tmp_path / "single.csv", index=False)
    m = tmp_path / "single.yaml"
    m.write_text("name: invented_single\nschema: lesion3.yaml\nfiles:\n  - path: single.csv\n"
                 "columns: {id: rid, text: body, label: truth}\nsplits: none\n")
    return m, pd.DataFrame({"report_id": [f"r{i:03d}" for i in range(n)], "label": labels})


def write_multi(tmp_path, n=40, seed=2):
    """A multi-label dataset (schema `chest3`, 3 findings) with a train/test split column; `fracture` is
    never present in the reference, only uncertain (so it is in the macro set only under `inclusive`)."""
    (tmp_path / "chest3.yaml").write_text(
        "name: chest3\ntask: multilabel\nfindings:\n  - {id: effusion}\n  - {id: nodule}\n  - {id: fracture}\n")
    rng = np.random.default_rng(seed)
    states = ["present", "absent", "uncertain", "not_mentioned"]
    df = pd.DataFrame({"rid": [f"m{i:03d}" for i in range(n)],
                       "body": [f"Invented chest report {i}." for i in range(n)],
                       "split": ["train" if i % 4 == 0 else "test" for i in range(n)],
                       "effusion": rng.choice(states, size=n), "nodule": rng.choice(states, size=n),
                       "fracture": rng.choice(["absent", "uncertain", "not_mentioned"], size=n)})
    df.to_csv(tmp_path / "multi.csv", index=False)
    m = tmp_path / "multi.yaml"
    m.write_text("name: invented_multi\nschema: chest3.yaml\nfiles:\n  - path: multi.csv\n"
                 "columns: {id: rid, text: body, split: split, labels: [effusion, nodule, fracture]}\n")
    return m, df.rename(columns={"rid": "report_id"})


def perturb_single(truth, k, seed):
    """A copy of the reference with k labels (chosen at random) replaced by another category."""
    rng = np.random.default_rng(seed)
    pred = truth.copy()
    for i in rng.choice(len(pred), size=k, replace=False):
        pred.loc[i, "label"] = next(c for c in rng.permutation(CATS) if c != pred.loc[i, "label"])
    return pred


def metric(metrics, system, label, name):
    row = metrics[(metrics.system == system) & (metrics.label == label) & (metrics.metric == name)]
    assert len(row) == 1, (system, label, name)
    return row.iloc[0]


def prf(t, p):
    """precision, recall, F1 of one class from 0/1 vectors (0 when undefined), with numpy only."""
    tp, fp, fn = int(np.sum(t & p)), int(np.sum(~t & p)), int(np.sum(t & ~p))
    pr = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    return pr, rc, (2 * pr * rc / (pr + rc) if pr + rc else 0.0)


# --------------------------------------------------------------------------------------------- numbers


def test_single_label_metrics_match_numpy_and_mcnemar_matches_binomtest(capsys, tmp_path):
    manifest, truth = write_single(tmp_path)
    preds = {"a": perturb_single(truth, 4, seed=10), "b": perturb_single(truth, 9, seed=11),
             "c": perturb_single(truth, 15, seed=12)}
    files = []
    for name, df in preds.items():
        df.sample(frac=1, random_state=3).to_csv(tmp_path / f"{name}.csv", index=False)  # row order must not matter
        files += ["--pred", tmp_path / f"{name}.csv"]
    out = tmp_path / "ev"
    code, stdout, err = run(capsys, "evaluate", "--manifest", manifest, *files, "--out", out, "--n-resamples", "200")
    assert code == 0, err
    metrics, pairs = pd.read_csv(out / "metrics.csv"), pd.read_csv(out / "pairs.csv")
    yt = truth["label"].to_numpy()
    for name, df in preds.items():
        yp = df["label"].to_numpy()
        assert metric(metrics, name, "all", "accuracy")["value"] == pytest.approx(np.mean(yt == yp))
        per = {c: prf(yt == c, yp == c) for c in CATS}
        support = np.array([np.sum(yt == c) for c in CATS])
        for c in CATS:
            for j, m in enumerate(("precision", "recall", "f1")):
                assert metric(metrics, name, c, m)["value"] == pytest.approx(per[c][j])
            assert metric(metrics, name, c, "f1")["support"] == np.sum(yt == c)
        for j, m in enumerate(("precision", "recall", "f1")):
            vals = np.array([per[c][j] for c in CATS])
            assert metric(metrics, name, "macro", m)["value"] == pytest.approx(vals.mean())
            assert metric(metrics, name, "weighted", m)["value"] == pytest.approx(np.average(vals, weights=support))
        for _, r in metrics[metrics.system == name].iterrows():  # every value inside its percentile interval
            assert r.ci_lo - 1e-12 <= r.value <= r.ci_hi + 1e-12 and r.n_reports == len(truth)
    # McNemar per pair on per-report correctness, exact binomial (< 25 discordant pairs)
    assert len(pairs) == 3
    right = {k: df["label"].to_numpy() == yt for k, df in preds.items()}
    for a, b in itertools.combinations(preds, 2):
        r = pairs[(pairs.system_a == a) & (pairs.system_b == b)].iloc[0]
        only_a, only_b = int(np.sum(right[a] & ~right[b])), int(np.sum(~right[a] & right[b]))
        assert (r.only_a_right, r.only_b_right) == (only_a, only_b) and r.test == "exact binomial"
        assert r.p == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    # Holm over the 3 pairs, by hand: sorted p times (3, 2, 1), made monotone, capped at 1
    order = np.argsort(pairs.p.to_numpy())
    adj, running = np.empty(3), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * pairs.p.iloc[i]))
        adj[i] = running
    assert pairs.p_holm.to_numpy() == pytest.approx(adj)
    assert "class set: the 3 of 3 categories of schema lesion3" in stdout and "Holm-corrected over all 3 pairs" in stdout


def test_many_discordant_pairs_use_chi_square_with_continuity_correction(capsys, tmp_path):
    manifest, truth = write_single(tmp_path, n=80)
    a, b = perturb_single(truth, 2, seed=1), perturb_single(truth, 40, seed=2)
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    code, _, err = run(capsys, "evaluate", "--manifest", manifest, "--pred", tmp_path / "a.csv", "--pred",
                       tmp_path / "b.csv", "--out", tmp_path / "ev", "--n-resamples", "0")
    assert code == 0, err
    r = pd.read_csv(tmp_path / "ev" / "pairs.csv").iloc[0]
    yt = truth["label"].to_numpy()
    ra, rb = a["label"].to_numpy() == yt, b["label"].to_numpy() == yt
    n10, n01 = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb))
    assert n10 + n01 >= 25 and r.test.startswith("chi-square")
    assert r.p == pytest.approx(chi2.sf((abs(n10 - n01) - 1) ** 2 / (n10 + n01), 1))
    assert r.p_holm == pytest.approx(r.p)  # one pair: Holm changes nothing
    m = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert m.ci_lo.isna().all()  # --n-resamples 0: no intervals


@pytest.mark.parametrize("policy", ["exclusive", "inclusive"])
def test_multi_label_metrics_follow_the_binarisation_policy(capsys, tmp_path, policy):
    manifest, ref = write_multi(tmp_path)
    rng = np.random.default_rng(5)
    states = np.array(["present", "absent", "uncertain", "not_mentioned"])
    pred = ref[["report_id", *FINDINGS]].copy()
    for f in FINDINGS:  # a third of the cells changed at random
        idx = rng.choice(len(pred), size=len(pred) // 3, replace=False)
        pred.loc[idx, f] = rng.choice(states, size=len(idx))
    pred.to_csv(tmp_path / "pred.csv", index=False)  # train reports included: counted, not scored
    code, stdout, err = run(capsys, "evaluate", "--manifest", manifest, "--pred", tmp_path / "pred.csv",
                            "--out", tmp_path / "ev", "--policy", policy, "--n-resamples", "100")
    assert code == 0, err
    metrics = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    test = ref["split"] == "test"
    pos = ["present", "uncertain"] if policy == "inclusive" else ["present"]
    T = ref.loc[test, FINDINGS].isin(pos).to_numpy()
    P = pred.loc[test.to_numpy(), FINDINGS].isin(pos).to_numpy()
    per = [prf(T[:, j], P[:, j]) for j in range(3)]
    for j, f in enumerate(FINDINGS):
        assert metric(metrics, "pred", f, "f1")["value"] == pytest.approx(per[j][2])
        assert metric(metrics, "pred", f, "f1")["support"] == T[:, j].sum()
    keep = T.sum(axis=0) > 0
    assert keep.tolist() == [True, True, policy == "inclusive"]  # fracture: only uncertain in the reference
    macro = np.mean([per[j][2] for j in range(3) if keep[j]])
    assert metric(metrics, "pred", "macro", "f1")["value"] == pytest.approx(macro)
    assert metric(metrics, "pred", "weighted", "f1")["value"] == pytest.approx(
        np.average([p[2] for p in per], weights=T.sum(axis=0)))
    assert metric(metrics, "pred", "all", "exact_match")["value"] == pytest.approx(np.mean((T == P).all(axis=1)))
    assert f"binarisation policy: {policy}" in stdout
    assert f"class set: the {int(keep.sum())} of 3 findings of schema" in stdout
    assert ("left out (no reference report): fracture" in stdout) == (policy == "exclusive")
    assert f"{int((~test).sum())} answers for reports outside split test not scored" in stdout


def test_recorded_failures_are_scored_as_wrong(capsys, tmp_path):
    manifest, truth = write_single(tmp_path, n=30)
    answers = truth.iloc[3:]  # perfect answers, except 3 reports that failed
    answers.to_csv(tmp_path / "llm.csv", index=False)
    pd.DataFrame({"report_id": truth.report_id[:3], "reason": "timeout", "detail": ""}).to_csv(
        tmp_path / "llm.failures.csv", index=False)
    code, stdout, err = run(capsys, "evaluate", "--manifest", manifest, "--pred", tmp_path / "llm.csv",
                            "--out", tmp_path / "ev", "--n-resamples", "0")
    assert code == 0, err
    m = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert metric(m, "llm", "all", "accuracy")["value"] == pytest.approx(27 / 30)
    assert "3 reports recorded as failures in" in stdout and "scored as wrong" in stdout


# --------------------------------------------------------------------------------------------- end to end


def test_label_with_rules_then_evaluate_against_a_perturbed_copy(capsys, tmp_path):
    out = tmp_path / "rules.csv"
    code, stdout, err = run(capsys, "label", "--manifest", "synthetic_cmr", "--model", "rules", "--split", "test",
                            "--out", out, "--quiet")
    assert code == 0, err
    assert "60 inputs = 60 answers + 0 failures" in stdout and "0 non-loopback" in stdout
    answers = pd.read_csv(out)
    assert list(answers.columns) == ["report_id", "label"] and len(answers) == 60
    assert pd.read_csv(tmp_path / "rules.failures.csv").empty
    # the perturbed copy: 8 reports the rules got right now get a wrong category
    from radpriv.data import load_dataset

    ref = load_dataset("synthetic_cmr").split("test").set_index("report_id")["label"]
    cats = sorted(ref.unique())
    right = answers.index[answers["label"].to_numpy() == ref.loc[answers.report_id].to_numpy()][:8]
    worse = answers.copy()
    worse.loc[right, "label"] = [next(c for c in cats if c != ref[r]) for r in worse.loc[right, "report_id"]]
    worse.to_csv(tmp_path / "worse.csv", index=False)
    code, stdout, err = run(capsys, "evaluate", "--manifest", "synthetic_cmr", "--pred", out, "--pred",
                            tmp_path / "worse.csv", "--name", "rules", "--name", "worse", "--n-resamples", "100")
    assert code == 0, err
    ev = tmp_path / "evaluation"  # default: next to the first --pred
    for f in ("metrics.csv", "pairs.csv", "evaluation.html"):
        assert (ev / f).is_file()
    pairs = pd.read_csv(ev / "pairs.csv")
    assert (pairs.only_a_right.iloc[0], pairs.only_b_right.iloc[0]) == (8, 0)
    assert pairs.p.iloc[0] == pytest.approx(binomtest(8, 8, 0.5).pvalue)
    m = pd.read_csv(ev / "metrics.csv")
    acc = {s: metric(m, s, "all", "accuracy")["value"] for s in ("rules", "worse")}
    assert acc["rules"] - acc["worse"] == pytest.approx(8 / 60)
    page = (ev / "evaluation.html").read_text()
    assert page.count("<table>") == 4  # systems, rules, worse, pairs
    for text in ("class set: the 7 of 7 categories of schema cmr", "percentile bootstrap 95 % CI", "McNemar",
                 "<h2>rules</h2>", "<h2>worse</h2>", "dilated_cardiomyopathy", "binarisation policy"):
        assert text in page
    assert "<script" not in page and "src=" not in page and "href=" not in page and "http" not in page
    assert "McNemar between systems (Holm over 1 pair)" in stdout


def test_label_with_rules_multilabel_output_is_evaluable(capsys, tmp_path):
    out = tmp_path / "thumb.csv"
    code, _, err = run(capsys, "label", "--manifest", "synthetic_thumb", "--model", "rules", "--split", "test",
                       "--limit", "20", "--out", out, "--quiet")
    assert code == 0, err
    from radpriv.schemas import load_schema

    assert list(pd.read_csv(out).columns) == ["report_id", *load_schema("thumb").ids]
    code, stdout, err = run(capsys, "evaluate", "--manifest", "synthetic_thumb", "--pred", out, "--n-resamples", "0")
    assert code == 2 and "38 of the 58 test reports of synthetic_thumb have no prediction" in err  # --limit 20
    code, stdout, err = run(capsys, "label", "--manifest", "synthetic_thumb", "--model", "rules", "--split", "test",
                            "--out", out, "--quiet")
    code, stdout, err = run(capsys, "evaluate", "--manifest", "synthetic_thumb", "--pred", out, "--n-resamples", "0",
                            "--policy", "inclusive")
    assert code == 0, err
    assert "exact_match" in stdout and "test: none (one system" in stdout
    assert pd.read_csv(tmp_path / "evaluation" / "pairs.csv").empty


def test_label_with_your_own_rules_file_or_the_manifests(capsys, tmp_path):
    manifest, _ = write_multi(tmp_path)
    rules = tmp_path / "chest3_rules.yaml"
    rules.write_text("findings:\n  effusion: [effusion]\n  nodule: [nodule]\n  fracture: [fracture]\n")
    code, _, err = run(capsys, "label", "--manifest", manifest, "--model", "rules", "--out", tmp_path / "a.csv")
    assert code == 2
    assert err.strip() == (f"error: no rules for schema chest3 (manifest {manifest}); write a rules file (see "
                           "radpriv.baselines.rules) and pass --rules FILE or name it in the manifest's rules:")
    code, stdout, err = run(capsys, "label", "--manifest", manifest, "--model", "rules", "--rules", rules,
                            "--out", tmp_path / "a.csv")
    assert code == 0, err
    assert "40 inputs = 40 answers + 0 failures" in stdout
    manifest.write_text(manifest.read_text() + "rules: chest3_rules.yaml\n")
    code, stdout, err = run(capsys, "label", "--manifest", manifest, "--model", "rules", "--out", tmp_path / "b.csv")
    assert code == 0, err
    assert f"rules: {rules}" in stdout
    assert pd.read_csv(tmp_path / "a.csv").equals(pd.read_csv(tmp_path / "b.csv"))
    code, _, err = run(capsys, "label", "--manifest", manifest, "--model", "rules", "--mode", "scoring",
                       "--out", tmp_path / "c.csv")
    assert code == 2 and "the rule baseline has no scoring mode" in err


def test_rules_option_goes_with_model_rules(capsys, tmp_path):
    code, _, err = run(capsys, "label", "--manifest", "synthetic_cmr", "--model", "smollm2-135m", "--rules",
                       tmp_path / "r.yaml", "--out", tmp_path / "x.csv")
    assert code == 2 and "a rules file goes with --model rules" in err


# --------------------------------------------------------------------------------------------- refused inputs


@pytest.fixture
def single(tmp_path):
    manifest, truth = write_single(tmp_path, n=20)
    return manifest, truth


def evaluate_one(capsys, manifest, df, tmp_path, *extra, name="pred.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    code, out, err = run(capsys, "evaluate", "--manifest", manifest, "--pred", path, "--out", tmp_path / "ev",
                         "--n-resamples", "0", *extra)
    return code, err.strip(), path


def assert_one_error_line(code, err):
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_refuses_report_ids_not_in_the_manifest(capsys, tmp_path, single):
    manifest, truth = single
    df = pd.concat([truth, pd.DataFrame({"report_id": ["ghost-1", "ghost-2"], "label": ["benign", "benign"]})])
    code, err, path = evaluate_one(capsys, manifest, df, tmp_path)
    assert_one_error_line(code, err)
    assert err == (f"error: 2 report ids not in manifest invented_single: 'ghost-1', 'ghost-2' ({path}, rows 21, 22); "
                   "score predictions against the manifest they were made for (--manifest), or remove these rows")
    assert not (tmp_path / "ev").exists()


def test_refuses_missing_reports_of_the_split(capsys, tmp_path, single):
    manifest, truth = single
    code, err, path = evaluate_one(capsys, manifest, truth.iloc[3:], tmp_path)
    assert_one_error_line(code, err)
    assert err.startswith("error: 3 of the 20 test reports of invented_single have no prediction: 'r000', 'r001', "
                          f"'r002' ({path}); label them (radpriv label --manifest {manifest} --split test ...), or "
                          "evaluate another split with --split (the predictions cover: test)")


def test_missing_reports_suggest_the_split_the_predictions_cover(capsys, tmp_path):
    manifest, ref = write_multi(tmp_path)
    train = ref[ref.split == "train"][["report_id", *FINDINGS]]
    code, err, _ = evaluate_one(capsys, manifest, train, tmp_path)
    assert_one_error_line(code, err)
    assert "30 of the 30 test reports of invented_multi have no prediction" in err
    assert "(the predictions cover: train)" in err
    code, err, _ = evaluate_one(capsys, manifest, train, tmp_path, "--split", "train")
    assert code == 0, err


@pytest.mark.parametrize("drop, message", [
    (["label"], "1 column missing: 'label'"),
    (["report_id"], "1 column missing: 'report_id'"),
])
def test_refuses_predictions_without_the_label_column(capsys, tmp_path, single, drop, message):
    manifest, truth = single
    code, err, path = evaluate_one(capsys, manifest, truth.drop(columns=drop), tmp_path)
    assert_one_error_line(code, err)
    assert err.startswith(f"error: {message} ({path}; columns present: ")
    assert err.endswith("give the answers CSV of `radpriv label`: report_id + label (one category id per report)")


def test_refuses_multilabel_predictions_without_a_finding_column(capsys, tmp_path):
    manifest, ref = write_multi(tmp_path)
    code, err, path = evaluate_one(capsys, manifest, ref[["report_id", "effusion"]], tmp_path)
    assert_one_error_line(code, err)
    assert err == (f"error: 2 columns missing: 'nodule', 'fracture' ({path}; columns present: report_id, effusion); "
                   "give the answers CSV of `radpriv label`: report_id + one state column per finding of schema chest3")


def test_refuses_values_outside_the_categories(capsys, tmp_path, single):
    manifest, truth = single
    df = truth.copy()
    df.loc[[4, 9], "label"] = ["Malignant", "cyst"]
    code, err, path = evaluate_one(capsys, manifest, df, tmp_path)
    assert_one_error_line(code, err)
    assert err == (f"error: 2 values outside the categories of schema lesion3: 'Malignant' (1), 'cyst' (1) ({path}, "
                   "column 'label', rows 5, 10, first report 'r004'); did you mean 'malignant'? use the category "
                   "ids: benign, malignant, indeterminate")


def test_refuses_values_outside_the_label_states(capsys, tmp_path):
    manifest, ref = write_multi(tmp_path)
    df = ref[["report_id", *FINDINGS]].copy()
    df.loc[2, "nodule"] = "maybe"
    code, err, path = evaluate_one(capsys, manifest, df, tmp_path)
    assert_one_error_line(code, err)
    assert err == (f"error: 1 value outside the label states: 'maybe' (1) ({path}, column 'nodule', row 3, first "
                   "report 'm002'); use present, absent, uncertain or not_mentioned")


def test_refuses_duplicate_report_ids(capsys, tmp_path, single):
    manifest, truth = single
    df = pd.concat([truth, truth.iloc[[5]]], ignore_index=True)
    code, err, path = evaluate_one(capsys, manifest, df, tmp_path)
    assert_one_error_line(code, err)
    assert err == (f"error: 1 report id predicted more than once, e.g. 'r005' in rows 6, 21 ({path}); keep one "
                   "prediction per report (duplicated ids in all: 'r005')")


def test_manifest_errors_are_the_data_errors(capsys, tmp_path, single):
    _, truth = single
    truth.to_csv(tmp_path / "p.csv", index=False)
    code, _, err = run(capsys, "evaluate", "--manifest", "no_such_manifest", "--pred", tmp_path / "p.csv")
    assert_one_error_line(code, err.strip())
    assert "no manifest named 'no_such_manifest'" in err


@pytest.mark.parametrize("extra, message", [
    (["--name", "a", "--name", "b"], "2 --name for 1 --pred; give one --name per --pred"),
    (["--split", "holdout"], "invalid choice: 'holdout'"),
    (["--n-resamples", "-1"], "must be 0 or more"),
])
def test_bad_evaluate_arguments(capsys, tmp_path, single, extra, message):
    manifest, truth = single
    truth.to_csv(tmp_path / "p.csv", index=False)
    try:
        code = main(["evaluate", "--manifest", str(manifest), "--pred", str(tmp_path / "p.csv"), *extra])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_missing_prediction_file(capsys, tmp_path, single):
    manifest, _ = single
    code, _, err = run(capsys, "evaluate", "--manifest", manifest, "--pred", tmp_path / "nope.csv")
    assert_one_error_line(code, err.strip())
    assert f"predictions file not found ({tmp_path / 'nope.csv'})" in err


def test_library_use_with_frames(tmp_path):
    from radpriv.data import load_dataset
    from radpriv.evaluate.report import EvaluationError, evaluate_predictions

    manifest, truth = write_single(tmp_path, n=20)
    ds = load_dataset(manifest)
    metrics, pairs = evaluate_predictions(ds, {"same": truth, "worse": perturb_single(truth, 5, 0)}, split="all",
                                          n_resamples=0)
    assert metric(metrics, "same", "macro", "f1")["value"] == 1.0 and len(pairs) == 1
    with pytest.raises(EvaluationError, match="not in manifest invented_single: 'x'"):
        evaluate_predictions(ds, {"bad": pd.DataFrame({"report_id": ["x"], "label": ["benign"]})}, n_resamples=0)
    glued = pd.concat([truth, pd.DataFrame({"report_id": ["x"], "label": ["benign"]})])  # index 0..19, 0
    with pytest.raises(EvaluationError, match=r"\(predictions 'bad', row 21\)"):
        evaluate_predictions(ds, {"bad": glued}, n_resamples=0)
