"""The pieces of ``af-vs-iaf``: twin flows really share their transform, the timing loop calls what
it should, and the slope fit recovers known exponents. No wall-clock thresholds."""

import math

import pytest
import torch

from densitylab.experiments.af_vs_iaf import SETTINGS, log_log_slope, measure, slopes, timed, twin_flows


def test_log_log_slope_recovers_power_laws():
    dims = [2, 8, 32, 128]
    assert log_log_slope(dims, [3 * d**1.5 for d in dims]) == pytest.approx(1.5)
    assert log_log_slope(dims, [0.7 / d for d in dims]) == pytest.approx(-1.0)
    assert log_log_slope(dims, [5.0] * 4) == pytest.approx(0.0)


def test_slopes_of_ideal_pass_counts():
    """IAF training and MAF sampling take D passes, the other two one: ratios of slope +1 and -1."""
    rows = [{"D": d, "maf_step_ms": 1.0, "iaf_step_ms": float(d), "maf_sample_ms": float(d),
             "iaf_sample_ms": 1.0, "step_ratio": float(d), "sample_ratio": 1.0 / d} for d in (2, 8, 32)]
    fit = slopes(rows)
    assert fit["step_ratio"] == pytest.approx(1.0) and fit["sample_ratio"] == pytest.approx(-1.0)
    assert fit["maf_step_ms"] == pytest.approx(0.0) and fit["maf_sample_ms"] == pytest.approx(1.0)


def test_timed_warms_up_then_repeats_unless_one_call_is_over_budget():
    calls = []
    timed(lambda: calls.append(1), repeats=4, budget_s=60.0)
    assert len(calls) == 5  # one warm-up, then the repeats
    calls.clear()
    timed(lambda: calls.append(1), repeats=4, budget_s=0.0)
    assert len(calls) == 1  # the warm-up alone already spent the budget


def test_twin_flows_hold_the_same_transform_used_in_opposite_directions():
    maf, iaf = twin_flows(5, 16, 2, seed=0)
    x = torch.randn(7, 5, dtype=torch.float64)
    maf, iaf = maf.double(), iaf.double()
    with torch.no_grad():
        z_maf, _ = maf.transform(x)
        assert not torch.allclose(z_maf, x)  # moved off the identity start
        y_iaf, _ = iaf.transform.inverse(x)  # IAF samples with MAF's density direction
        assert torch.allclose(y_iaf, z_maf, atol=1e-12)
        # and the densities are those of the same change of variables, taken the other way round
        back, _ = maf.transform.inverse(z_maf)
        assert torch.allclose(back, x, atol=1e-9)
        assert torch.isfinite(iaf.log_prob(x)).all() and torch.isfinite(maf.log_prob(x)).all()


def test_measure_reports_positive_times_and_their_ratios():
    torch.set_num_threads(1)
    row = measure(3, {**SETTINGS["tiny"], "repeats": 1, "budget": 0.0}, seed=0)
    assert row["D"] == 3
    for key in ("maf_step_ms", "iaf_step_ms", "maf_sample_ms", "iaf_sample_ms", "maf_sample_naive_ms"):
        assert row[key] > 0 and math.isfinite(row[key])
    assert row["sequential_steps"] == 3
    assert row["step_ratio"] == pytest.approx(row["iaf_step_ms"] / row["maf_step_ms"])
    assert row["sample_ratio"] == pytest.approx(row["iaf_sample_ms"] / row["maf_sample_ms"])
