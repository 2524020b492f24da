"""Over-optimisation analysis: best-of-n KL and estimator, the two functional forms, fits."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast.overoptimization import (
    OveroptFit,
    OveroptScaling,
    bon_curve,
    bon_estimate,
    bon_kl,
    fit_overoptimization,
    fit_overoptimization_by_size,
    gold_model,
)


def test_bon_kl_is_log_n_minus_n_minus_one_over_n() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    np.testing.assert_allclose(bon_kl([1, 4]), [0.0, math.log(4) - 0.75])
    with pytest.raises(ValueError, match="n must be >= 1"):
        bon_kl(0)


def test_bon_estimate_equals_the_average_over_all_subsets() -> None:
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    for n in range(1, 8):
        brute = np.mean(
            [
                np.mean(
                    [
                        gold[p][list(s)][np.argmax(proxy[p][list(s)])]
                        for s in itertools.combinations(range(7), n)
                    ]
                )
                for p in range(3)
            ]
        )
        assert bon_estimate(proxy, gold, n) == pytest.approx(brute, rel=1e-12)
    assert bon_estimate(proxy, gold, 1) == pytest.approx(gold.mean())
    assert bon_estimate(proxy, proxy, 7) == pytest.approx(proxy.max(axis=1).mean())
    with pytest.raises(ValueError, match="n must be in"):
        bon_estimate(proxy, gold, 8)


def test_bon_curve_columns_and_monotone_proxy() -> None:
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(20, 16))
    gold = proxy + rng.normal(size=(20, 16))
    curve = bon_curve(proxy, gold, [1, 2, 4, 8, 16])
    assert list(curve.columns) == ["n", "kl", "d", "proxy", "gold"]
    assert curve.proxy.is_monotonic_increasing and curve.kl.is_monotonic_increasing
    np.testing.assert_allclose(curve.d, np.sqrt(curve.kl))


@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 0.8, 0.3), ("rl", 0.5, 0.25)])
def test_fit_recovers_known_coefficients(form: str, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(2)
    d = np.linspace(0.05, 4.0, 40)
    reward = gold_model(form, d, alpha, beta) + rng.normal(0, 0.01, d.size)
    fit = fit_overoptimization(d, reward, form, n_resamples=300, seed=0)
    assert fit.alpha == pytest.approx(alpha, abs=0.02)
    assert fit.beta == pytest.approx(beta, abs=0.02)
    table = fit.intervals()
    assert table.loc["alpha", "lo"] < alpha < table.loc["alpha", "hi"]
    assert table.loc["beta", "lo"] < beta < table.loc["beta", "hi"]
    d_star, r_star = fit.peak()
    grid = np.linspace(0.01, 20, 20001)
    assert r_star == pytest.approx(fit.predict(grid).max(), rel=1e-4)
    assert d_star == pytest.approx(grid[np.argmax(fit.predict(grid))], rel=1e-2)
    again = OveroptFit.from_dict(fit.to_dict())
    assert again.alpha == fit.alpha and np.array_equal(again.samples, fit.samples)
    assert f"R_{form}(d)" in str(fit) and "peak d*" in str(fit)


def test_model_forms_vanish_at_zero_and_reject_bad_input() -> None:
    assert gold_model("bon", 0.0, 1.0, 1.0) == 0.0
    assert gold_model("rl", 0.0, 1.0, 1.0) == 0.0
    assert gold_model("rl", math.e, 1.0, 1.0) == pytest.approx(0.0)  # e·(1 − log e)
    with pytest.raises(ValueError, match="form must be"):
        fit_overoptimization([1, 2], [0, 0], "dpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two distinct positive d"):
        fit_overoptimization([0.0, 1.0, 1.0], [0.0, 0.1, 0.1], "bon")
    with pytest.raises(ValueError, match=">= 0"):
        fit_overoptimization([-1.0, 1.0, 2.0], [0.0, 0.1, 0.1], "bon")


def test_group_bootstrap_resamples_whole_groups() -> None:
    # Two runs with the same d grid, exactly on curves with α = 0.5 and α = 0.7: a resample
    # holds run A twice, both runs, or run B twice, so α takes only 0.5, 0.6 or 0.7.
    d = np.tile(np.linspace(0.1, 3, 10), 2)
    alphas = np.repeat([0.5, 0.7], 10)
    reward = d * (alphas - 0.2 * d)
    by_run = fit_overoptimization(
        d, reward, "bon", groups=np.repeat(["a", "b"], 10), n_resamples=200, seed=0
    )
    assert by_run.alpha == pytest.approx(0.6) and by_run.n_groups == 2
    assert set(np.round(by_run.samples[:, 0], 9)) == {0.5, 0.6, 0.7}
    by_point = fit_overoptimization(d, reward, "bon", n_resamples=200, seed=0)
    assert len(set(np.round(by_point.samples[:, 0], 9))) > 3
    with pytest.raises(ValueError, match="one label per point"):
        fit_overoptimization(d, reward, "bon", groups=[0, 1])


def test_fit_by_size_tabulates_and_finds_the_log_trend() -> None:
    rows = []
    d = np.linspace(0.1, 3, 12)
    for size in (1e4, 1e5, 1e6):
        beta = 0.5 - 0.1 * math.log10(size)  # β shrinks by 0.1 per decade
        for di in d:
            rows.append({"rm_n_params": size, "d": di, "gold": gold_model("bon", di, 0.7, beta)})
    scaling = fit_overoptimization_by_size(pd.DataFrame(rows), "bon", reward="gold", n_resamples=50)
    assert scaling.sizes == (1e4, 1e5, 1e6)
    intercept, slope = scaling.trends["beta"]
    assert slope == pytest.approx(-0.1) and intercept == pytest.approx(0.5)
    assert scaling.trends["alpha"][1] == pytest.approx(0.0, abs=1e-9)
    assert list(scaling.table.columns[:4]) == ["size", "alpha", "alpha_lo", "alpha_hi"]
    again = OveroptScaling.from_dict(scaling.to_dict())
    assert again.trends == scaling.trends
    assert "log10(size)" in str(scaling)
    with pytest.raises(ValueError, match="lacks column"):
        fit_overoptimization_by_size(pd.DataFrame(rows), "bon", reward="proxy")


def test_analysis_module_does_not_import_torch() -> None:
    code = (
        "import sys, scalelab.forecast.overoptimization\n"
        "assert not {'torch', 'lightning', 'mlflow'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
