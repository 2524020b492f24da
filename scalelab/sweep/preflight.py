"""Before a sweep is created: refuse a spec whose trials training would refuse.

The spec checks its own fields, but some limits belong to training (a learning rate below
1000, a budget no larger than the corpus's training split unless ``repeat_data``). A sweep
created from such a spec would fail every trial, mark the slots done and never retry; so
each cell's configuration is built here at the corners of its search space, with the
prepared corpus, and the first refusal is raised naming the spec's field.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from scalelab.sweep.spec import Cell, Range, SpecError, SweepSpec, WidthRule
from scalelab.sweep.trial import run_fields, val_every

if TYPE_CHECKING:
    from scalelab.data import TokenData

SEARCHED = ("lr", "warmup", "batch_size")


def _corners(spec: SweepSpec, cell: Cell) -> list[dict[str, Any]]:
    """Every combination of each searched parameter's extremes (a range's ends, a list)."""
    values = []
    for name in SEARCHED:
        value = getattr(spec.search, name)
        if isinstance(value, Range):
            values.append([value.low, value.high])
        elif isinstance(value, WidthRule):
            lrs = value.lrs(cell.d_model)
            values.append([min(lrs), max(lrs)])
        else:
            values.append(list(value) if isinstance(value, list) else [value])
    return [dict(zip(SEARCHED, combo, strict=True)) for combo in itertools.product(*values)]


def _spec_field(config_field: str) -> str:
    """Where a TrainConfig field comes from in the spec."""
    if config_field in SEARCHED:
        return f"search.{config_field}"
    if config_field == "tokens":
        return "budgets"
    if config_field in ("context", "variant", "corpus", "tokenizer"):
        return config_field
    return f"train.{config_field}"


def preflight(spec: SweepSpec, data: TokenData) -> None:
    """Raise ``SpecError`` naming the field if training would refuse some cell's trials."""
    if spec.stage != "pretrain":
        return  # stage configs are checked by their own runners; budgets are in steps
    from scalelab.resources import check_resources
    from scalelab.train import budget
    from scalelab.training.config import TrainConfig, check_no_repeats

    for cell in spec.cells():
        for params in _corners(spec, cell):
            try:
                cfg = TrainConfig(
                    corpus=spec.corpus,
                    tokenizer=spec.tokenizer,
                    tokens=cell.tokens,
                    val_every=val_every(spec, cell),
                    **run_fields(spec, cell, 0, params),
                )
            except ValidationError as err:
                first = err.errors()[0]
                field = _spec_field(str(first["loc"][0])) if first["loc"] else "spec"
                raise SpecError(
                    f"{field}: training refuses {first.get('input')!r} ({first['msg']}) "
                    f"in cell {cell.key}; no trial of it could run"
                ) from None
            check_resources(cfg, cfg.model_cfg(data.vocab_size))  # sizes: [1e12]
            _, tokens, _ = budget(cfg)
            try:
                check_no_repeats(tokens, len(data.train), cfg)
            except ValueError as err:
                raise SpecError(f"budgets: cell {cell.key}: {err}") from None
