"""Validated configs of the RLHF stages: one pydantic model per stage, on a shared base.

Each field is flat (a sweep or a command line sets it by name); the synthetic task is a nested
``TaskConfig``. ``stage_config(stage, **fields)`` builds the right class. Imports no torch or
Lightning: sweep specs and the CLI validate stage configs cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalelab.rlhf.task import TaskConfig
from scalelab.vocab import Variant

if TYPE_CHECKING:
    from scalelab.model import GPTConfig

Stage = Literal["sft", "reward", "ppo", "classify"]
STAGES: tuple[str, ...] = get_args(Stage)
VOCAB_SIZE = 256  # byte level, as scalelab.data's byte tokenizer


class StageConfig(BaseModel):
    """Fields every stage shares: the trunk, the task, the optimiser, tracking.

    The trunk is either a checkpoint (``init``: a ``.pt`` path or ``runs:/<run_id>``, e.g. a
    ``scalelab train --save-checkpoint`` run or an earlier stage) or a fresh GPT of size
    ``preset`` / ``n_params_target``; give exactly one of the three.
    """

    model_config = ConfigDict(extra="forbid")
    stage: ClassVar[str] = ""

    # Trunk.
    init: str | None = Field(None, description="checkpoint: a .pt path or runs:/<run_id>")
    preset: str | None = None
    n_params_target: float | None = Field(None, gt=0)
    variant: Variant = "gpt2"
    context: int = Field(64, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    # Data.
    task: TaskConfig = TaskConfig()
    n_train: int = Field(4096, ge=1, description="training examples (prompts for ppo)")
    n_eval: int = Field(256, ge=1, description="held-out examples (prompts for ppo)")

    # Optimisation (AdamW, linear warm-up then cosine decay, as scalelab.train).
    steps: int = Field(300, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, lt=1e3)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="fraction of steps")
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, ge=0.0)
    seed: int = Field(0, ge=0)
    eval_every: int | None = Field(None, ge=1, description="steps; default: 5 evaluations")

    # Hardware and tracking.
    accelerator: str = "auto"
    experiment: str = "scalelab-rlhf"
    run_name: str | None = None
    save_checkpoint: bool = True

    @model_validator(mode="after")
    def _one_trunk(self) -> StageConfig:
        given = [n for n in ("init", "preset", "n_params_target") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of init (a checkpoint), preset (e.g. 'n100k') or "
                f"n_params_target (e.g. 3e4); got {given or 'none'}"
            )
        return self

    def model_cfg(self) -> GPTConfig:
        """The shape of a fresh trunk (not used when ``init`` is given)."""
        from scalelab.model import GPTConfig, config_for_params

        shape = dict(
            variant=self.variant, context=self.context, vocab_size=VOCAB_SIZE, dropout=self.dropout
        )
        if self.preset is not None:
            return GPTConfig.from_name(self.preset, **shape)
        if self.n_params_target is None:
            raise ValueError("a checkpoint trunk has no fresh shape; load it with init")
        return config_for_params(self.n_params_target, **shape)

    def evaluations(self, total: int) -> int:
        """Steps between evaluations (``eval_every`` or a fifth of ``total``)."""
        return self.eval_every or max(1, total // 5)


class SFTConfig(StageConfig):
    """Supervised fine-tuning on demonstrations: next-token loss on assistant tokens only.

    Set ``task.multi_turn_fraction`` for dialogues (turns delimited by role tokens).
    """

    stage: ClassVar[str] = "sft"
    n_sample: int = Field(
        128, ge=1, description="eval prompts sampled to measure the gold reward of the policy"
    )


class RewardConfig(StageConfig):
    """A reward model on K ranked completions per prompt (InstructGPT's loss).

    ``batch_size`` counts prompts: each batch element holds all K-choose-2 pairs of one prompt.
    """

    stage: ClassVar[str] = "reward"
    batch_size: int = Field(16, ge=1, description="prompts per step, all their pairs each")
    k_min: int = Field(4, ge=2, le=16)
    k_max: int = Field(9, ge=2, le=16)
    label_noise: float = Field(
        0.05, ge=0.0, description="Bradley–Terry temperature of the simulated labellers"
    )
    normalize: bool = Field(
        True, description="shift scores so demonstrations average 0 (InstructGPT §3.5)"
    )

    @model_validator(mode="after")
    def _k_range(self) -> RewardConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        return self


class ClassifyConfig(StageConfig):
    """GPT-1's task head: cross-entropy plus λ times the language-model loss of the input."""

    stage: ClassVar[str] = "classify"
    aux_lm_weight: float = Field(
        0.5, ge=0.0, description="λ of L3 = L2 + λ·L1 (GPT-1 §3.2 uses 0.5)"
    )


class PPOConfig(StageConfig):
    """PPO against a reward model with a KL penalty to the SFT policy, optionally PPO-ptx.

    ``init`` is the SFT policy and ``reward_init`` the reward model. When either is missing
    the run trains it first, as its own MLflow run tagged ``rlhf_parent``: an SFT policy of
    the size given by ``preset``/``n_params_target`` for ``sft_steps`` steps, a reward model
    of size ``reward_preset``/``reward_n_params_target`` (default: the policy's) for
    ``reward_steps`` steps. ``steps`` counts PPO iterations: one rollout batch of
    ``rollout_batch`` prompts, then ``ppo_epochs`` passes over it in minibatches.
    """

    stage: ClassVar[str] = "ppo"
    steps: int = Field(40, ge=1, description="PPO iterations (rollout + update epochs)")
    lr: float = Field(3e-4, gt=0, lt=1e3)
    warmup: float = Field(0.0, ge=0.0, lt=1.0)
    min_lr_ratio: float = Field(1.0, ge=0.0, le=1.0, description="1: constant learning rate")

    # Prerequisites.
    reward_init: str | None = Field(None, description="reward model checkpoint")
    reward_preset: str | None = None
    reward_n_params_target: float | None = Field(None, gt=0)
    sft_steps: int = Field(400, ge=1)
    reward_steps: int = Field(400, ge=1)

    # Rollouts.
    rollout_batch: int = Field(64, ge=1, description="prompts sampled per iteration")
    max_new_tokens: int | None = Field(None, ge=1, description="default: longest answer + 3")
    temperature: float = Field(1.0, gt=0.0)

    # PPO (Schulman et al. 2017), as configured for RLHF by Ziegler et al. 2019.
    ppo_epochs: int = Field(4, ge=1)
    minibatch_size: int = Field(32, ge=1)
    clip_range: float = Field(0.2, gt=0.0, description="ε of the clipped surrogate")
    clip_range_value: float = Field(0.2, gt=0.0, description="clip of the value update")
    vf_coef: float = Field(0.1, ge=0.0, description="weight of the value loss (trl: 0.1)")
    entropy_coef: float = Field(0.0, ge=0.0)
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount of GAE")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="λ of GAE (Schulman et al. 2016)")
    whiten_advantages: bool = True
    value_model: Literal["separate", "shared"] = Field(
        "separate",
        description="separate: a value network initialised from the reward model (Stiennon "
        "et al. 2020; InstructGPT); shared: a zero-initialised value head on the policy trunk "
        "(as trl's value head), whose value-loss gradients also move the policy",
    )

    # KL penalty: per-token reward −β·(log π − log π_SFT).
    kl_coef: float = Field(0.05, ge=0.0, description="β (initial β when adaptive)")
    kl_control: Literal["fixed", "adaptive"] = Field(
        "fixed", description="adaptive: Ziegler et al. 2019's proportional controller"
    )
    kl_target: float = Field(1.0, gt=0.0, description="adaptive: target KL in nats")
    kl_horizon: int = Field(10_000, ge=1, description="adaptive: horizon in rollouts")

    # PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2): + γ·E_pretrain[log π(x)].
    ptx_coef: float = Field(0.0, ge=0.0, description="γ; 0 is plain PPO")
    ptx_batch_size: int = Field(16, ge=1)
    ptx_corpus: str | None = Field(
        None, description="a scalelab corpus for ptx batches; default: the task's text stream"
    )

    @model_validator(mode="after")
    def _reward_size(self) -> PPOConfig:
        given = [
            n
            for n in ("reward_init", "reward_preset", "reward_n_params_target")
            if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of reward_init, reward_preset, reward_n_params_target; "
                f"got {given}"
            )
        return self

    def answer_budget(self) -> int:
        """Tokens a response may use: the longest answer, ``END`` and some slack."""
        return self.max_new_tokens or self.task.max_answer_len() + 3


CONFIGS: dict[str, type[StageConfig]] = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "classify": ClassifyConfig,
}


def stage_config(
    stage: str, cfg: StageConfig | dict[str, Any] | None = None, **fields: Any
) -> StageConfig:
    """The validated config of ``stage`` from a config, a dict and/or keyword fields."""
    if stage not in CONFIGS:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    cls = CONFIGS[stage]
    if isinstance(cfg, StageConfig):
        if not isinstance(cfg, cls):
            raise ValueError(f"a {type(cfg).__name__} cannot configure stage {stage!r}")
        return cfg if not fields else cls(**{**cfg.model_dump(), **fields})
    return cls(**{**(cfg or {}), **fields})
