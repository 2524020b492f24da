"""Law selection by backtest, forecast intervals and loss-curve transfer, on synthetic ladders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast.forecast import (
    cell_table,
    curve_shape,
    edge_budgets,
    forecast,
    predict_curve,
    select_law,
)
from scalelab.forecast.forms import frontier_points

E, A, ALPHA, B, BETA = 1.2, 40.0, 0.35, 90.0, 0.3
FLOPS_PER_PARAM = 9.0  # compute_full = 9·N·D in these ladders


def true_loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return E + A * n**-ALPHA + B * d**-BETA


def ladder(budgets=(1e10, 3e10, 1e11, 3e11), noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        for n in np.geomspace(2e3, 6e4, 7):
            d = c / (FLOPS_PER_PARAM * n)
            for trial in range(2):  # the worse trial of each cell must be ignored
                loss = true_loss(n, d) * (1 + noise * rng.standard_normal()) + 0.05 * trial
                rows.append(
                    {
                        "run_id": f"{c:g}-{n:.0f}-{trial}",
                        "cell": f"N{n:.0f}-C{c:g}",
                        "budget": c,
                        "n_params": n,
                        "n_params_total": n + 4_000,
                        "tokens": d,
                        "compute_full": c,
                        "loss": loss,
                        "lr": 0.01 * (n / 1e4) ** -0.5,
                        "batch_size": 8,
                    }
                )
    return pd.DataFrame(rows)


def target(c: float) -> dict[str, float]:
    n = 3e5
    d = c / (FLOPS_PER_PARAM * n)
    return {
        "n_params": n,
        "n_params_total": n + 4_000,
        "tokens": d,
        "compute": 6 * n * d,
        "compute_full": c,
    }


def test_cell_table_keeps_the_best_trial_of_each_cell() -> None:
    runs = ladder()
    cells = cell_table(runs)
    assert len(cells) == runs["cell"].nunique() == 28
    assert set(cells["run_id"].str.endswith("-0")) == {True}
    with pytest.raises(ValueError, match="lack columns"):
        cell_table(runs.drop(columns=["compute_full"]))


def test_backtest_selects_a_law_that_extrapolates_the_held_out_budgets() -> None:
    cells = cell_table(ladder())
    selection = select_law(cells, by="backtest")
    mine = selection.of(selection.chosen)
    # Four budgets: the largest held out, then the two largest (one + two predictions).
    assert [b.held_out for b in mine] == [3e11, 1e11, 3e11]
    assert all(abs(b.error) < 0.01 and b.decades > 0 for b in mine)
    table = selection.table()
    assert table["chosen"].sum() == 1
    assert table.loc[table["chosen"], "rms log error"].iloc[0] == table["rms log error"].min()
    assert selection.error_per_decade(selection.chosen) < 0.02


def test_forecast_interval_covers_the_truth_and_widens_with_distance() -> None:
    cells = cell_table(ladder())
    selection = select_law(cells, by="backtest")
    near = forecast(cells, target(3e12), selection, n_resamples=60)
    far = forecast(cells, target(3e14), selection, n_resamples=60)
    for result, c in ((near, 3e12), (far, 3e14)):
        t = target(c)
        truth = float(true_loss(t["n_params"], t["tokens"]))
        assert result.lo < truth < result.hi
        assert abs(result.loss / truth - 1) < 0.03
    assert far.decades == pytest.approx(near.decades + 2)
    assert far.form_halfwidth > near.form_halfwidth
    assert np.isfinite(far.naive_loss)


def test_select_law_needs_three_budgets() -> None:
    with pytest.raises(ValueError, match="at least 3 budgets"):
        select_law(cell_table(ladder(budgets=(1e10, 1e11))))


def test_curve_shape_transfers_a_collapsed_curve_exactly() -> None:
    fractions = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    shape = 1 + 2.0 * (1 - fractions) ** 2  # (L(f) − E) / (L(1) − E)
    rows = [
        {"run_id": run, "fraction": f, "loss": E + (final - E) * g}
        for run, final in (("a", 2.4), ("b", 2.1))
        for f, g in zip(fractions, shape, strict=True)
    ]
    rows.append({"run_id": "cut", "fraction": 0.5, "loss": 9.0})  # unfinished: ignored
    median = curve_shape(pd.DataFrame(rows), floor=E)
    predicted = predict_curve(1.7, E, median)
    np.testing.assert_allclose(predicted.to_numpy(), E + 0.5 * shape)
    with pytest.raises(ValueError, match="no complete curve"):
        curve_shape(pd.DataFrame(rows[-1:]), floor=E)


def test_edge_budgets_flags_unbracketed_optima() -> None:
    cells = cell_table(ladder())
    assert edge_budgets(cells) == {}
    best = frontier_points(cells)
    assert list(best["budget"]) == sorted(best["budget"])
    # Without the sizes below the largest budget's optimum, that optimum sits at the low edge.
    n_best = best["n_params"].iloc[-1]
    top = cells[(cells["budget"] == 3e11) & (cells["n_params"] >= n_best)]
    assert edge_budgets(top) == {3e11: "low"}
    assert edge_budgets(cells[cells["n_params"] < 4e3]) == {
        b: "high" for b in sorted(cells["budget"].unique())
    }


def test_a_ladder_in_the_plateau_bend_selects_the_plateau_law() -> None:
    # Frontier losses on L0 / (1 + (C/C0)^0.3): the log-log slope steepens with compute,
    # so the GPT-4 form fitted below the held-out budget over-predicts it.
    plateau, c0, alpha = 3.2, 2e12, 0.3
    rows = []
    for c in (1e10, 1.6e10, 2.5e10, 4e10, 6.3e10, 1e11):
        for i, n in enumerate((2e3, 4e3, 8e3)):
            loss = plateau / (1 + (c / c0) ** alpha) * (1.0 if i == 1 else 1.02)
            rows.append(
                {
                    "run_id": f"{c:g}-{n:g}",
                    "cell": f"{c:g}-{n:g}",
                    "budget": c,
                    "n_params": n,
                    "n_params_total": n + 4_000,
                    "tokens": c / (FLOPS_PER_PARAM * n),
                    "compute_full": c,
                    "loss": loss,
                    "unigram": plateau,
                }
            )
    cells = cell_table(pd.DataFrame(rows))
    selection = select_law(cells, by="backtest")
    assert "L0" in selection.chosen.name
    result = forecast(cells, target(1e13), selection, n_resamples=40)
    assert result.loss == pytest.approx(plateau / (1 + (1e13 / c0) ** alpha), rel=1e-3)
    gpt4 = next(
        c for c in {b.candidate for b in selection.backtests} if c.name.startswith("L(C) = E + A")
    )
    assert all(b.error > 0 for b in selection.of(gpt4))  # the saturating form is too pessimistic


def test_the_study_chooses_as_law_auto_does_and_uses_the_benchmarks_form_error() -> None:
    from scalelab.forecast.calibration import stored_form_error
    from scalelab.forecast.chooser import choose_form

    cells = cell_table(ladder())
    selection = select_law(cells)
    auto = choose_form(cells)
    assert selection.choice == auto and auto.form.name in selection.chosen.name
    assert selection.backtests  # every candidate is still backtested, as a diagnostic
    result = forecast(cells, target(3e13), selection, n_resamples=40)
    decades = np.log10(target(3e13)["compute"] / cells["compute"].max())
    k = stored_form_error("auto").per_decade(decades, 0.9)
    assert result.decades == pytest.approx(decades)
    assert result.form_halfwidth == pytest.approx(k * decades)
    assert result.extra["choice"]["form"] == auto.form.name
