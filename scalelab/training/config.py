"""The pre-training config and the names every training run shares; imports no torch.

The CLI, sweep specs and ``--help`` read ``TrainConfig``; Lightning and torch load only when a
run starts (``scalelab.train.train``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Defined in the pydantic-free ``schedule`` module; importable from here as before.
from scalelab.training.schedule import Schedule, TrainingDiverged, lr_factor
from scalelab.vocab import Variant

if TYPE_CHECKING:
    from scalelab.model import GPTConfig

__all__ = [
    "RepeatedDataError",
    "Schedule",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_no_repeats",
    "lr_factor",
]


class TrainConfig(BaseModel):
    """Everything that defines one training run; validated so a bad value names its field."""

    model_config = ConfigDict(extra="forbid")

    # Model: a preset name, or a target non-embedding parameter count on the preset width rule.
    preset: str | None = None
    n_params_target: float | None = Field(None, gt=0)
    depth: int | None = Field(
        None, ge=1, description="with n_params_target: a fixed-depth family, only width varies"
    )
    heads: int | None = Field(None, ge=1, description="with depth: attention heads of every size")
    variant: Variant = "gpt2"
    context: int = Field(256, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    band_window: int = Field(64, ge=1)
    gelu: Literal["tanh", "exact"] = Field(
        "tanh", description="GELU form: GPT-2's tanh approximation or the exact erf form"
    )
    parametrization: Literal["standard", "mup"] = Field(
        "standard",
        description="mup: the maximal-update parametrisation relative to mup_base_width "
        "(scalelab/model.py), so a learning rate tuned at that width holds at others",
    )
    mup_base_width: int | None = Field(
        None, ge=1, description="mup: the d_model at which the model is the standard one"
    )

    # Data.
    corpus: str = "stdlib"
    tokenizer: str = "byte"
    data_order: Literal["random", "epoch"] = Field(
        "random", description="random windows, or shuffled non-overlapping ones (no repeats)"
    )
    repeat_data: bool = Field(
        False, description="allow a budget larger than the training split (repeated data)"
    )

    # Budget and optimisation.
    tokens: int = Field(2_000_000, gt=0, description="training tokens D")
    batch_size: int = Field(16, ge=1, description="sequences per optimizer step, all devices")
    lr: float = Field(3e-3, gt=0, lt=1e3)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="fraction of steps")
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd: final decay fraction")
    weight_decay: float = Field(0.1, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0)
    seed: int = 0

    # Validation: a fixed set, evaluated every ``val_every`` tokens and at the end.
    val_tokens: int = Field(65_536, gt=0)
    val_every: int | None = Field(None, gt=0, description="tokens; default: 10 evaluations")

    # Capability evaluations after the final validation (``scalelab.evals``).
    evals: list[str] = Field(
        default_factory=list,
        description="suites run on the trained model: python, brackets, indent, copy, digits",
    )
    eval_samples: int = Field(
        0, ge=0, le=100, description="sampled completions per problem (pass@k); 0: greedy only"
    )

    # Hardware: passed to Lightning's Trainer unchanged.
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = Field("auto", description="auto: bf16-mixed on GPUs with bf16, else fp32")
    compile: bool = Field(False, description="torch.compile each transformer block")

    # Tracking.
    experiment: str = "scalelab"
    run_name: str | None = None
    save_checkpoint: bool = False

    @model_validator(mode="after")
    def _one_size(self) -> TrainConfig:
        if (self.preset is None) == (self.n_params_target is None):
            raise ValueError(
                "give exactly one of preset (e.g. 'n1m') or n_params_target (e.g. 3e5)"
            )
        if self.heads is not None and self.depth is None:
            raise ValueError("heads: set depth too (heads fixes a fixed-depth family's heads)")
        if self.depth is not None and self.preset is not None:
            raise ValueError("depth: a preset has its own depth; give n_params_target instead")
        return self

    @field_validator("evals")
    @classmethod
    def _known_suites(cls, value: list[str]) -> list[str]:
        from scalelab.evals.suites import SUITES

        unknown = [name for name in value if name not in SUITES]
        if unknown:
            raise ValueError(
                f"unknown suite {unknown[0]!r}; valid suites: {', '.join(sorted(SUITES))}"
            )
        if len(set(value)) < len(value):
            raise ValueError("a suite is named twice")
        return value

    @model_validator(mode="after")
    def _evals_read_bytes(self) -> TrainConfig:
        if self.evals and self.tokenizer != "byte":
            raise ValueError(
                "evals: the suites' prompts are byte strings; train with tokenizer byte"
            )
        return self

    @model_validator(mode="after")
    def _mup_has_a_base(self) -> TrainConfig:
        if (self.parametrization == "mup") != (self.mup_base_width is not None):
            raise ValueError(
                "mup_base_width: give it (the width a learning rate is tuned at, e.g. 64) with "
                "parametrization mup, and only then"
            )
        return self

    def model_cfg(self, vocab_size: int) -> GPTConfig:
        from scalelab.model import GPTConfig, config_for_params

        shape = dict(
            variant=self.variant,
            context=self.context,
            vocab_size=vocab_size,
            dropout=self.dropout,
            band_window=self.band_window,
            gelu=self.gelu,
            mup_base_width=self.mup_base_width,
        )
        if self.preset is not None:
            return GPTConfig.from_name(self.preset, **shape)
        return config_for_params(self.n_params_target, depth=self.depth, heads=self.heads, **shape)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    loss: float
    bpb: float
    n_params: int
    n_params_total: int
    tokens: int
    compute: float
    wall_time: float


class RepeatedDataError(ValueError):
    """A budget larger than the training split, without ``repeat_data``."""


def check_no_repeats(tokens: int, train_tokens: int, cfg: TrainConfig) -> None:
    """Refuse a run that would see training text twice, unless ``repeat_data`` allows it.

    Repeated tokens are worth less than fresh ones (Muennighoff et al. 2023), so a run that
    repeats data sits off the scaling law fitted on runs that do not.
    """
    epochs = tokens / max(1, train_tokens)
    if epochs <= 1:
        return
    if not cfg.repeat_data:
        raise RepeatedDataError(
            f"tokens: {tokens:,} training tokens are {epochs:.2f} passes over the "
            f"{train_tokens:,}-token training split of corpus {cfg.corpus!r}; use a larger "
            "corpus (e.g. python-all, or a folder of text), a smaller budget, or set "
            "repeat_data to train on repeated data"
        )
    warnings.warn(f"training repeats data: {epochs:.2f} epochs of {cfg.corpus!r}", stacklevel=2)
