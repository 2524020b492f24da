"""Compute-optimal allocation by the envelope (1), IsoFLOP profiles (2) and the closed form (3)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import (
    AllocationFit,
    Chinchilla,
    bootstrap,
    compute_optimal,
    envelope_fit,
    fit_law,
    isoflop_fit,
)

TRUE = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
A_TRUE = 0.28 / (0.34 + 0.28)  # a = beta / (alpha + beta)


BUDGETS = tuple(np.geomspace(1e18, 1e22, 9))


def isoflop_runs(budgets=BUDGETS, points=9, seed=0):
    """Noise-free IsoFLOP profiles; each window is off-centre by up to 0.3 decades."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt = float(TRUE.optimal_allocation(c)[0])
        shift = rng.uniform(-0.3, 0.3)
        for x in np.linspace(-1.0, 1.0, points):
            n = n_opt * 10 ** (x + shift)
            rows.append({"n_params": n, "tokens": c / (6 * n), "budget": c})
    df = pd.DataFrame(rows)
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens)
    return df


def test_isoflop_parabola_recovers_the_allocation_exponent():
    result = isoflop_fit(isoflop_runs(), n_resamples=50)
    assert result.a == pytest.approx(A_TRUE, abs=2e-3)
    assert result.a + result.b == pytest.approx(1.0)
    assert len(result.points) == 9 and result.warnings == ()
    lo, hi = result.summary().loc["a", ["lo", "hi"]]
    assert lo <= A_TRUE <= hi


def test_isoflop_spline_recovers_the_allocation_exponent():
    result = isoflop_fit(isoflop_runs(), method="spline", n_resamples=10)
    assert result.a == pytest.approx(A_TRUE, abs=5e-3)
    assert result.approach == "isoflop-spline"


def test_isoflop_optima_are_the_true_minima_on_centred_profiles():
    budgets = np.array([1e19, 1e21])
    rows = []
    for c in budgets:
        n_opt = float(TRUE.optimal_allocation(c)[0])
        for x in np.linspace(-0.2, 0.2, 11):  # narrow window: the parabola is near exact
            rows.append({"n_params": n_opt * 10**x, "tokens": c / (6 * n_opt * 10**x)})
    df = pd.DataFrame(rows)
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens)
    result = isoflop_fit(df, n_resamples=5)
    expected = TRUE.optimal_allocation(budgets)[0]
    np.testing.assert_allclose(result.points["n_params"], expected, rtol=0.01)


def test_budgets_are_found_from_compute_without_a_budget_column():
    df = isoflop_runs()
    with_column = isoflop_fit(df, budget="budget", n_resamples=5)
    clustered = isoflop_fit(df.drop(columns="budget"), n_resamples=5)
    np.testing.assert_allclose(
        clustered.points["compute"], with_column.points["compute"], rtol=1e-9
    )
    assert clustered.a == pytest.approx(with_column.a, rel=1e-9)


def test_profiles_without_an_interior_minimum_are_left_out_with_a_warning():
    df = isoflop_runs()
    top = df["budget"].max()
    n_opt = float(TRUE.optimal_allocation(top)[0])
    # Keep only models larger than the optimum at the top budget: loss rises monotonically.
    df = df[(df["budget"] < top) | (df["n_params"] > 2 * n_opt)]
    result = isoflop_fit(df, n_resamples=5)
    assert len(result.points) == 8
    assert any(f"budget {top:.3g} FLOPs: no interior minimum" in w for w in result.warnings)


def test_isoflop_needs_two_budgets():
    df = isoflop_runs(budgets=[1e20])
    with pytest.raises(ValueError, match="two or more budgets"):
        isoflop_fit(df, n_resamples=5)
    with pytest.raises(ValueError, match="method must be"):
        isoflop_fit(isoflop_runs(), method="cubic")  # type: ignore[arg-type]


def training_curves():
    """Loss along training of 25 model sizes, from the Chinchilla surface with D = tokens seen."""
    rows = []
    for i, n in enumerate(np.geomspace(1e7, 1e10, 25)):
        for seen in np.geomspace(1e8, 1e12, 60):
            if 6 * n * seen <= 1e23:
                rows.append(
                    {
                        "run_id": f"run-{i}",
                        "n_params": n,
                        "tokens_seen": seen,
                        "step": int(seen // 1e6),
                    }
                )
    df = pd.DataFrame(rows)
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens_seen)
    return df


def test_envelope_recovers_the_allocation_exponent():
    result = envelope_fit(training_curves(), n_resamples=50)
    assert result.a == pytest.approx(A_TRUE, abs=0.01)
    assert result.b == pytest.approx(1 - A_TRUE, abs=0.01)
    # The envelope at each budget is the run with the lowest loss there.
    pts = result.points
    assert (np.diff(pts["n_params"]) >= 0).all()  # bigger models win at bigger budgets


def test_envelope_uses_tokens_seen_over_a_whole_run_compute_column():
    df = training_curves()
    # As loaded from MLflow with history: compute is 6·N·(the run's final tokens).
    final = df.groupby("run_id")["tokens_seen"].transform("max")
    df["compute"] = 6 * df["n_params"] * final
    assert envelope_fit(df, n_resamples=5).a == pytest.approx(A_TRUE, abs=0.01)


def test_envelope_checks_its_input():
    df = training_curves()
    with pytest.raises(ValueError, match="needs a 'run_id' column"):
        envelope_fit(df.drop(columns="run_id"))
    with pytest.raises(ValueError, match="needs 'tokens_seen'"):
        envelope_fit(df.drop(columns="tokens_seen"))
    per_checkpoint = df.assign(compute=6 * df.n_params * df.tokens_seen).drop(columns="tokens_seen")
    assert envelope_fit(per_checkpoint, n_resamples=5).a == pytest.approx(A_TRUE, abs=0.01)
    with pytest.raises(ValueError, match="at least two runs"):
        envelope_fit(df[df.run_id == "run-3"])


@pytest.fixture(scope="module")
def parametric():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "n_params": np.exp(rng.uniform(np.log(1e7), np.log(3e9), 60)),
            "tokens": np.exp(rng.uniform(np.log(1e8), np.log(1e11), 60)),
        }
    )
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens) * np.exp(
        0.01 * rng.normal(size=60)
    )
    fit = fit_law(df, engine="varpro", check_identifiability=False)
    return bootstrap(fit, df, n_resamples=60, seed=0)


def test_closed_form_allocation_matches_the_fitted_law(parametric):
    law = parametric.law
    alloc = compute_optimal(parametric)
    assert alloc.a == pytest.approx(law.beta / (law.alpha + law.beta), rel=1e-9)
    n_opt, d_opt = law.optimal_allocation(5.76e23)
    assert alloc.n_opt(5.76e23).value == pytest.approx(float(n_opt), rel=1e-9)
    assert alloc.tokens_opt(5.76e23).value == pytest.approx(float(d_opt), rel=1e-9)
    ratio = alloc.tokens_per_param(5.76e23)
    assert ratio.value == pytest.approx(float(d_opt / n_opt), rel=1e-9)
    assert ratio.lo < ratio.value < ratio.hi
    lo, hi = alloc.summary().loc["a", ["lo", "hi"]]
    assert lo < alloc.a < hi


def test_allocation_table_and_json_round_trip(parametric):
    alloc = compute_optimal(parametric)
    table = alloc.at([1e21, 1e24])
    assert list(table["compute"]) == [1e21, 1e24]
    assert (table["n_params_lo"] <= table["n_params"]).all()
    restored = AllocationFit.from_dict(json.loads(json.dumps(alloc.to_dict())))
    assert restored.n_opt(1e22).value == pytest.approx(alloc.n_opt(1e22).value)
    np.testing.assert_array_equal(restored.samples, alloc.samples)
    assert "parametric: N_opt(C) =" in str(alloc)


def test_compute_optimal_needs_a_law_of_n_and_d():
    c = np.geomspace(1e17, 1e21, 20)
    runs = pd.DataFrame({"compute": c, "loss": 1.7 + 2000 * c**-0.15})
    boot = bootstrap(fit_law(runs, "power_law", check_identifiability=False), runs, n_resamples=5)
    with pytest.raises(ValueError, match="needs a law of N and D"):
        compute_optimal(boot)


def test_allocation_rejects_bad_compute(parametric):
    with pytest.raises(ValueError, match="compute must be positive"):
        compute_optimal(parametric).n_opt(-1.0)
    assert math.isfinite(compute_optimal(parametric).n_opt(1e20).value)
