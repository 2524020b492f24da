"""Fixed-depth shape families, learning-rate rules with multipliers, and per-budget size windows:
the pieces that let one ladder and its targets share a design."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scalelab.model import GPT, GPTConfig, config_for_params
from scalelab.sweep.spec import SpecError, parse_spec
from scalelab.sweep.trial import choices
from scalelab.train import TrainConfig

BASE = {
    "name": "t",
    "corpus": "stdlib-notests",
    "context": 64,
    "sizes": [1e3, 3e3],
    "budgets": {"compute": [1e9, 4e9], "flops": "full"},
    "train": {"depth": 2, "heads": 1},
}


@pytest.mark.parametrize(("depth", "heads"), [(2, 1), (3, 2), (1, None)])
def test_fixed_depth_family_varies_width_only_and_lands_nearest(
    depth: int, heads: int | None
) -> None:
    # The family's widths: multiples of 2·heads, or the size rule's (multiples of its head
    # dimension: 8 below 64, 16 below 256, then 32).
    if heads:
        widths = list(range(2 * heads, 4000, 2 * heads))
    else:
        widths = [*range(8, 64, 8), *range(64, 256, 16), *range(256, 4000, 32)]
    widths = [w for w in widths if w >= 4]
    for target in np.geomspace(5e2, 3e6, 40):
        cfg = config_for_params(float(target), depth=depth, heads=heads)
        assert cfg.n_layer == depth and cfg.d_model in widths
        assert cfg.n_head == (heads or cfg.d_model // cfg.head_dim)
        # No other width of the family is closer to the target in log space.
        i = widths.index(cfg.d_model)
        for other in widths[max(0, i - 1) : i + 2]:
            alt = GPTConfig(n_layer=depth, n_head=heads or 1, d_model=other).n_params
            assert abs(math.log(cfg.n_params / target)) <= abs(math.log(alt / target)) + 1e-12
    # The count is the model's own.
    cfg = config_for_params(2e5, depth=2, heads=1, context=128)
    assert cfg.n_params == GPT(cfg).num_params(non_embedding=True)


def test_fixed_depth_family_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="depth"):
        config_for_params(1e4, depth=0)
    with pytest.raises(ValueError, match="depth"):
        config_for_params(1e4, heads=2)
    with pytest.raises(ValueError, match="heads: set depth"):
        TrainConfig(n_params_target=1e4, heads=1)
    with pytest.raises(ValueError, match="depth: a preset"):
        TrainConfig(preset="n10k", depth=2)
    assert TrainConfig(n_params_target=3e4, depth=3).model_cfg(256).n_layer == 3


def test_spec_sizes_follow_the_family_and_refuse_presets() -> None:
    spec = parse_spec(BASE)
    assert {s.shape[0] for s in spec.resolved_sizes()} == {2}
    assert {s.shape[1] for s in spec.resolved_sizes()} == {1}
    with pytest.raises(SpecError, match="n10k are presets"):
        parse_spec({**BASE, "sizes": ["n10k", 3e3]})


def test_lr_rule_multipliers_are_the_grid_and_keep_old_hashes() -> None:
    rule = {"scale": 0.1, "power": 0.8}
    spec = parse_spec(
        {
            **BASE,
            "search": {
                "sampler": "grid",
                "trials": 6,
                "lr": {**rule, "multipliers": [0.5, 1, 2]},
                "batch_size": [1, 2],
            },
        }
    )
    assert spec.search.grid_size() == 6
    cell = spec.cells()[0]
    base = 0.1 / cell.d_model**0.8
    assert choices(spec, cell, "lr") == pytest.approx([0.5 * base, base, 2 * base])
    with pytest.raises(SpecError, match="exceeds the 6 points"):
        parse_spec({**BASE, "search": {**spec.search.model_dump(), "trials": 7}})
    with pytest.raises(SpecError, match="multipliers"):
        parse_spec({**BASE, "search": {"lr": {**rule, "multipliers": [1, -1]}}})
    # A rule without multipliers hashes as it did before they existed.
    plain = parse_spec({**BASE, "search": {"lr": rule}})
    assert "multipliers" not in plain.identity()["search"]["lr"]
    explicit = parse_spec({**BASE, "search": {"lr": {**rule, "multipliers": [1]}}})
    assert explicit.spec_hash() == plain.spec_hash()


def test_tokens_per_param_range_keeps_the_sizes_around_each_budget() -> None:
    sizes = [5e2, 1e3, 2e3, 4e3, 8e3]
    window = {"low": 20, "high": 200}
    spec = parse_spec(
        {
            **BASE,
            "sizes": sizes,
            "budgets": {**BASE["budgets"], "tokens_per_param_range": window},
        }
    )
    everything = parse_spec({**BASE, "sizes": sizes})
    kept = {(c.budget, c.n_params) for c in spec.cells()}
    for cell in everything.cells():
        size = next(s for s in everything.resolved_sizes() if s.n_params == cell.n_params)
        ratio = float(cell.budget[1:]) / everything.flops_per_token(size) / cell.n_params
        assert ((cell.budget, cell.n_params) in kept) == (20 <= ratio <= 200)
    assert {c.budget for c in spec.cells()} == {"C1e9", "C4e9"}
    with pytest.raises(SpecError, match="keep no size within tokens_per_param_range"):
        parse_spec(
            {
                **BASE,
                "budgets": {**BASE["budgets"], "tokens_per_param_range": {"low": 1e6, "high": 1e7}},
            }
        )
    with pytest.raises(SpecError, match="give budgets as compute"):
        parse_spec({**BASE, "budgets": {"tokens": [1e5], "tokens_per_param_range": window}})
