"""Capability laws recover known parameters from synthetic pass rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import bootstrap, fit_law
from scalelab.forecast.capability import (
    capability_runs,
    gpt4_law,
    pass_rate_runs,
    problem_curves,
    sigmoid_law,
    solvable_problems,
)

COMPUTE = np.geomspace(1e12, 1e16, 7)


def _per_problem(rng: np.random.Generator, k: float, noise: float) -> tuple[pd.DataFrame, float]:
    """Pass rates p_j(C) = exp(−a_j·C^-k): −mean_j log p_j = mean(a)·C^-k exactly (before
    noise); one problem never solved by the smallest model, which the law must leave out."""
    a = rng.lognormal(np.log(2e3), 0.5, size=40)
    rows = []
    for i, c in enumerate(COMPUTE):
        wobble = np.exp(rng.normal(0.0, noise, size=a.size))
        rates = np.exp(-a * wobble * c**-k)
        rows += [(f"r{i}", c, f"p{j}", r) for j, r in enumerate(rates)]
        rows.append((f"r{i}", c, "hard", 0.0 if i == 0 else 0.5))
    return pd.DataFrame(rows, columns=["run_id", "compute", "problem", "pass_rate"]), a.mean()


def test_gpt4_form_recovers_its_parameters() -> None:
    per_problem, alpha = _per_problem(np.random.default_rng(0), k=0.25, noise=0.02)
    assert "hard" not in solvable_problems(per_problem)
    runs = capability_runs(per_problem)
    assert list(runs.columns) == ["run_id", "compute", "loss"] and len(runs) == len(COMPUTE)
    fit = fit_law(runs, gpt4_law())
    assert fit.converged
    assert fit.params["alpha"] == pytest.approx(0.25, rel=0.03)
    assert fit.params["A"] == pytest.approx(alpha, rel=0.3)
    # Extrapolated 10x beyond the largest run, the interval holds the true value.
    boot = bootstrap(fit, runs, n_resamples=64, seed=0)
    truth = alpha * 1e17**-0.25
    pred = boot.predict(compute=1e17)
    assert pred.lo <= truth <= pred.hi
    assert pred.value == pytest.approx(truth, rel=0.1)


def test_sigmoid_recovers_midpoint_and_slope() -> None:
    rng = np.random.default_rng(1)
    rate = 1.0 / (1.0 + (COMPUTE / 3e14) ** -0.9)
    runs = pd.DataFrame(
        {"compute": COMPUTE, "pass_rate.copy": rate * np.exp(rng.normal(0, 0.01, COMPUTE.size))}
    )
    fit = fit_law(pass_rate_runs(runs, "pass_rate.copy"), sigmoid_law())
    assert fit.params["C0"] == pytest.approx(3e14, rel=0.1)
    assert fit.params["alpha"] == pytest.approx(0.9, rel=0.05)
    assert fit.law.predict(compute=3e14) == pytest.approx(0.5, abs=0.02)


def test_non_monotone_problems_are_flagged() -> None:
    per_problem = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"] * 2,
            "compute": [1e12, 1e13, 1e14] * 2,
            "problem": ["rises"] * 3 + ["dips"] * 3,
            "pass_rate": [0.1, 0.4, 0.9, 0.5, 0.2, 0.8],
        }
    )
    curves = problem_curves(per_problem)
    flags = curves.groupby("problem")["non_monotone"].first()
    assert flags.to_dict() == {"dips": True, "rises": False}
    assert not problem_curves(per_problem, tolerance=0.5)["non_monotone"].any()


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="pass_rate column"):
        capability_runs(pd.DataFrame({"run_id": ["a"], "compute": [1.0], "problem": ["p"]}))
    zero = pd.DataFrame({"run_id": ["a"], "compute": [1.0], "problem": ["p"], "pass_rate": [0.0]})
    with pytest.raises(ValueError, match="smallest runs solve no problem"):
        capability_runs(zero)


def test_gpt4_form_backtests_like_a_loss_law() -> None:
    from scalelab.forecast import backtest

    per_problem, _ = _per_problem(np.random.default_rng(2), k=0.25, noise=0.02)
    runs = capability_runs(per_problem)
    result = backtest(
        runs, laws={"gpt4": gpt4_law()}, factors=(10,), n_resamples=32, baseline=False
    )
    row = result.summary.set_index("law").loc["gpt4"]
    assert row["n_test"] >= 2
    assert row["median_abs_rel_error"] < 0.05


def test_forecast_pass_rate_gives_an_interval_around_the_truth() -> None:
    from scalelab.forecast.capability import forecast_pass_rate

    rng = np.random.default_rng(3)
    rate = 1.0 / (1.0 + (COMPUTE / 1e15) ** -0.7)
    runs = pd.DataFrame(
        {"compute": COMPUTE, "pass_rate.copy": rate * np.exp(rng.normal(0, 0.02, COMPUTE.size))}
    )
    pred, fit = forecast_pass_rate(runs, "pass_rate.copy", 1e17, n_resamples=64)
    truth = 1.0 / (1.0 + 100.0**-0.7)
    assert pred.quantity == "pass_rate.copy" and fit.law.name == "pass_sigmoid"
    assert pred.lo <= truth <= pred.hi <= 1.0
