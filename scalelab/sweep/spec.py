"""Sweep specs: the YAML a user writes, validated, and the grid of cells it defines.

A spec names a corpus and tokenizer, a model variant, a **size axis** (presets such as ``n100k``
or target non-embedding parameter counts such as ``3e5``), a **budget axis** (compute budgets C
in FLOPs, giving D = C / (6·N) per size as in an IsoFLOP design; token counts D; or a tokens
per parameter ratio), a hyper-parameter search run in every cell, a pruner, seeds, and where the
Optuna studies and MLflow runs go. A *cell* is one (size, budget, seed); each cell is one Optuna
study with ``search.trials`` trials.

``stage`` picks what a trial trains: ``pretrain`` (``scalelab.train``, the default) or an RLHF
stage (``sft``, ``reward``, ``ppo``, ``classify``: ``scalelab.rlhf.run_stage`` on its synthetic
task), whose budget axis is optimizer steps and whose ``train:`` overrides are the stage's
config fields.

``parametrization: mup`` trains every size in μP relative to ``mup_base_width``; with
``search.lr_tuning: base_width`` only the cells of that width search, and every other cell runs
one trial with the best parameters of the base-width cell of its budget and seed.

Loading reports every mistake with the field it concerns and what is allowed
(``SpecError``); unknown keys are refused, so a typo never silently falls back to a default.
Only pydantic and PyYAML are imported here; the model and trainer modules are imported inside
the validators that need them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scalelab.vocab import Variant, compute_6nd

# Fields of TrainConfig the sweep sets itself; everything else may be overridden under ``train:``.
SWEEP_CONTROLLED = frozenset(
    {
        "preset",
        "n_params_target",
        "variant",
        "context",
        "corpus",
        "tokenizer",
        "tokens",
        "batch_size",
        "lr",
        "warmup",
        "seed",
        "val_every",
        "evals",
        "experiment",
        "run_name",
        "parametrization",
        "mup_base_width",
    }
)
# ... and the fields of an RLHF stage's config it sets (budgets are steps; the trunk is a size).
STAGE_CONTROLLED = SWEEP_CONTROLLED | {"steps", "eval_every", "init"}
BUDGET_AXES = ("compute", "tokens", "tokens_per_param", "steps")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    """Refuse unknown keys, naming the keys that are allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"unknown key {unknown[0]!r}; allowed keys: {', '.join(cls.model_fields)}"
                )
        return data


class Range(_Strict):
    """A continuous search range: log-uniform by default (learning rates), uniform if not."""

    low: float = Field(ge=0)
    high: float = Field(gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high:g}) must be greater than low ({self.low:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log-uniform range needs low > 0 (or set log: false)")
        return self


class WidthRule(_Strict):
    """A learning rate set by the model's width: ``lr = scale / d_model ** power``.

    Adam's best learning rate falls as models widen: as 1/width for hidden layers under muP
    (Yang et al. 2022). On byte-level GPTs here (0.5-1M tokens, context 128, batch 32) the
    best rate was about 1.2e-2 at d_model 16, 3e-3 to 6e-3 at 64 and 2.2e-3 at 112, close to
    0.2 / d_model; hence the default power 1.
    """

    scale: float = Field(gt=0)
    power: float = Field(1.0, ge=0, le=2)
    multipliers: list[float] = Field(
        [1.0], min_length=1, description="choices around the rule, e.g. [0.5, 1, 2]"
    )

    @field_validator("multipliers")
    @classmethod
    def _multipliers_positive(cls, value: list[float]) -> list[float]:
        _positive(value, "lr multipliers")
        if len(set(value)) != len(value):
            raise ValueError(f"lr multipliers list a value twice: {value}")
        return value

    def lr(self, d_model: int) -> float:
        return self.scale / d_model**self.power

    def lrs(self, d_model: int) -> list[float]:
        """The rule's learning rate at ``d_model`` times each multiplier."""
        return [m * self.lr(d_model) for m in self.multipliers]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _float_param(value: Any, what: str, width_rule: bool = False) -> Any:
    """A number (fixed), a list of numbers (choices), {low, high[, log]} (a range) or, for
    the learning rate, {scale[, power]} (a width rule)."""
    rule = (
        " or {scale: ..., power: 1[, multipliers: [0.5, 1, 2]]} (lr = scale / d_model^power)"
        if width_rule
        else ""
    )
    allowed = (
        f"give {what} as a number (fixed), a list of numbers (choices), "
        f"{{low: ..., high: ...}} (a range, log-uniform unless log: false){rule}"
    )
    if isinstance(value, Range | WidthRule):
        return value
    if isinstance(value, dict):
        kind, model = ("width rule", WidthRule) if "scale" in value else ("range", Range)
        if kind == "width rule" and not width_rule:
            raise ValueError(f"{allowed}; got {value!r}")
        try:
            return model.model_validate(value)
        except ValidationError as err:
            raise ValueError(f"{what} {kind}: {describe_errors(err, root='')[0]}") from None
    if isinstance(value, list):
        if not value or not all(_is_number(v) for v in value):
            raise ValueError(f"{allowed}; got {value!r}")
        return [float(v) for v in value]
    if _is_number(value):
        return float(value)
    raise ValueError(f"{allowed}; got {value!r}")


def _positive(values: list[float], field: str) -> None:
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{field} values must be positive numbers, got {v!r}")


class SearchSpec(_Strict):
    """The hyper-parameter search inside each cell."""

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    trials: int = Field(1, ge=1, le=10_000, description="trials per cell")
    startup_trials: int = Field(
        4, ge=0, description="tpe: random trials before the model of good trials is used"
    )
    lr: float | list[float] | Range | WidthRule = 3e-3
    warmup: float | list[float] | Range = 0.05
    batch_size: int | list[int] = 32
    lr_tuning: Literal["per_size", "base_width"] = Field(
        "per_size",
        description="base_width (with parametrization: mup): search at mup_base_width only; "
        "other sizes run one trial with the best parameters found there",
    )

    @field_validator("trials", "startup_trials", "batch_size", mode="before")
    @classmethod
    def _no_bool_counts(cls, value: Any) -> Any:
        return _not_bool(value)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_shape(cls, value: Any) -> Any:
        return _float_param(value, "lr", width_rule=True)

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup_shape(cls, value: Any) -> Any:
        return _float_param(value, "warmup")

    @field_validator("lr")
    @classmethod
    def _lr_values(cls, value: Any) -> Any:
        if not isinstance(value, Range | WidthRule):
            _positive(value if isinstance(value, list) else [value], "lr")
        return value

    @field_validator("warmup")
    @classmethod
    def _warmup_values(cls, value: Any) -> Any:
        values = [value.low, value.high] if isinstance(value, Range) else value
        for v in values if isinstance(values, list) else [values]:
            if not 0.0 <= v < 1.0:
                raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {v!r}")
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_shape(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise ValueError(
                "give batch_size (sequences per step) as a positive integer or a list of "
                f"them; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _grid_is_finite(self) -> SearchSpec:
        if self.sampler != "grid":
            return self
        for name in ("lr", "warmup"):
            if isinstance(getattr(self, name), Range):
                raise ValueError(
                    f"the grid sampler needs {name} as a number or a list of values, not a range"
                )
        points = self.grid_size()
        if self.trials > points:
            raise ValueError(
                f"trials ({self.trials}) exceeds the {points} points of the grid; "
                f"ask for at most {points}"
            )
        return self

    def grid_size(self) -> int:
        size = len(self.lr.multipliers) if isinstance(self.lr, WidthRule) else 1
        for name in ("lr", "warmup", "batch_size"):
            value = getattr(self, name)
            size *= len(value) if isinstance(value, list) else 1
        return size

    def batch_sizes(self) -> list[int]:
        return self.batch_size if isinstance(self.batch_size, list) else [self.batch_size]


class PrunerSpec(_Strict):
    """Stops unpromising trials early, comparing trials of the same cell only.

    Reports are keyed by tokens seen, so trials with different batch sizes compare at the
    same point of training; for an RLHF stage, whose budget is steps, by optimizer step.
    """

    kind: Literal["none", "median", "hyperband"] = "none"
    startup_trials: int = Field(
        2, ge=0, description="median: finished trials before any trial is pruned"
    )
    warmup: float = Field(
        0.25, ge=0.0, lt=1.0, description="median: fraction of the budget before pruning starts"
    )
    reduction_factor: int = Field(3, ge=2, description="hyperband: keep 1/factor per rung")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):  # ``pruner: median``
            return {"kind": data}
        return data


class HeartbeatSpec(_Strict):
    """How a killed worker is detected: no heartbeat for ``grace`` seconds fails its trial,
    which is then retried up to ``max_retry`` times."""

    interval: int = Field(20, ge=1, description="seconds between heartbeats")
    grace: int = Field(90, ge=2, description="seconds without a heartbeat before a trial fails")
    max_retry: int = Field(3, ge=0, description="retries of a trial whose worker died")

    @model_validator(mode="after")
    def _grace_covers_interval(self) -> HeartbeatSpec:
        if self.grace <= self.interval:
            raise ValueError(
                f"grace ({self.grace} s) must exceed the heartbeat interval ({self.interval} s)"
            )
        return self


class GroupSpec(_Strict):
    """Small models of one shape trained together by one worker as one stacked model
    (``scalelab.training.grouped``): each trial keeps its own run, validations, pruning
    reports and result, equal to training it alone. Trials of RLHF stages, larger models,
    GPUs, dropout, ``compile``, several devices or ``eval:`` suites train one at a time.
    ``group: false`` is short for ``enabled: false``."""

    enabled: bool = True
    max_params: float = Field(1e5, gt=0, description="largest non-embedding N trained in groups")
    max_trials: int = Field(8, ge=1, le=256, description="trials trained together at most")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, bool):  # ``group: false``
            return {"enabled": data}
        return data

    @field_validator("max_trials", mode="before")
    @classmethod
    def _no_bool_count(cls, value: Any) -> Any:
        return _not_bool(value)


class Budgets(_Strict):
    """Exactly one budget axis: ``steps`` for an RLHF stage, one of the others to pretrain."""

    compute: list[float] | None = Field(None, description="FLOPs C; D = C / (6·N)")
    tokens: list[float] | None = Field(None, description="training tokens D")
    tokens_per_param: list[float] | None = Field(None, description="D = ratio · N")
    steps: list[int] | None = Field(None, description="optimizer steps of an RLHF stage")
    flops: Literal["6nd", "full"] = Field(
        "6nd",
        description="how compute budgets count FLOPs: 6nd (6·N·D, N non-embedding) or full "
        "(the model's forward and backward matmuls per token, attention and unembedding "
        "included, times D)",
    )

    tokens_per_param_range: Range | None = Field(
        None,
        description="with compute: keep only the cells whose D / N is within {low, high}, so "
        "each budget trains the sizes around its optimum",
    )

    @field_validator("compute", "tokens", "tokens_per_param", "steps")
    @classmethod
    def _values(cls, value: list[Any] | None, info: Any) -> list[Any] | None:
        if value is None:
            return value
        if not value:
            raise ValueError(f"{info.field_name} needs at least one value")
        _positive(value, info.field_name)
        if len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} lists a value twice: {value}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Budgets:
        given = [k for k in BUDGET_AXES if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one budget axis: compute (FLOPs), tokens, or tokens_per_param, "
                "or steps for an RLHF stage" + (f"; got {', '.join(given)}" if given else "")
            )
        return self

    @model_validator(mode="after")
    def _range_with_compute(self) -> Budgets:
        if self.tokens_per_param_range is not None and not self.compute:
            raise ValueError(
                "tokens_per_param_range picks sizes per compute budget; give budgets as compute"
            )
        return self

    @model_validator(mode="after")
    def _flops_with_compute(self) -> Budgets:
        if self.flops != "6nd" and not self.compute:
            raise ValueError("flops counts compute budgets; drop it or give budgets as compute")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in BUDGET_AXES if getattr(self, k))

    @property
    def values(self) -> list[float]:
        return list(getattr(self, self.kind))


@dataclass(frozen=True)
class Size:
    """One point of the size axis: a preset, or a target N on the preset width rule."""

    preset: str | None
    target: float | None
    n_params: int  # exact non-embedding count of the model it builds
    shape: tuple[int, int, int]  # n_layer, n_head, d_model

    @property
    def label(self) -> str:
        return self.preset or f"N{_short(self.target)}"


@dataclass(frozen=True)
class Cell:
    """One (size, budget, seed) of a sweep: one Optuna study of ``search.trials`` trials."""

    key: str
    size: str  # the size's label: a preset name or N<target>
    preset: str | None
    n_params_target: float | None
    n_params: int
    tokens: int
    compute: float
    budget: str  # the label, e.g. C1e13, D2e6, r20, S300
    seed: int
    d_model: int
    # The budget as asked: its kind and value (C counted as ``budgets.flops`` says, D, D/N or
    # steps), logged on every trial so analyses never parse the label.
    budget_kind: str
    budget_value: float
    # An RLHF stage's budget; pretraining's steps vary with the searched batch size.
    steps: int | None = None
    # search.lr_tuning: base_width: the base-width cell (same budget and seed) whose best
    # trial's parameters this cell reuses, and those parameters once it is done.
    tuned_at: str | None = None
    fixed_params: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(x: float) -> str:
    """1e13 -> '1e13', 3.2e5 -> '3.2e5', 20 -> '20': labels that sort and read well."""
    if x == int(x) and abs(x) < 1000:
        return str(int(x))
    mantissa, exponent = f"{x:.3g}".split("e") if "e" in f"{x:.3g}" else (f"{x:.3g}", "0")
    if exponent == "0":
        return mantissa
    return f"{mantissa}e{int(exponent)}"


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is not a count: pydantic would take it as 1."""
    if isinstance(value, bool) or (
        isinstance(value, list) and any(isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"a whole number is needed; got {value!r}")
    return value


class SweepSpec(_Strict):
    """A sweep: sizes × budgets × seeds cells, each searched with ``search``."""

    name: str = Field(description="letters, digits, '.', '_', '-'")
    description: str = ""
    stage: Literal["pretrain", "sft", "reward", "ppo", "classify"] = Field(
        "pretrain", description="what a trial trains: pretrain, or an RLHF stage"
    )
    corpus: str = "stdlib"
    tokenizer: str = "byte"
    variant: Variant = "gpt2"
    context: int = Field(128, ge=8, le=8192)
    sizes: list[str | float] = Field(
        min_length=1, description="a list of presets (e.g. n100k) or parameter counts (e.g. 3e5)"
    )
    budgets: Budgets = Field(
        description="one of compute: [FLOPs...], tokens: [D...] or tokens_per_param: [ratio...]"
        " (pretrain), or steps: [optimizer steps...] (RLHF stages)"
    )
    search: SearchSpec = SearchSpec()
    pruner: PrunerSpec = PrunerSpec()
    seeds: list[int] = Field([0], min_length=1)
    validations: int = Field(
        4, ge=1, le=1000, description="validations per trial; pruners see each one"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="other TrainConfig (or stage config) fields"
    )
    eval: list[str] = Field(
        default_factory=list,
        description="capability suites each trial runs after training (scalelab.evals): "
        "python, brackets, indent, copy, digits",
    )
    parametrization: Literal["standard", "mup"] = Field(
        "standard", description="mup: μP relative to mup_base_width (scalelab/model.py)"
    )
    mup_base_width: int | None = Field(
        None, ge=8, description="mup: the d_model at which μP is the standard model"
    )
    storage: str | None = Field(None, description="Optuna storage URL [default: workspace]")
    experiment: str | None = Field(None, description="MLflow experiment [default: name]")
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    group: GroupSpec = Field(
        GroupSpec(), description="train small same-shape trials together (on by default)"
    )

    @field_validator("context", "seeds", "validations", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any) -> Any:
        return _not_bool(value)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        if not spec_name_is_valid(value):
            raise ValueError(
                "use 1 to 80 letters, digits, '.', '_' or '-', starting with a letter or digit "
                f"(the name prefixes Optuna studies and MLflow runs); got {value!r}"
            )
        return value

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes_shape(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(
                "give sizes as a list of presets (e.g. n100k) or parameter counts (e.g. 3e5)"
            )
        return value

    @field_validator("sizes")
    @classmethod
    def _sizes_known(cls, value: list[str | float]) -> list[str | float]:
        from scalelab.model import PRESETS

        out: list[str | float] = []
        for item in value:
            if isinstance(item, str) and item in PRESETS:
                out.append(item)
            elif _is_number(item) and math.isfinite(float(item)) and float(item) > 0:
                out.append(float(item))
            else:
                raise ValueError(
                    f"{item!r} is neither a preset ({', '.join(PRESETS)}) nor a positive "
                    "parameter count such as 3e5"
                )
        return out

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"a seed is listed twice: {value}")
        return value

    @field_validator("train")
    @classmethod
    def _train_overrides(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        from scalelab.rlhf.config import CONFIGS
        from scalelab.train import TrainConfig

        if "stage" not in info.data:
            return value  # the stage itself is invalid, and reported
        stage = info.data["stage"]
        config = TrainConfig if stage == "pretrain" else CONFIGS[stage]
        controlled = SWEEP_CONTROLLED if stage == "pretrain" else STAGE_CONTROLLED
        for key in value:
            if key in controlled:
                raise ValueError(
                    f"{key!r} is set by the sweep itself (sizes, budgets, search, seeds, "
                    "validations, context...), not under train:"
                )
            if key not in config.model_fields:
                allowed = sorted(set(config.model_fields) - controlled)
                of = "" if stage == "pretrain" else f" for stage {stage}"
                raise ValueError(f"unknown key {key!r}{of}; allowed keys: {', '.join(allowed)}")
        try:
            config(n_params_target=1e4, **value)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            msg = first["msg"].removeprefix("Value error, ")  # a check across fields: no loc
            raise ValueError(f"{field}: {msg}" if field else msg) from None
        return value

    @model_validator(mode="after")
    def _family_sizes_are_counts(self) -> SweepSpec:
        presets = [s for s in self.sizes if isinstance(s, str)]
        if self.shape_family() and presets:
            raise ValueError(
                f"sizes: {', '.join(presets)} are presets with their own shapes; with "
                "train.depth give sizes as parameter counts (e.g. 3e4)"
            )
        return self

    @model_validator(mode="after")
    def _budget_fits_stage(self) -> SweepSpec:
        kind = self.budgets.kind
        if self.stage == "pretrain":
            if kind == "steps":
                raise ValueError(
                    "budgets: steps is the budget of an RLHF stage (stage: sft, reward, ppo or "
                    "classify); to pretrain give compute, tokens or tokens_per_param"
                )
            return self
        if kind != "steps":
            raise ValueError(
                f"budgets: stage {self.stage} trains for a number of optimizer steps; give "
                f"budgets: {{steps: [...]}} instead of {kind}"
            )
        if (self.corpus, self.tokenizer) != ("stdlib", "byte"):
            raise ValueError(
                f"corpus: stage {self.stage} trains on its synthetic byte-level task "
                "(scalelab.rlhf.task); drop corpus and tokenizer, and set task fields under "
                "train: {task: {...}}"
            )
        if self.stage == "ppo" and self.pruner.kind != "none":
            raise ValueError(
                "pruner: ppo evaluates inside its training loop, with no validation for a "
                "pruner to watch; set pruner: none"
            )
        if self.stage == "ppo" and len(self.search.batch_sizes()) > 1:
            raise ValueError(
                "search: ppo does not use batch_size (its batches are rollout_batch and "
                "minibatch_size, set under train:); give one batch_size"
            )
        return self

    @field_validator("eval")
    @classmethod
    def _eval_suites(cls, value: list[str]) -> list[str]:
        from scalelab.evals.suites import SUITES

        for name in value:
            if name not in SUITES:
                raise ValueError(
                    f"unknown suite {name!r}; valid suites: {', '.join(sorted(SUITES))}"
                )
        if len(set(value)) < len(value):
            raise ValueError("a suite is named twice")
        return value

    @model_validator(mode="after")
    def _eval_pretrains(self) -> SweepSpec:
        if self.eval and self.stage != "pretrain":
            raise ValueError(
                f"eval: suites evaluate pretrained models; stage {self.stage} has none"
            )
        if self.eval and self.tokenizer != "byte":
            raise ValueError("eval: the suites' prompts are byte strings; set tokenizer: byte")
        return self

    @model_validator(mode="after")
    def _mup_has_a_base(self) -> SweepSpec:
        if (self.parametrization == "mup") != (self.mup_base_width is not None):
            raise ValueError(
                "mup_base_width: give it (the d_model learning rates are tuned at) with "
                "parametrization: mup, and only then"
            )
        if self.parametrization == "mup" and self.stage != "pretrain":
            raise ValueError(f"parametrization: mup pretrains; stage {self.stage} has no μP")
        if self.search.lr_tuning == "base_width":
            if self.parametrization != "mup":
                raise ValueError(
                    "search: lr_tuning: base_width reuses one learning rate at every width, "
                    "which μP makes transferable; set parametrization: mup"
                )
            widths = sorted({size.shape[2] for size in self.resolved_sizes()})
            if self.mup_base_width not in widths:
                raise ValueError(
                    f"sizes: lr_tuning: base_width searches at d_model {self.mup_base_width} "
                    f"(mup_base_width), but the sizes have d_model {widths}"
                )
        return self

    @model_validator(mode="after")
    def _cells_are_trainable(self) -> SweepSpec:
        try:
            self.cells()
        except ValueError as err:
            field = "sizes" if "same model" in str(err) else "budgets"
            raise ValueError(f"{field}: {err}") from None
        return self

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    def trials_of(self, cell: Cell) -> int:
        """Trials of ``cell``: one where it reuses the base width's best, else ``search.trials``."""
        return 1 if cell.tuned_at is not None else self.search.trials

    def tokens_per_step(self) -> int:
        """Tokens of the largest searched batch; budgets are whole multiples of every batch."""
        return math.lcm(*self.search.batch_sizes()) * self.context

    def shape_family(self) -> dict[str, int]:
        """``depth`` (and ``heads``) from ``train:``: every size a model of that depth."""
        return {k: self.train[k] for k in ("depth", "heads") if self.train.get(k) is not None}

    def resolved_sizes(self) -> list[Size]:
        """Each size with its exact N and shape; two sizes building one model are refused."""
        from scalelab.model import GPTConfig, config_for_params
        from scalelab.rlhf.config import stage_config

        sizes: list[Size] = []
        seen: dict[tuple[int, int, int], str] = {}
        for item in self.sizes:
            preset, target = (item, None) if isinstance(item, str) else (None, float(item))
            if self.stage != "pretrain":  # the trunk the stage builds (byte vocabulary)
                shape = dict(variant=self.variant, context=self.context)
                cfg = stage_config(
                    self.stage, preset=preset, n_params_target=target, **shape
                ).model_cfg()
            elif preset is not None:
                cfg = GPTConfig.from_name(preset, variant=self.variant)
            else:
                cfg = config_for_params(target, variant=self.variant, **self.shape_family())
            size = Size(preset, target, cfg.n_params, (cfg.n_layer, cfg.n_head, cfg.d_model))
            if size.shape in seen:
                raise ValueError(
                    f"{seen[size.shape]} and {size.label} build the same model "
                    f"(n_layer, n_head, d_model = {size.shape}, N = {size.n_params:,})"
                )
            seen[size.shape] = size.label
            sizes.append(size)
        return sizes

    def flops_per_token(self, size: Size) -> float:
        """Training FLOPs per token of ``size`` as compute budgets count them (``flops``).

        Under ``6nd`` tiny models look cheap: at 1e4-1e5 parameters attention and the
        unembedding are 1.5-3x the 6·N matmuls, so IsoFLOP optima drift to the smallest sizes.
        """
        if self.budgets.flops == "6nd":
            return compute_6nd(size.n_params, 1.0)
        from scalelab.data.tokenizer import parse_spec as parse_tokenizer
        from scalelab.model import GPTConfig

        kind, vocab = parse_tokenizer(self.tokenizer)
        if kind == "pretokenized":
            raise ValueError(
                "flops: full needs the vocabulary size, which a pretokenized corpus does not "
                "name; use flops: 6nd"
            )
        n_layer, n_head, d_model = size.shape
        model = GPTConfig(
            n_layer=n_layer,
            n_head=n_head,
            d_model=d_model,
            variant=self.variant,
            context=self.context,
            vocab_size=vocab or 256,
        )
        return model.flops_per_token(include_embedding=True)

    def cells(self) -> list[Cell]:
        """Every (size, budget, seed), smallest budget first, then smallest size.

        D is rounded down to a whole number of steps for every searched batch size, so all
        trials of a cell train on exactly the same number of tokens. A stage's budget is
        steps; its D is nominal: steps × the largest searched batch × context.
        """
        kind = self.budgets.kind
        step = (
            max(self.search.batch_sizes()) * self.context
            if kind == "steps"
            else self.tokens_per_step()
        )
        cells: list[tuple[float, Cell]] = []
        for size in self.resolved_sizes():
            for value in self.budgets.values:
                steps = int(value) if kind == "steps" else None
                if steps is not None:
                    wanted, label = steps * step, f"S{_short(steps)}"
                elif kind == "compute":
                    wanted, label = value / self.flops_per_token(size), f"C{_short(value)}"
                elif kind == "tokens":
                    wanted, label = value, f"D{_short(value)}"
                else:
                    wanted, label = value * size.n_params, f"r{_short(value)}"
                tokens = int(wanted // step) * step
                window = self.budgets.tokens_per_param_range
                if window is not None and not window.low <= wanted / size.n_params <= window.high:
                    continue
                if tokens < step:
                    raise ValueError(
                        f"budget {label} gives {size.label} (N={size.n_params:,}) "
                        f"{int(wanted):,} tokens, less than one step "
                        f"(batch_size × context = {step:,} tokens); raise the budget or "
                        "drop the size"
                    )
                # Order by the nominal budget: an IsoFLOP budget's cells share one C.
                nominal = value if kind == "compute" else compute_6nd(size.n_params, tokens)
                for seed in self.seeds:
                    key = f"{size.label}-{label}" + (f"-s{seed}" if len(self.seeds) > 1 else "")
                    cells.append(
                        (
                            nominal,
                            Cell(
                                key=key,
                                size=size.label,
                                preset=size.preset,
                                n_params_target=size.target,
                                n_params=size.n_params,
                                tokens=tokens,
                                compute=compute_6nd(size.n_params, tokens),
                                budget=label,
                                seed=seed,
                                d_model=size.shape[2],
                                budget_kind=kind,
                                budget_value=float(value),
                                steps=steps,
                            ),
                        )
                    )
        window = self.budgets.tokens_per_param_range
        empty = {_short(v) for v in self.budgets.values} - {c.budget[1:] for _, c in cells}
        if window is not None and empty:
            raise ValueError(
                f"budgets C{', C'.join(sorted(empty))} keep no size within tokens_per_param_range "
                f"[{window.low:g}, {window.high:g}]; add sizes or widen the range"
            )
        cells.sort(key=lambda item: (item[0], item[1].n_params, item[1].seed))
        return self._tuned_at_base([cell for _, cell in cells])

    def _tuned_at_base(self, cells: list[Cell]) -> list[Cell]:
        """Under ``lr_tuning: base_width``, each cell of another width names the base-width
        cell of its budget and seed."""
        if self.search.lr_tuning != "base_width":
            return cells
        base = {(c.budget, c.seed): c.key for c in cells if c.d_model == self.mup_base_width}
        return [
            c if c.d_model == self.mup_base_width else replace(c, tuned_at=base[c.budget, c.seed])
            for c in cells
        ]

    def identity(self) -> dict[str, Any]:
        """What a study's results depend on; a re-run that changes any of it is refused.

        ``trials``, the pruner, heartbeats and the storage may change between runs: more
        trials extend every cell.
        """
        search = self.search.model_dump(mode="json", exclude={"trials", "lr_tuning"})
        if isinstance(search["lr"], dict) and search["lr"].get("multipliers") == [1.0]:
            del search["lr"]["multipliers"]  # sweeps stored before multipliers keep their hash
        # Pretraining sweeps stored before stages (or μP) existed keep their identity.
        stage = {} if self.stage == "pretrain" else {"stage": self.stage}
        if self.parametrization == "mup":
            stage |= {
                "parametrization": "mup",
                "mup_base_width": self.mup_base_width,
                "lr_tuning": self.search.lr_tuning,
            }
        if self.eval:  # sweeps without suites keep their identity
            stage |= {"eval": list(self.eval)}
        return {
            **stage,
            "corpus": self.corpus,
            "tokenizer": self.tokenizer,
            "variant": self.variant,
            "context": self.context,
            "sizes": [c if isinstance(c, str) else _short(c) for c in self.sizes],
            "budgets": {self.budgets.kind: self.budgets.values}
            | ({"flops": "full"} if self.budgets.flops == "full" else {}),
            "seeds": list(self.seeds),
            "cells": [[c.key, c.n_params, c.tokens] for c in self.cells()],
            "search": search,
            "validations": self.validations,
            "train": dict(sorted(self.train.items())),
            "experiment": self.experiment_name,
        }

    def spec_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's names for union members and validators, not user fields
        else:
            parts.append(str(part))
    return ".".join(parts) or "spec"


def describe_errors(err: ValidationError, root: str = "spec") -> list[str]:
    """``field: message`` for each error, in the spec's own key names.

    Errors of the whole mapping are prefixed with ``root``, unless the message already starts
    with the field it concerns.
    """
    out = []
    for item in err.errors():
        msg = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "missing" and len(item["loc"]) == 1:
            described = SweepSpec.model_fields.get(str(item["loc"][0]))
            hint = described.description if described is not None else None
            msg = f"required: {hint}" if hint else "required"
        if item["loc"]:
            out.append(f"{_field_of(item['loc'])}: {msg}")
        elif msg.split(":")[0] in SweepSpec.model_fields or not root:
            out.append(msg)
        else:
            out.append(f"{root}: {msg}")
    return out


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate an already-parsed mapping; ``SpecError`` names the source and the field."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a spec is a mapping of keys ({', '.join(SweepSpec.model_fields)}); "
            f"got {type(data).__name__}"
        )
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        problems = describe_errors(err)
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
        raise SpecError(f"{source}: {problems[0]}{more}") from None


def load_spec(path: str | Path, *, name: str | None = None) -> SweepSpec:
    """Read and validate a spec file; ``name`` replaces its ``name`` (to start a new sweep)."""
    import yaml

    from scalelab import strict_yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no spec file at {path}")
    try:
        data = strict_yaml.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{at}: {problem}") from None
    if isinstance(data, dict) and name is not None:
        data = {**data, "name": name}
    return parse_spec(data, str(path))


def spec_name_is_valid(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None
