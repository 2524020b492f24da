"""A ladder's edge extensions add one size beyond each edge optimum, at that budget only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scalelab.model import config_for_params
from scalelab.studies.predictable import _extension_specs
from scalelab.sweep.spec import load_spec, parse_spec

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "predictable-scaling-v2-ci.yaml"


def _cells(spec, losses: dict[float, tuple[int, list[float]]]) -> pd.DataFrame:
    """Rows of (budget, size, loss): each budget's losses belong to the spec's sizes from
    index ``first`` on."""
    family = spec.shape_family()
    sizes = [config_for_params(s, variant=spec.variant, **family).n_params for s in spec.sizes]
    return pd.DataFrame(
        [
            {"budget": budget, "n_params": n, "loss": loss}
            for budget, (first, row) in losses.items()
            for n, loss in zip(sizes[first:], row, strict=False)
        ]
    )


def test_each_edge_budget_gets_its_own_size_and_nothing_else() -> None:
    spec = load_spec(SPEC)
    cells = _cells(
        spec,
        {
            2e9: (0, [3.1, 3.0, 2.95]),  # best at the largest size: extend above
            6e9: (1, [2.6, 2.7, 2.8, 2.9]),  # best at the smallest: extend below
            1e10: (2, [2.9, 2.7, 2.8]),  # bracketed: nothing to add
        },
    )
    specs = _extension_specs(spec, 1, cells)
    assert [(s["budgets"]["compute"], len(s["sizes"])) for s in specs] == [([2e9], 1), ([6e9], 1)]
    high, low = (s["sizes"][0] for s in specs)
    assert high > cells[cells["budget"] == 2e9]["n_params"].max()
    assert low < cells[cells["budget"] == 6e9]["n_params"].min()
    # The size below 6e9's edge has the shape of the ladder's smallest size, which 2e9 trained
    # but 6e9 did not: it is added at 6e9, and not at 2e9, where it would be a repeat.
    family = spec.shape_family()
    assert config_for_params(low, variant=spec.variant, **family).n_params in set(
        cells[cells["budget"] == 2e9]["n_params"]
    )
    # Each is a valid spec whose only cells are the new size at its own budget.
    for data in specs:
        cells_of = parse_spec(data, data["name"]).cells()
        assert {c.budget_value for c in cells_of} == set(data["budgets"]["compute"])
        assert len({c.n_params for c in cells_of}) == 1
    assert len({s["name"] for s in specs}) == 2


def test_a_shape_already_tried_at_that_budget_is_not_trained_again() -> None:
    spec = load_spec(SPEC)
    smallest = config_for_params(1, variant=spec.variant, **spec.shape_family()).n_params
    # The best run is the family's smallest shape: nothing smaller exists to add.
    cells = pd.DataFrame(
        {"budget": [2e9, 2e9], "n_params": [smallest, 2 * smallest], "loss": [3.0, 3.1]}
    )
    assert _extension_specs(spec, 1, cells) == []
