"""Backtests: fit below a compute cut, predict the runs above it, score the predictions."""

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import BacktestResult, Chinchilla, PowerLaw, backtest

TRUE = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 90))
    ratio = np.exp(rng.uniform(np.log(5), np.log(100), 90))  # tokens per parameter
    df = pd.DataFrame({"n_params": n, "tokens": n * ratio})
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens) * np.exp(
        0.005 * rng.normal(size=90)
    )
    return df


@pytest.fixture(scope="module")
def result(runs):
    return backtest(runs, factors=(10, 100), n_resamples=30)


def test_every_held_out_run_is_predicted_by_every_law(runs, result):
    c_max = 6 * (runs.n_params * runs.tokens).max()
    for k in (10, 100):
        held_out = int((6 * runs.n_params * runs.tokens > c_max / k).sum())
        for law in ("chinchilla", "chinchilla_no_offset", "best_so_far"):
            rows = result.runs[(result.runs.factor == k) & (result.runs.law == law)]
            assert len(rows) == held_out, (k, law)
    assert set(result.summary.law) == {"chinchilla", "chinchilla_no_offset", "best_so_far"}


def test_scores_are_relative_errors_and_coverage(result):
    r = result.runs
    np.testing.assert_allclose(r.rel_error, (r.predicted - r.loss) / r.loss)
    assert (r.covered == ((r.lo <= r.loss) & (r.loss <= r.hi))).all()
    s = result.summary.set_index(["factor", "law"])
    assert ((s.coverage >= 0) & (s.coverage <= 1)).all()
    assert (s.n_train + s.n_test == 90).all()


def test_the_true_form_extrapolates_better_than_the_baseline(result):
    s = result.summary.set_index(["factor", "law"])
    for k in (10, 100):
        chin = s.loc[(k, "chinchilla")]
        assert chin.median_abs_rel_error < 0.02
        assert chin.median_abs_rel_error < s.loc[(k, "best_so_far")].median_abs_rel_error
    assert s.loc[(10, "chinchilla"), "coverage"] >= 0.7


def test_absolute_compute_cut_and_custom_laws(runs):
    cut = float(np.quantile(6 * runs.n_params * runs.tokens, 0.7))
    result = backtest(
        runs,
        max_compute=cut,
        n_resamples=20,
        baseline=False,
        laws={"compute_power_law": PowerLaw(variable="compute")},
    )
    assert set(result.summary.law) == {"compute_power_law"}
    assert result.summary.cut.iloc[0] == cut and np.isnan(result.summary.factor.iloc[0])
    assert (result.runs.compute > cut).all()


def test_laws_that_cannot_be_fitted_on_a_cut_are_reported_not_raised(runs):
    compute = np.sort(6 * runs.n_params * runs.tokens)
    tiny, ample = float(compute[2]), float(compute[60])  # 3 and 61 training runs
    result = backtest(runs, max_compute=[ample, tiny], n_resamples=10, baseline=False)
    assert set(result.summary.cut) == {ample}
    assert any("3 runs cannot determine the 5 parameters" in w for w in result.warnings)


def test_round_trip_through_json(result):
    restored = BacktestResult.from_dict(json.loads(json.dumps(result.to_dict())))
    pd.testing.assert_frame_equal(restored.summary, result.summary, check_dtype=False)
    assert restored.fits.keys() == result.fits.keys()


def test_bad_arguments(runs):
    with pytest.raises(ValueError, match="factors or max_compute, not both"):
        backtest(runs, factors=(10,), max_compute=1e20)
    with pytest.raises(ValueError, match="factors must be > 1"):
        backtest(runs, factors=(0.5,))
    with pytest.raises(ValueError, match="no cut left both training and held-out runs"):
        backtest(runs, max_compute=1e40, n_resamples=5)
    with pytest.raises(ValueError, match="reserved for the baseline"):
        backtest(runs, laws={"best_so_far": Chinchilla()})
