"""Bootstrap: reproducibility, run-level resampling, intervals and predictions."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import (
    BootstrapResult,
    Chinchilla,
    PowerLaw,
    Prediction,
    bootstrap,
    fit_law,
)
from scalelab.forecast import fit as fit_module
from scalelab.forecast.runs import resample_units

TRUE = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def noisy_runs(n=80, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "n_params": np.exp(rng.uniform(np.log(1e7), np.log(3e9), n)),
            "tokens": np.exp(rng.uniform(np.log(1e8), np.log(1e11), n)),
        }
    )
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens) * np.exp(
        noise * rng.normal(size=n)
    )
    return df


@pytest.fixture(scope="module")
def runs():
    return noisy_runs()


@pytest.fixture(scope="module")
def fit(runs):
    return fit_law(runs, engine="varpro", check_identifiability=False)


@pytest.fixture(scope="module")
def boot(fit, runs):
    return bootstrap(fit, runs, n_resamples=120, seed=0)


def test_same_seed_same_samples_and_other_seed_differs(fit, runs):
    first = bootstrap(fit, runs, n_resamples=30, seed=0)
    again = bootstrap(fit, runs, n_resamples=30, seed=0)
    np.testing.assert_array_equal(again.samples, first.samples)
    other = bootstrap(fit, runs, n_resamples=30, seed=1)
    assert not np.array_equal(other.samples, first.samples)


def test_worker_processes_do_not_change_the_result(fit, runs):
    serial = bootstrap(fit, runs, n_resamples=24, seed=3, n_jobs=1)
    parallel = bootstrap(fit, runs, n_resamples=24, seed=3, n_jobs=2)
    np.testing.assert_array_equal(parallel.samples, serial.samples)


def test_intervals_cover_the_true_parameters(boot):
    table = boot.param_intervals(level=0.95)
    for name, value in TRUE.params.items():
        assert table.loc[name, "lo"] <= value <= table.loc[name, "hi"], name
    assert (table["se"] > 0).all()
    assert boot.n_failed == 0 and boot.n_resamples == 120
    assert boot.samples.shape == (120, 5)


def test_wider_level_gives_wider_intervals(boot):
    narrow, wide = boot.param_intervals(level=0.5), boot.param_intervals(level=0.95)
    assert ((wide.hi - wide.lo) > (narrow.hi - narrow.lo)).all()


def test_resampling_draws_whole_runs_not_checkpoints():
    # Three checkpoints per run: a resample must contain all or none of a run's rows.
    rows = []
    for i, (n, d) in enumerate(
        zip(np.geomspace(1e7, 1e9, 12), np.geomspace(1e9, 1e11, 12), strict=True)
    ):
        for frac in (0.25, 0.5, 1.0):
            rows.append({"run_id": f"r{i}", "n_params": n, "tokens": d * frac, "step": frac})
    df = pd.DataFrame(rows)
    df["loss"] = TRUE.predict(n_params=df.n_params, tokens=df.tokens)
    units, n_units, unit = resample_units(df)
    assert (unit, n_units) == ("run_id", 12)
    fit = fit_law(df, check_identifiability=False)
    result = bootstrap(fit, df, n_resamples=5, seed=0)
    assert (result.unit, result.n_units) == ("run_id", 12)
    assert resample_units(df.drop(columns="run_id"))[1:] == (36, "row")


def test_predict_returns_value_and_interval(boot):
    pred = boot.predict(n_params=7e10, tokens=1.4e12)
    assert isinstance(pred, Prediction) and isinstance(pred.value, float)
    assert pred.value == pytest.approx(boot.law.predict(n_params=7e10, tokens=1.4e12))
    assert pred.lo < pred.value < pred.hi and pred.level == 0.9
    assert pred.covers(TRUE.predict(n_params=7e10, tokens=1.4e12))


def test_prediction_interval_is_wider_than_confidence_interval(boot):
    p = boot.predict(n_params=1e9, tokens=2e10)
    c = boot.predict(n_params=1e9, tokens=2e10, kind="confidence")
    assert p.hi - p.lo > c.hi - c.lo


def test_predict_is_vectorised(boot):
    pred = boot.predict(n_params=np.array([1e8, 1e9, 1e10]), tokens=np.array([2e9, 2e10, 2e11]))
    assert pred.value.shape == pred.lo.shape == pred.hi.shape == (3,)
    assert np.all(pred.lo <= pred.hi)
    frame = pred.to_frame()
    assert list(frame.columns) == ["n_params", "tokens", "loss", "lo", "hi", "level"]
    # A scalar input broadcasts against an array one.
    broadcast = boot.predict(n_params=[1e8, 1e9], tokens=2e10).to_frame()
    assert broadcast["tokens"].tolist() == [2e10, 2e10] and len(broadcast) == 2


def test_compute_optimal_prediction(boot):
    pred = boot.predict(compute=1e22)
    assert pred.value == pytest.approx(boot.law.loss_at_compute(1e22))
    assert pred.lo < pred.value < pred.hi
    # N and C together imply D = C/(6N).
    n_c = boot.predict(n_params=1e9, compute=6e20)
    assert n_c.value == pytest.approx(boot.law.predict(n_params=1e9, tokens=1e11))


def test_predict_rejects_incomplete_inputs(boot):
    with pytest.raises(ValueError, match="give n_params and tokens, or compute"):
        boot.predict()
    with pytest.raises(ValueError, match="needs n_params and tokens"):
        boot.predict(n_params=1e9)
    with pytest.raises(ValueError, match="kind must be"):
        boot.predict(compute=1e21, kind="credible")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval level"):
        boot.predict(compute=1e21, level=90)


def test_compute_for_loss_inverts_the_law_with_an_interval(boot):
    pred = boot.compute_for_loss(2.2)
    assert pred.quantity == "compute"
    assert boot.law.loss_at_compute(pred.value) == pytest.approx(2.2, rel=1e-8)
    assert pred.lo < pred.value < pred.hi


def test_unreachable_target_gives_infinite_compute_not_nan(boot):
    pred = boot.compute_for_loss(1.0)  # below every sample's E
    assert pred.value == math.inf and pred.hi == math.inf and pred.lo == math.inf


def test_round_trip_through_json_keeps_predictions(boot):
    restored = BootstrapResult.from_dict(json.loads(json.dumps(boot.to_dict())))
    a = boot.predict(n_params=[1e9, 1e10], tokens=[2e10, 2e11])
    b = restored.predict(n_params=[1e9, 1e10], tokens=[2e10, 2e11])
    np.testing.assert_array_equal(a.lo, b.lo)
    np.testing.assert_array_equal(a.hi, b.hi)
    assert (
        Prediction.from_dict(json.loads(json.dumps(a.to_dict()))).value.tolist() == a.value.tolist()
    )


def test_prediction_with_infinite_bounds_round_trips():
    pred = Prediction(1e24, 5e23, math.inf, level=0.9, quantity="compute")
    restored = Prediction.from_dict(json.loads(json.dumps(pred.to_dict())))
    assert restored.hi == math.inf and restored.value == 1e24


def test_bootstrap_of_a_compute_law():
    rng = np.random.default_rng(4)
    c = np.geomspace(1e17, 1e21, 40)
    law = PowerLaw(variable="compute", E=1.7, A=2000.0, alpha=0.15)
    runs = pd.DataFrame(
        {"compute": c, "loss": law.predict(compute=c) * np.exp(0.01 * rng.normal(size=40))}
    )
    fit = fit_law(runs, PowerLaw(variable="compute"), check_identifiability=False)
    result = bootstrap(fit, runs, n_resamples=60, seed=0)
    pred = result.predict(compute=1e23)
    assert pred.lo < pred.value < pred.hi


def test_bootstrap_checks_its_inputs(fit, runs):
    with pytest.raises(ValueError, match="the fit used 80"):
        bootstrap(fit, runs.head(50))
    with pytest.raises(ValueError, match="n_resamples must be at least 2"):
        bootstrap(fit, runs, n_resamples=1)
    with pytest.raises(ValueError, match="n_jobs must be"):
        bootstrap(fit, runs, n_jobs=0)


def test_long_fits_and_bootstraps_report_progress(monkeypatch, fit, runs):
    # Lines come after _PROGRESS_AFTER seconds, at most every _PROGRESS_EVERY: both 0 here.
    monkeypatch.setattr(fit_module, "_PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(fit_module, "_PROGRESS_EVERY", 0.0)
    lines: list[str] = []
    fit_law(runs, progress=lines.append)
    assert "fit: L-BFGS-B: 16/16 starts (" in " ".join(lines)
    assert any(line.startswith("fit: identifiability check: 32/32 resamples") for line in lines)
    for n_jobs in (1, 2):
        lines.clear()
        bootstrap(fit, runs, n_resamples=8, seed=0, n_jobs=n_jobs, progress=lines.append)
        assert lines[-1].startswith("bootstrap: 8/8 resamples (")
        assert len(lines) == (8 if n_jobs == 1 else 2)  # workers report per task of 4


def test_progress_goes_to_the_forecast_logger_and_short_runs_are_quiet(
    monkeypatch, caplog, fit, runs
):
    with caplog.at_level("INFO", logger="scalelab.forecast"):
        bootstrap(fit, runs, n_resamples=4, seed=0)
        assert caplog.records == []  # well under the 3 s before a first progress line
        monkeypatch.setattr(fit_module, "_PROGRESS_AFTER", 0.0)
        bootstrap(fit, runs, n_resamples=4, seed=0)
    assert caplog.records[-1].name == "scalelab.forecast"
    assert caplog.records[-1].getMessage().startswith("bootstrap: 4/4 resamples")
