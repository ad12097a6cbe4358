"""Privacy accounting: golden values, the independent cross-check, and ε never above the target."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.utils import get_noise_multiplier

from radpriv.dp import accounting
from radpriv.dp.accounting import AccountingMismatch, audit, opacus_epsilon, pld_epsilon, rdp_epsilon


# golden values for σ=1, q=0.05, 200 steps, δ=1e-4 (computed once with opacus 1.6.0 / dp-accounting 0.6.0;
# PRV and PLD are both near-exact numerical accountants, RDP is an upper bound and so larger)
@pytest.mark.parametrize("fn,expected", [
    (lambda: opacus_epsilon(1.0, 0.05, 200, 1e-4, "prv"), 4.0),
    (lambda: pld_epsilon(1.0, 0.05, 200, 1e-4), 4.0),
    (lambda: opacus_epsilon(1.0, 0.05, 200, 1e-4, "rdp"), 4.604),  # integer orders (RDP_ORDERS)
    (lambda: rdp_epsilon(1.0, 0.05, 200, 1e-4), 4.604),
])
def test_golden_values(fn, expected):
    assert fn() == pytest.approx(expected, abs=0.01)


def test_rdp_pair_agrees_at_a_large_sampling_rate():
    """q = 0.25 (large expected batches): opacus's fractional-order RDP series fails to converge there; on the
    shared integer orders the two RDP accountants agree, so a DP run with large batches is not failed falsely."""
    res = audit(1.7144775390625, 0.25, 200, 1 / 4800)
    assert res["ok"] and res["rdp_vs_rdp"] < 1e-6 and res["prv_vs_pld"] < 1e-3


def test_rdp_is_looser_than_prv():
    assert opacus_epsilon(1.0, 0.05, 200, 1e-4, "rdp") > opacus_epsilon(1.0, 0.05, 200, 1e-4, "prv")


@pytest.mark.parametrize("sigma,q,steps", [(0.6, 0.09, 33), (2.0, 0.1, 100), (8.0, 0.05, 60), (30.0, 0.1, 30)])
def test_cross_check_agrees_within_two_percent(sigma, q, steps):
    out = audit(sigma, q, steps, 1e-4)
    assert out["ok"]
    assert out["prv_vs_pld"] < 0.02 or abs(out["opacus_prv"] - out["dp_accounting_pld"]) < 1e-3


def test_mismatch_fails_the_run(monkeypatch):
    monkeypatch.setattr(accounting, "pld_epsilon", lambda *a, **k: 1.5 * opacus_epsilon(*a[:4], "prv"))
    with pytest.raises(AccountingMismatch, match=r"mismatch beyond 2%.*opacus PRV .* vs dp_accounting PLD"):
        audit(1.0, 0.05, 200, 1e-4)
    assert audit(1.0, 0.05, 200, 1e-4, raise_on_mismatch=False)["ok"] is False


def test_no_noise_is_infinite_epsilon():
    assert math.isinf(audit(0.0, 0.1, 10, 1e-5)["opacus_prv"])


@settings(max_examples=12, deadline=None)
@given(target=st.sampled_from([0.1, 0.5, 1.0, 3.0, 10.0]), n=st.integers(200, 2000),
       batch=st.integers(8, 64), epochs=st.integers(1, 3))  # up to 750 steps: the PRV cost grows with steps
def test_achieved_epsilon_never_above_target(target, n, batch, epochs):
    q = batch / n
    steps = epochs * math.ceil(n / batch)
    delta = 1.0 / (10 * n)
    sigma = get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps,
                                 accountant="prv", epsilon_tolerance=0.01)
    achieved = opacus_epsilon(sigma, q, steps, delta, "prv")
    assert achieved <= target
    assert pld_epsilon(sigma, q, steps, delta) <= target * 1.02  # and the independent accountant agrees
