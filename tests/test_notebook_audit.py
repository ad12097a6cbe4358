"""Privacy-audit notebook (issues 6, 15): one smoke papermill run per session; its saved results and inputs
are checked by recomputing the headline figures independently (sklearn AUC, scipy binomial tails, pandas
means), not by looking for words."""

import json
import math

import numpy as np
import pytest

from radpriv import run
from conftest import assert_clean_reader_page

pytestmark = pytest.mark.slow

STEM = "04_privacy_audit"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit_smoke")
    rec = run.execute(STEM, "smoke", out_dir=out)
    return {"rec": rec, "out": out, "res": run.load_results(STEM, out),
            "nb": json.loads((out / "_executed" / f"{STEM}.ipynb").read_text()),
            "html": (out / f"{STEM}.html").read_text()}


def _params(smoke):
    return {**run.notebook_parameters(STEM), **smoke["rec"]["parameters"]}


def _num(x):
    return math.inf if x == "inf" else (math.nan if x is None else float(x))


def test_runs_without_errors_and_renders_figures_and_provenance(smoke):
    assert smoke["rec"]["status"] == "ok"
    assert_clean_reader_page(smoke["html"], smoke["out"])
    cells = [c for c in smoke["nb"]["cells"] if c["cell_type"] == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])) >= 3
    from radpriv.data import load_dataset

    assert load_dataset(_params(smoke)["manifest"]).sha256 in smoke["html"]   # the data's sha256 in the provenance


def test_attack_auc_recomputed_with_sklearn(smoke):
    from sklearn.metrics import roc_auc_score

    mia = smoke["res"]["mia"]
    y = np.array(mia["member"])
    assert len(y) == len(mia["audit_rows"]) == 2 * _params(smoke)["mia_n_members"]
    assert len(mia["table"]) == 2 * len(mia["scores"])
    for row in mia["table"]:
        s = np.array(mia["scores"][row["model"]][row["attack"]])
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        assert row["n_members"] == int(y.sum())


def test_one_run_epsilon_recomputed_with_scipy_binomial(smoke):
    """From the saved inclusion draw and scores: the guesses of every (k₊, k₋) of the saved grid, their
    correct count, and the largest ε whose (ε, δ) p-value is ≤ β/(2·grid) -- written here from scipy's
    binomial, not with radpriv -- must give the reported bound, which must stay ≤ the accountant's ε."""
    from scipy import optimize, stats

    mia = smoke["res"]["mia"]
    y = np.where(np.array(mia["member"]) == 1, 1, -1)
    m, grid = len(y), mia["grid"]
    level_beta = (1 - mia["confidence"]) / (2 * len(grid))

    def pval(r, v, eps, delta):
        q = 1 / (1 + math.exp(-eps))
        tail = stats.binom.sf(v - 1, r, q)
        window = [stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - 1 - i, r, q) for i in range(1, v + 1)]
        return min(1.0, tail + 2 * m * delta * max([w / i for i, w in enumerate(window, 1)], default=0.0))

    for row in mia["table"]:
        s = np.array(mia["scores"][row["model"]][row["attack"]])
        order = np.argsort(s, kind="stable")
        best = 0.0
        for kp, km in grid:
            t = np.zeros(m, int)
            t[order[m - kp:]] = 1
            t[order[:km]] = -1
            v, r = int((t * y > 0).sum()), kp + km
            f = lambda e: pval(r, v, e, row["audit_delta"]) - level_beta  # noqa: E731
            if f(0.0) <= 0:
                best = max(best, optimize.brentq(f, 0.0, 60.0, xtol=1e-9))
            if (kp, km) == (row["k_plus"], row["k_minus"]):
                assert v == row["correct"] and r == row["guesses"]
        assert row["eps_lower_bound"] == pytest.approx(best, abs=1e-5)
        assert row["eps_lower_bound"] <= _num(row["epsilon_at_audit_delta"])
    # what the comparison table reports is the better of the two attacks
    for cmp_row in smoke["res"]["eps_comparison"]:
        rows = [r for r in mia["table"] if r["model"] == cmp_row["model"]]
        assert cmp_row["one-run ε lower bound (better attack)"] == pytest.approx(max(r["eps_lower_bound"] for r in rows))


def test_exposure_summary_and_repeat_counts_come_from_the_data(smoke):
    """Finding 9: the repetition counts k are those of the data, and the summary's per-k mean exposure
    equals the mean of the saved per-secret exposures."""
    import pandas as pd

    from radpriv.data import load_dataset

    res = smoke["res"]
    f = load_dataset(_params(smoke)["manifest"]).frame
    c = f.loc[f.split == "train", "canary"].fillna("")
    assert res["repeat_counts"] == c[c != ""].value_counts().to_dict()
    ks = sorted(set(res["repeat_counts"].values()), reverse=True)
    ex = pd.DataFrame(res["exposure"])
    assert set(ex[ex.k > 0].secret) == set(res["repeat_counts"])
    assert all(res["repeat_counts"][s] == k for s, k in zip(ex.secret, ex.k) if k > 0)
    summary = pd.DataFrame(res["exposure_summary"]).set_index("model")
    for name in res["lm_runs"]:
        e = ex[ex.model == name]
        line = next(ln for ln in res["summary"] if f"**{name}**" in ln)
        for k in ks:
            mean = e[e.k == k].exposure.mean()
            assert summary.loc[name, f"k = {k}"] == pytest.approx(mean)
            assert f"k={k} {mean:.2f}" in line
        assert summary.loc[name, "never (control)"] == pytest.approx(e[e.k == 0].exposure.mean())
    # group privacy: kε for every DP run and every k of the data
    gp = pd.DataFrame(res["group_privacy"])
    dp_runs = {n: r for n, r in res["lm_runs"].items() if _num(r["epsilon"]) < math.inf}
    assert len(gp) == len(dp_runs) * len(ks)
    for _, g in gp.iterrows():
        assert g["group ε (kε)"] == pytest.approx(g.k * _num(dp_runs[g.model]["epsilon"]))
