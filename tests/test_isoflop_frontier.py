"""Budget optima from parabolas over IsoFLOP profiles, and the second study's profile and
learning-rate plan (no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast.isoflop_frontier import interpolated_frontier, scatter
from scalelab.studies.predictable_v2 import best_multiplier, profile, rerun_cells
from scalelab.sweep.spec import parse_spec


def _profiles(optima: dict[float, tuple[float, float]], sizes: np.ndarray) -> pd.DataFrame:
    """Cells on exact parabolas in log N: budget -> (N*, L*), curvature 0.05."""
    rows = []
    for budget, (n_opt, l_opt) in optima.items():
        for n in sizes:
            rows.append(
                {
                    "cell": f"N{n:.3g}-C{budget:.2g}",
                    "budget": budget,
                    "n_params": n,
                    "n_params_total": n + 1000,
                    "tokens": budget / (6 * n),
                    "compute_full": budget * 1.01,
                    "loss": l_opt + 0.05 * math.log(n / n_opt) ** 2,
                    "unigram": 3.25,
                }
            )
    return pd.DataFrame(rows)


def test_parabola_vertices_recover_each_budgets_optimum() -> None:
    sizes = np.geomspace(1e3, 3e4, 9)
    optima = {1e10: (2.5e3, 2.8), 3e10: (6e3, 2.6), 1e11: (1.4e4, 2.45)}
    front = interpolated_frontier(_profiles(optima, sizes))
    assert front["interior"].all() and (front["n_sizes"] == 5).all()
    for _, row in front.iterrows():
        n_opt, l_opt = optima[row["budget"]]
        assert row["n_params"] == pytest.approx(n_opt, rel=1e-6)
        assert row["loss"] == pytest.approx(l_opt, abs=1e-9)
        assert row["tokens"] == pytest.approx(row["budget"] / (6 * n_opt), rel=1e-6)
        assert row["compute"] == pytest.approx(row["budget"], rel=1e-6)
        # Below the best cell: the vertex lies between grid sizes.
        best = _profiles({row["budget"]: (n_opt, l_opt)}, sizes)["loss"].min()
        assert row["loss"] <= best
    assert scatter(front, front["loss"].to_numpy()) == 0.0
    assert scatter(front, front["loss"].to_numpy() * math.exp(0.01)) == pytest.approx(0.01)


def test_an_optimum_at_the_edge_keeps_its_best_cell_flagged() -> None:
    sizes = np.geomspace(1e3, 3e4, 6)
    cells = _profiles({1e10: (300.0, 2.8)}, sizes)  # the optimum lies below every size
    (row,) = interpolated_frontier(cells).to_dict("records")
    assert not row["interior"]
    assert row["n_params"] == pytest.approx(1e3) and row["loss"] == cells["loss"].min()


def test_profile_averages_seeds_and_rerun_cells_are_each_budgets_best() -> None:
    cells = _profiles({1e10: (2.5e3, 2.8), 3e10: (6e3, 2.6)}, np.geomspace(1e3, 3e4, 5))
    chosen = rerun_cells(cells, 2)
    assert len(chosen) == 4
    for budget, group in cells.groupby("budget"):
        assert set(chosen[chosen["budget"] == budget]["cell"]) == set(
            group.nsmallest(2, "loss")["cell"]
        )
    name = chosen["cell"].iloc[0]
    base = float(cells.set_index("cell").loc[name, "loss"])
    out = profile(cells, {f"{name}/seed1": base + 0.02, f"{name}/seed2": base + 0.04}).set_index(
        "cell"
    )
    assert out.loc[name, "loss"] == pytest.approx(base + 0.02)
    assert out.loc[name, "loss_best"] == base
    assert out.loc[name, "seed_sd"] == pytest.approx(0.02)
    others = out.drop(index=name)
    assert others["seed_sd"].isna().all() and (others["loss"] == others["loss_best"]).all()


def test_best_multiplier_is_the_upper_budgets_preference_snapped_to_the_grid() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "sizes": [1e3, 3e3],
            "budgets": {"compute": [1e9, 4e9]},
            "train": {"depth": 2, "heads": 1},
            "search": {
                "sampler": "grid",
                "trials": 3,
                "lr": {"scale": 0.1, "power": 1, "multipliers": [0.5, 1, 2]},
            },
        }
    )
    cells = pd.DataFrame(
        {
            "budget": [1e9, 1e9, 4e9, 4e9, 8e9, 8e9],
            "d_model": [8, 16, 8, 16, 8, 16],
            # The lower budget prefers 0.5x; the upper half 1.8x and 2.2x of the rule.
            "lr": [0.5 * 0.1 / 8, 0.1 / 16, 1.8 * 0.1 / 8, 0.1 / 16, 0.1 / 8, 2.2 * 0.1 / 16],
            "loss": [2.0, 2.1, 1.8, 1.9, 1.8, 1.7],
        }
    )
    assert best_multiplier(spec, cells) == 2
