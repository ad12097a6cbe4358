"""Study 3 smoke run, checked by recomputing its numbers: one run of the notebook (module fixture) whose saved
results (``_results/03_dp_lora.json``, :func:`radpriv.run.save_results`) give a headline run's reference labels,
probabilities and thresholds (weighted/macro F1 recomputed here by hand), every run's row (the summary and its
intervals recomputed), the accountant's inputs (ε recomputed with dp_accounting's PLD accountant, not the opacus
PRV accountant the notebook's ε comes from) and the trend table (recomputed with scipy's Kendall τ).

The smoke profile is run with three ε values (two more than its file) so that the trend test is shown and can be
recomputed; with two the notebook prints a sentence instead (tests/test_dp_summary.py checks that path)."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats as sps

from radpriv import run
from radpriv.data import load_dataset
from radpriv.dp import grid
from conftest import assert_clean_reader_page

pytestmark = pytest.mark.slow

STEM = "03_dp_lora"
EPSILONS = [0.1, 1.0, 10.0]
# the smoke profile trains only dp-head from the random init too; the test runs every DP mode from both
OVERRIDES = {"epsilons": EPSILONS, "random_init_modes": None}


@pytest.fixture(scope="module")
def study3(tmp_path_factory):
    out = tmp_path_factory.mktemp("study3")
    rec = run.execute(STEM, "smoke", overrides=OVERRIDES, out_dir=out)
    return {"out": out, "rec": rec, "res": run.load_results(STEM, out),
            "params": run.load_params(STEM, "smoke", overrides=OVERRIDES)}


def _num(v):
    """A saved number back as a float (save_results writes ∞ as "inf" and NaN as null)."""
    return float("nan") if v is None else float(v)


def _close(a, b, tol=1e-9):
    a, b = _num(a), _num(b)
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= tol


def _f1_by_hand(Y, pred, average):
    """Multi-label F1 over the labels with at least one reference positive, from TP/FP/FN counts."""
    tp = (Y & pred).sum(0)
    fp = ((1 - Y) & pred).sum(0)
    fn = (Y & (1 - pred)).sum(0)
    support = Y.sum(0)
    keep = support > 0
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)[keep]
    if average == "macro":
        return float(f1.mean())
    return float((f1 * support[keep]).sum() / support[keep].sum())


def test_report_renders_every_section(study3):
    assert study3["rec"]["status"] == "ok", study3["rec"]
    html = (study3["out"] / f"{STEM}.html").read_text()
    assert_clean_reader_page(html, study3["out"])
    for needle in ("tfidf-logreg", "dp-tfidf-linear", "dp-lora", "Accounting audit", "dp_accounting PLD",
                   "Public then private", "student F1 (teacher labels)", "Kendall", "Provenance", "published",
                   "as its runs used them", "physical_batch_size", "Student t 95 %", "Results file"):
        assert needle in html, needle
    assert html.count("data:image/png") >= 2  # privacy-utility curve and loss curves are embedded
    nb = json.loads((study3["out"] / "_executed" / f"{STEM}.ipynb").read_text())
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))


def test_headline_f1_recomputed_from_labels_probabilities_and_thresholds(study3):
    h, params = study3["res"]["headline"], study3["params"]
    assert (h["mode"], h["init"], _num(h["epsilon"]), h["seed"]) == ("dp-lora", "none", max(EPSILONS), 0)
    # the saved reference labels are the test split's
    expected = grid.prepare(load_dataset(h["dataset"]), params["limit"])["test"].Y
    Y = np.asarray(h["test_Y"], dtype=int)
    np.testing.assert_array_equal(Y, expected)
    P, th = np.asarray(h["test_proba"], float), np.asarray(h["thresholds"], float)
    assert P.shape == Y.shape and th.shape == (Y.shape[1],) and ((th >= 0.05) & (th <= 0.95)).all()
    pred = (P >= th).astype(int)
    for avg in ("weighted", "macro"):
        assert h[f"{avg}_f1"] == pytest.approx(_f1_by_hand(Y, pred, avg), abs=1e-12), avg
    # the same number in the per-run table and (one seed) in the summary
    name = f"{h['dataset']} · dp-lora"
    row = [r for r in study3["res"]["runs"] if r["mode"] == name and r["init"] == "none"
           and _num(r["epsilon"]) == max(EPSILONS) and r["seed"] == 0]
    assert len(row) == 1 and row[0]["weighted_f1"] == pytest.approx(h["weighted_f1"], abs=1e-12)
    srow = [s for s in study3["res"]["summary"] if s["mode"] == name and s["init"] == "none"
            and _num(s["epsilon"]) == max(EPSILONS)]
    assert len(srow) == 1 and srow[0]["weighted_f1"] == pytest.approx(h["weighted_f1"], abs=1e-12)


def test_summary_recomputed_from_the_per_seed_rows(study3):
    runs, summary = study3["res"]["runs"], study3["res"]["summary"]
    groups = {}
    for r in runs:
        groups.setdefault((r["mode"], r["init"], _num(r["epsilon"])), []).append(r)
    assert {(s["mode"], s["init"], _num(s["epsilon"])) for s in summary} == set(groups)
    assert len(summary) == len(groups)
    for s in summary:
        g = groups[(s["mode"], s["init"], _num(s["epsilon"]))]
        assert s["seeds"] == len(g)
        for metric in ("weighted_f1", "macro_f1"):
            vals = [r[metric] for r in g]
            if len(g) == 1:  # one seed: that run's bootstrap CI
                want = (vals[0], g[0][f"{metric}_lo"], g[0][f"{metric}_hi"])
                assert s["interval"] == f"bootstrap 95% CI of seed {g[0]['seed']} (one seed)"
            else:  # mean of the per-seed F1 ± t·s/√n, clipped to [0, 1]
                m, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
                half = sps.t.ppf(0.975, len(vals) - 1) * sd / math.sqrt(len(vals))
                want = (m, max(0.0, m - half), min(1.0, m + half))
                assert s["interval"] == f"t 95% over {len(g)} seeds"
            got = (s[metric], s[f"{metric}_lo"], s[f"{metric}_hi"])
            assert all(_close(a, b) for a, b in zip(got, want)), (s["mode"], metric, got, want)
            if not math.isnan(_num(got[1])):
                assert _num(got[1]) <= _num(got[0]) <= _num(got[2])
        assert _close(s["achieved_epsilon"], max(_num(r["achieved_epsilon"]) for r in g))


def test_epsilon_recomputed_with_an_independent_accountant(study3):
    """Each DP encoder run's ε (opacus PRV, what the report shows) recomputed from its (σ, q, steps, δ) with
    dp_accounting's PLD accountant; opacus's PRV estimate is an upper estimate within eps_error = 0.01."""
    runs, params = study3["res"]["runs"], study3["params"]
    dp = [r for r in runs if r["sigma"] is not None]
    dp_modes = [m for m in params["modes"] if m.startswith("dp")]  # each from random and from public init
    n_dp_encoder = len(EPSILONS) * 2 * len(params["seeds"]) * len(dp_modes)
    assert len(dp) == n_dp_encoder, [r["mode"] for r in dp]
    for r in dp:
        mode = r["mode"].split(" · ", 1)[1]
        epochs = {**params["train"], **params.get("train_by_mode", {}).get(mode, {})}["epochs"]
        assert r["delta"] == pytest.approx(1 / (10 * r["n_train"]))
        assert r["steps"] * r["q"] == pytest.approx(epochs)
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
        acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            r["q"], dp_accounting.GaussianDpEvent(r["sigma"])), int(r["steps"])))
        pld = acc.get_epsilon(r["delta"])
        ach = _num(r["achieved_epsilon"])
        assert abs(ach - pld) <= 0.01 + 0.02 * pld, (r["mode"], r["epsilon"], ach, pld)
        assert ach <= r["target_epsilon"] * 1.02
        assert _num(r["target_epsilon"]) == _num(r["epsilon"])
    audit = study3["res"]["accounting"]
    assert len(audit) >= n_dp_encoder and all(a["ok"] for a in audit)


def test_trend_recomputed_with_scipy_kendalltau(study3):
    res = study3["res"]
    assert res["trend_note"] == ""
    points = {}
    for r in res["runs"]:
        dataset, mode = r["mode"].split(" · ", 1)
        if mode.startswith("dp"):
            points.setdefault((dataset, mode, r["init"]), []).append((_num(r["epsilon"]), r["weighted_f1"]))
    assert {(t["dataset"], t["mode"], t["init"]) for t in res["trend"]} == set(points)
    dp_modes = [m for m in study3["params"]["modes"] if m.startswith("dp")]
    assert len(points) == 2 * len(dp_modes) + 1  # each DP encoder mode from random and public init; dp-tfidf-linear
    for t in res["trend"]:
        x, y = zip(*points[(t["dataset"], t["mode"], t["init"])])
        ref = sps.kendalltau(x, y)
        assert t["ε levels"] == len(set(x)) == len(EPSILONS) and t["runs"] == len(x)
        assert _close(t["tau"], ref.statistic, 1e-12) and _close(t["pvalue"], ref.pvalue, 1e-12), t


def test_teacher_row_recomputed_from_the_teachers_labels(study3):
    """The teacher's row: its examples are the profile's ``teacher_shots`` (drawn from the public corpus), and its
    F1 against the gold labels of the reports it labelled is recomputed by hand from the same labels (asked again
    of the engine with the same examples: served from the answer cache the notebook filled)."""
    from radpriv.studies import study3 as s3

    params = study3["params"]
    rows = study3["res"]["teacher"]
    assert rows, "the smoke profile names a teacher model: its rows must be saved"
    ds = load_dataset(rows[0]["dataset"])
    frame = ds.split("train").head(params["teacher_limit"])
    assert {r["teacher examples"] for r in rows} == {params.get("teacher_shots", "knn:2")}
    assert {r["reports labelled"] for r in rows} == {len(frame)}
    few = s3.teacher_examples(ds.schema, params.get("teacher_shots", "knn:2"), params["public_n"])
    Yt, stats = s3.teacher_labels(frame, ds.schema, params["teacher_model"], mode=params.get("teacher_mode", "template"),
                                  progress=False, few_shot=few)
    assert stats["n_failures"] == rows[0]["teacher failures"]
    gold = grid.Split.from_frame(frame, list(ds.schema.ids)).Y.astype(int)
    f1 = _f1_by_hand(gold, Yt.astype(int), "weighted")
    for r in rows:
        assert _close(r["teacher F1 vs gold (train)"], f1, 1e-9), (r["teacher F1 vs gold (train)"], f1)
