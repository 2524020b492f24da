"""Fitting: parameter recovery for every law and both engines, objectives, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import huber

from scalelab.forecast import (
    Chinchilla,
    FitResult,
    KaplanJoint,
    Objective,
    PowerLaw,
    bootstrap,
    fit_law,
)
from scalelab.forecast import fit as fit_module

TRUE_LAWS = {
    "chinchilla": Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "chinchilla_no_offset": Chinchilla(irreducible=False, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "kaplan": KaplanJoint(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095),
    "power_n": PowerLaw(variable="n_params", E=1.8, A=400.0, alpha=0.34),
    "power_d": PowerLaw(variable="tokens", E=1.8, A=410.0, alpha=0.28),
    "power_c": PowerLaw(variable="compute", E=1.7, A=2000.0, alpha=0.15),
    "power_c_no_offset": PowerLaw(variable="compute", irreducible=False, A=50.0, alpha=0.05),
}


def synthetic_runs(law, noise=0.0, n=120, seed=0):
    """Runs spread over N in [1e7, 1e10] and D in [1e8, 1e12], loss from ``law``."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "n_params": np.exp(rng.uniform(np.log(1e7), np.log(1e10), n)),
            "tokens": np.exp(rng.uniform(np.log(1e8), np.log(1e12), n)),
        }
    )
    df["compute"] = 6 * df["n_params"] * df["tokens"]
    clean = law.predict(**{v: df[v].to_numpy() for v in law.variables})
    df["loss"] = clean * np.exp(noise * rng.normal(size=n))
    return df


def template(law):
    return law.with_theta(np.full(len(law.param_names), np.nan))


CASES = [
    (name, engine)
    for name, law in TRUE_LAWS.items()
    for engine in ("lbfgs", "varpro")
    if engine == "lbfgs" or law.supports_varpro
]


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_noise_free_data_recover_the_parameters(name, engine):
    law = TRUE_LAWS[name]
    fit = fit_law(synthetic_runs(law), template(law), engine=engine, check_identifiability=False)
    assert fit.converged
    for p, v in law.params.items():
        assert fit.law.params[p] == pytest.approx(v, rel=1e-5), p


# With 1% log-normal noise on 120 runs, exponents and E land within a few percent; the
# coefficients A, B (and Kaplan's N_c, D_c) trade off against the exponents, so they get more.
NOISY_TOLERANCE = {"E": 0.02, "alpha": 0.03, "beta": 0.05, "alpha_N": 0.03, "alpha_D": 0.03}


@pytest.mark.parametrize(("name", "engine"), CASES)
def test_noisy_data_recover_the_parameters_within_tolerance(name, engine):
    law = TRUE_LAWS[name]
    fit = fit_law(
        synthetic_runs(law, noise=0.01, seed=1),
        template(law),
        engine=engine,
        check_identifiability=False,
    )
    assert fit.converged
    assert fit.residuals["rmse"] == pytest.approx(0.01, rel=0.25)
    for p, v in law.params.items():
        assert fit.law.params[p] == pytest.approx(v, rel=NOISY_TOLERANCE.get(p, 0.3)), p


def test_engines_agree_on_the_optimum():
    runs = synthetic_runs(TRUE_LAWS["chinchilla"], noise=0.02, seed=2)
    a = fit_law(runs, engine="lbfgs", check_identifiability=False)
    b = fit_law(runs, engine="varpro", check_identifiability=False)
    assert b.value == pytest.approx(a.value, rel=1e-6)
    assert b.law.params == pytest.approx(a.law.params, rel=1e-3)


def test_default_objective_is_the_sum_of_huber_on_log_residuals():
    runs = synthetic_runs(TRUE_LAWS["chinchilla"], noise=0.02, seed=3)
    fit = fit_law(runs, check_identifiability=False)
    r = np.log(runs["loss"]) - np.log(fit.law.predict(n_params=runs.n_params, tokens=runs.tokens))
    assert fit.value == pytest.approx(np.sum(huber(1e-3, r)), rel=1e-9)
    assert fit.objective == Objective(kind="huber", delta=1e-3)


def test_exhaustive_refinement_reaches_the_screened_optimum():
    law = TRUE_LAWS["power_c"]
    runs = synthetic_runs(law, noise=0.01, seed=4)
    every = fit_law(runs, template(law), n_refine=None, check_identifiability=False)
    screened = fit_law(runs, template(law), check_identifiability=False)
    assert every.n_refined == every.n_starts == len(law.theta_grid())
    assert screened.value == pytest.approx(every.value, rel=1e-7)


def test_mse_objective_is_least_squares_in_log_space():
    runs = synthetic_runs(TRUE_LAWS["power_c_no_offset"], noise=0.02, seed=5)
    fit = fit_law(
        runs,
        PowerLaw(variable="compute", irreducible=False),
        objective="mse",
        check_identifiability=False,
    )
    slope, intercept = np.polyfit(np.log(runs["compute"]), np.log(runs["loss"]), 1)
    assert fit.law.params["alpha"] == pytest.approx(-slope, rel=1e-6)
    assert fit.law.params["A"] == pytest.approx(np.exp(intercept), rel=1e-5)


def test_asymmetric_objective_penalises_over_prediction():
    runs = synthetic_runs(TRUE_LAWS["chinchilla"], noise=0.03, seed=6)
    log_loss = np.log(runs["loss"].to_numpy())

    def share_over(fit):
        pred = np.log(fit.law.predict(n_params=runs.n_params, tokens=runs.tokens))
        return np.mean(pred > log_loss)

    symmetric = fit_law(runs, check_identifiability=False)
    asymmetric = fit_law(
        runs, objective=Objective(kind="asymmetric", over_weight=9.0), check_identifiability=False
    )
    assert share_over(symmetric) == pytest.approx(0.5, abs=0.06)
    assert share_over(asymmetric) < 0.2


def test_fit_result_round_trips_through_json():
    fit = fit_law(synthetic_runs(TRUE_LAWS["chinchilla"], noise=0.01), check_identifiability=False)
    restored = FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert restored.law == fit.law
    assert restored.value == fit.value and restored.residuals == fit.residuals
    np.testing.assert_array_equal(restored.optima, fit.optima)
    assert "chinchilla: L(N, D)" in str(restored)


def test_warns_when_the_irreducible_term_is_not_identified():
    # Small models far from the asymptote, 2% noise: E trades off against A and alpha.
    law = TRUE_LAWS["power_n"]
    rng = np.random.default_rng(7)
    n = np.geomspace(1e6, 3e6, 40)
    runs = pd.DataFrame(
        {"n_params": n, "loss": law.predict(n_params=n) * np.exp(0.02 * rng.normal(size=40))}
    )
    fit = fit_law(runs, "power_law:n_params")
    assert any("irreducible term E is not identified" in w for w in fit.warnings)


def test_no_identification_warning_on_well_spread_data():
    fit = fit_law(synthetic_runs(TRUE_LAWS["chinchilla"], noise=0.005, seed=8))
    assert fit.warnings == ()


# ---- large tables: subsample search, blocks, fused Chinchilla, resamples without zeros ---------
def checkpoint_runs(law, n_runs=60, checkpoints=20, noise=0.01, seed=0):
    """``n_runs`` runs, each validated at ``checkpoints`` evenly spaced token counts."""
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n_runs))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n_runs))
    steps = np.arange(1, checkpoints + 1)
    df = pd.DataFrame(
        {
            "run_id": np.repeat(np.arange(n_runs), checkpoints),
            "step": np.tile(steps, n_runs),
            "n_params": np.repeat(n, checkpoints),
            "tokens": (d[:, None] * steps / checkpoints).ravel(),
        }
    )
    df["compute"] = 6 * df["n_params"] * df["tokens"]
    clean = law.predict(**{v: df[v].to_numpy() for v in law.variables})
    df["loss"] = clean * np.exp(noise * rng.normal(size=len(df)))
    return df


@pytest.mark.parametrize("name", ["chinchilla", "chinchilla_no_offset", "kaplan", "power_c"])
def test_the_large_table_path_finds_the_plain_optimum(monkeypatch, name):
    # 1,200 rows forced through the path of a large table: starts searched on 200 rows and
    # refined on all, evaluation in blocks of 100 rows (Chinchilla's fused), the identifiability
    # check's resamples without their zero-count rows. The minimum is the plain path's, to the
    # optimiser's tolerance (flat directions such as A against alpha move by ~1e-5).
    law = TRUE_LAWS[name]
    runs = checkpoint_runs(law)
    plain = fit_law(runs, template(law))
    plain_boot = bootstrap(plain, runs, n_resamples=20, seed=0)
    monkeypatch.setattr(fit_module, "_ROW_BLOCK", 100)
    monkeypatch.setattr(fit_module, "_SEARCH_ROWS", 200)
    fast = fit_law(runs, template(law))
    assert fast.value == pytest.approx(plain.value, rel=1e-8)
    assert fast.law.params == pytest.approx(plain.law.params, rel=1e-4)
    assert fast.warnings == plain.warnings
    assert fast.n_refined == plain.n_refined == 16
    np.testing.assert_allclose(fast.optima[0], plain.optima[0], rtol=1e-4, atol=1e-6)
    fast_boot = bootstrap(fast, runs, n_resamples=20, seed=0)
    np.testing.assert_allclose(
        fast_boot.param_intervals()[["lo", "hi"]],
        plain_boot.param_intervals()[["lo", "hi"]],
        rtol=2e-3,
    )


def test_the_fused_chinchilla_evaluation_matches_the_law(monkeypatch):
    law = Chinchilla()
    runs = checkpoint_runs(TRUE_LAWS["chinchilla"], n_runs=10)
    monkeypatch.setattr(fit_module, "_ROW_BLOCK", 64)
    rng = np.random.default_rng(0)
    for objective in (Objective(), Objective(kind="mse"), Objective(kind="asymmetric")):
        problem = fit_module.Problem.from_runs(runs, law, objective)
        counts = rng.integers(0, 3, problem.n_rows).astype(np.float32)
        resampled = problem.resampled(counts)
        assert resampled.n_rows == np.count_nonzero(counts)  # zero-count rows dropped
        for theta in law.theta_grid()[rng.choice(4500, 20)]:
            pred, jac = law.log_model(theta, problem.z, jac=True)
            value, deriv = objective.value_and_derivative(problem.y - pred, counts)
            got_value, got_grad = resampled.value_and_grad(theta)
            assert got_value == pytest.approx(value, rel=1e-12)
            np.testing.assert_allclose(got_grad, -(jac * deriv).sum(axis=1), rtol=1e-10)


# ---- bad input ------------------------------------------------------------------------------
@pytest.fixture
def runs():
    return synthetic_runs(TRUE_LAWS["chinchilla"], n=20)


def test_fewer_points_than_parameters(runs):
    with pytest.raises(ValueError, match="4 runs cannot determine the 5 parameters"):
        fit_law(runs.head(4))


@pytest.mark.parametrize("column", ["n_params", "tokens", "loss"])
@pytest.mark.parametrize(
    ("bad", "problem"),
    [(0.0, "non-positive"), (-3.0, "non-positive"), (np.nan, "non-finite"), (np.inf, "non-finite")],
)
def test_non_positive_or_non_finite_values(runs, column, bad, problem):
    runs.loc[5, column] = bad
    with pytest.raises(ValueError, match=f"column '{column}' has 1 {problem} value"):
        fit_law(runs)


def test_non_finite_compute_for_a_compute_law(runs):
    runs.loc[2, "compute"] = np.nan
    with pytest.raises(ValueError, match="column 'compute' has 1 non-finite"):
        fit_law(runs, "power_law")


def test_single_distinct_n_for_an_n_law(runs):
    runs["n_params"] = 1e8
    with pytest.raises(ValueError, match="'n_params' takes a single value"):
        fit_law(runs, PowerLaw(variable="n_params"))


def test_duplicate_rows(runs):
    doubled = pd.concat([runs, runs.iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match="2 duplicate rows"):
        fit_law(doubled)


def test_missing_column(runs):
    with pytest.raises(ValueError, match="runs have no 'tokens' column"):
        fit_law(runs.drop(columns=["tokens", "compute"]))


def test_non_numeric_column(runs):
    runs["loss"] = runs["loss"].astype(str).str.cat(["x"] * len(runs))
    with pytest.raises(ValueError, match="column 'loss' is not numeric"):
        fit_law(runs)


def test_bad_engine_objective_and_starts(runs):
    with pytest.raises(ValueError, match="engine must be"):
        fit_law(runs, engine="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="objective kind must be"):
        fit_law(runs, objective="l1")
    with pytest.raises(ValueError, match="starts need 5 columns"):
        fit_law(runs, starts=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="not linear in its coefficients"):
        fit_law(runs, KaplanJoint(), engine="varpro")
    with pytest.raises(ValueError, match="starts apply to engine='lbfgs'"):
        fit_law(runs, engine="varpro", starts=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="n_refine must be"):
        fit_law(runs, n_refine=0)


def test_tokens_are_derived_from_compute(runs):
    derived = runs.drop(columns=["tokens"])
    a = fit_law(runs, check_identifiability=False)
    b = fit_law(derived, check_identifiability=False)
    assert b.law.params == pytest.approx(a.law.params, rel=1e-6)
