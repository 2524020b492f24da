"""Run one RLHF stage as a tracked MLflow run: ``run_stage(stage, cfg, workspace)``.

Stages (``stage`` in a sweep spec; ``pretrain`` is ``scalelab.train.train``):

- ``sft``: supervised fine-tuning on demonstrations, response tokens only (``SFTConfig``);
- ``reward``: a reward model on K ranked completions per prompt (``RewardConfig``);
- ``ppo``: PPO with a KL penalty to the SFT policy, optionally PPO-ptx (``PPOConfig``);
- ``classify``: GPT-1's task head with the auxiliary LM loss (``ClassifyConfig``).

Each run logs its parameters (the project vocabulary: ``n_params``, ``n_params_total``...),
``train_*`` and ``eval_*`` metrics, the final ``loss`` (what a sweep minimises), ``metric``
(the stage's headline: gold reward, pairwise accuracy or classification accuracy) and
``wall_time``, the config as ``config.json``, and the weights as ``checkpoint/model.pt``, so
that ``runs:/<run_id>`` initialises the next stage.

From Python::

    from scalelab.rlhf import run_stage
    from scalelab.workspace import Workspace

    ws = Workspace.resolve()
    sft = run_stage("sft", {"preset": "n100k", "steps": 400}, ws)
    rm = run_stage("reward", {"init": sft.checkpoint, "steps": 300}, ws)
    ppo = run_stage("ppo", {"init": sft.checkpoint, "reward_init": rm.checkpoint}, ws)
    print(ppo.metric, ppo.metrics["eval_kl"])

``run_stage("ppo", {"preset": "n100k"})`` trains the SFT policy and the reward model it needs
first (each its own run, tagged ``rlhf_parent``), so one call is one sweep trial.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from scalelab.model import GPT
from scalelab.rlhf import checkpoint
from scalelab.rlhf.config import (
    ClassifyConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    Stage,
    StageConfig,
    stage_config,
)
from scalelab.rlhf.heads import RewardModel, TaskHead, pad_batch
from scalelab.rlhf.task import CLASSES, SyntheticTask
from scalelab.training.config import TrainingDiverged
from scalelab.workspace import Workspace

if TYPE_CHECKING:
    from scalelab.training.run import TrackedRun

EVAL_SEED = 1_000_003  # held-out data is the same for every run, whatever its seed
HEADLINE = {
    "sft": ("eval_gold_reward", "maximize", "eval_loss"),
    "reward": ("eval_accuracy", "maximize", "eval_loss"),
    "classify": ("eval_accuracy", "maximize", "eval_class_loss"),
    "ppo": ("eval_gold_reward", "maximize", None),  # loss: 1 − gold reward
}


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: the sweep's scalar ``loss`` (lower is better) and the stage's
    headline ``metric`` (``metric_name``, better when ``direction``), every final metric, the
    model's size and a reference to its checkpoint (``runs:/<run_id>`` or a path)."""

    stage: str
    run_id: str
    loss: float
    metric: float
    metric_name: str
    direction: str
    n_params: int
    n_params_total: int
    metrics: dict[str, float]
    wall_time: float
    checkpoint: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.stage}: {self.metric_name} {self.metric:.4f}, loss {self.loss:.4f} | "
            f"N={self.n_params:,} | {self.wall_time:.1f}s | MLflow run {self.run_id}"
        )


@dataclass
class _Built:
    """A stage ready to fit: its LightningModule, the model to checkpoint, params to log."""

    module: Any
    trunk: GPT
    head_module: torch.nn.Module | None
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    val_every: int | None = None


def _trunk(cfg: StageConfig, workspace: Workspace) -> GPT:
    if cfg.init is not None:
        model = checkpoint.trunk(checkpoint.load(cfg.init, workspace))
        if model.config.vocab_size < 256:
            raise ValueError(
                f"checkpoint {cfg.init!r} has vocab_size {model.config.vocab_size}; the task "
                "is byte level and needs 256"
            )
        return model
    return GPT(cfg.model_cfg())


def _check_fits(lengths: list[int], context: int, what: str) -> None:
    longest = max(lengths)
    if longest > context:
        raise ValueError(
            f"{what} reach {longest} tokens but the trunk's context is {context}; use a "
            "larger context or shorter dialogues (task.max_turns, task.max_digits)"
        )


def _size_params(trunk: GPT, head: torch.nn.Module | None) -> dict[str, Any]:
    cfg = trunk.config
    head_params = 0
    if head is not None:
        head_params = sum(
            p.numel() for n, p in head.named_parameters() if not n.startswith(("trunk.", "policy."))
        )
    return {
        "variant": cfg.variant,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "d_model": cfg.d_model,
        "context": cfg.context,
        "vocab_size": cfg.vocab_size,
        "n_params": cfg.n_params_nonembedding,
        "n_params_nonembedding": cfg.n_params_nonembedding,
        "n_params_total": cfg.n_params_total + head_params,
    }


def _build_sft(cfg: SFTConfig, workspace: Workspace) -> _Built:
    from scalelab.rlhf.sft import SFTModule

    task = SyntheticTask(cfg.task)
    trunk = _trunk(cfg, workspace)
    train, evaluation = (
        task.demonstrations(cfg.n_train, cfg.seed),
        task.demonstrations(cfg.n_eval, EVAL_SEED),
    )
    prompts = task.prompts(cfg.n_sample, EVAL_SEED)
    max_new = cfg.task.max_answer_len() + 3
    _check_fits([len(e.ids) for e in train + evaluation], trunk.config.context, "dialogues")
    _check_fits([len(p.ids) + max_new for p in prompts], trunk.config.context, "prompts + answers")
    module = SFTModule(cfg, trunk, train, evaluation, prompts, max_new)
    return _Built(
        module,
        trunk,
        None,
        _size_params(trunk, None),
        steps=cfg.steps,
        val_every=cfg.evaluations(cfg.steps),
    )


def _build_reward(cfg: RewardConfig, workspace: Workspace) -> _Built:
    from scalelab.rlhf.reward import RewardModule, completion_ids

    task = SyntheticTask(cfg.task)
    model = RewardModel(_trunk(cfg, workspace))
    kwargs = dict(k_min=cfg.k_min, k_max=cfg.k_max, label_noise=cfg.label_noise)
    train = task.comparisons(cfg.n_train, cfg.seed, **kwargs)
    evaluation = task.comparisons(cfg.n_eval, EVAL_SEED, **kwargs)
    _check_fits(
        [len(ids) for c in train + evaluation for ids in completion_ids(c)],
        model.trunk.config.context,
        "prompts + completions",
    )
    module = RewardModule(cfg, model, train, evaluation)
    return _Built(
        module,
        model.trunk,
        model,
        _size_params(model.trunk, model),
        steps=cfg.steps,
        val_every=cfg.evaluations(cfg.steps),
    )


def _normalize_reward(model: RewardModel, cfg: RewardConfig) -> float:
    """InstructGPT §3.5: shift the RM so that demonstrations score 0 on average."""
    demos = SyntheticTask(cfg.task).demonstrations(cfg.n_eval, EVAL_SEED + 1)
    ids, lengths = pad_batch([d.ids for d in demos])
    was_training = model.training
    model.eval()
    bias = model.normalize(ids.to(model.bias.device), lengths.to(model.bias.device))
    model.train(was_training)
    return bias


def _build_classify(cfg: ClassifyConfig, workspace: Workspace) -> _Built:
    from scalelab.rlhf.classify import ClassifyModule

    task = SyntheticTask(cfg.task)
    trunk = _trunk(cfg, workspace)
    if cfg.aux_lm_weight == 0 and not trunk.config.tie_embeddings:
        trunk.lm_head.requires_grad_(False)  # no loss reaches an untied unembedding
    model = TaskHead(trunk, len(CLASSES))
    x, y = task.classification(cfg.n_train, cfg.seed)
    xe, ye = task.classification(cfg.n_eval, EVAL_SEED)
    module = ClassifyModule(
        cfg, model, list(zip(x, y.tolist(), strict=True)), list(zip(xe, ye.tolist(), strict=True))
    )
    return _Built(
        module,
        trunk,
        model,
        _size_params(trunk, model),
        meta={"n_classes": len(CLASSES), "classes": list(CLASSES)},
        steps=cfg.steps,
        val_every=cfg.evaluations(cfg.steps),
    )


def _ppo_prerequisites(
    cfg: PPOConfig, workspace: Workspace, parent: str, enable_progress_bar: bool
) -> tuple[str, str]:
    """Checkpoints of the SFT policy and the reward model, training what is missing."""
    common = dict(
        variant=cfg.variant,
        context=cfg.context,
        dropout=cfg.dropout,
        task=cfg.task,
        seed=cfg.seed,
        accelerator=cfg.accelerator,
        experiment=cfg.experiment,
    )
    tags = {"rlhf_parent": parent}
    policy_ref = cfg.init
    if policy_ref is None:
        sft_cfg = SFTConfig(
            preset=cfg.preset, n_params_target=cfg.n_params_target, steps=cfg.sft_steps, **common
        )
        policy_ref = run_stage(
            "sft", sft_cfg, workspace, tags=tags, enable_progress_bar=enable_progress_bar
        ).checkpoint
    reward_ref = cfg.reward_init
    if reward_ref is None:
        size: dict[str, Any] = {"init": policy_ref}  # InstructGPT: the RM starts from SFT
        if cfg.reward_preset is not None or cfg.reward_n_params_target is not None:
            size = {"preset": cfg.reward_preset, "n_params_target": cfg.reward_n_params_target}
        rm_cfg = RewardConfig(steps=cfg.reward_steps, **size, **common)
        reward_ref = run_stage(
            "reward", rm_cfg, workspace, tags=tags, enable_progress_bar=enable_progress_bar
        ).checkpoint
    assert policy_ref is not None and reward_ref is not None
    return policy_ref, reward_ref


def _build_ppo(cfg: PPOConfig, workspace: Workspace, policy_ref: str, reward_ref: str) -> _Built:
    from scalelab.rlhf.ppo import PPOModule, policy_with_value

    task = SyntheticTask(cfg.task)
    policy = checkpoint.trunk(checkpoint.load(policy_ref, workspace))
    reward_model = checkpoint.reward_model(checkpoint.load(reward_ref, workspace))
    ref = copy.deepcopy(policy)
    model = policy_with_value(cfg, policy, reward_model)
    train_prompts = task.prompts(cfg.n_train, cfg.seed)
    eval_prompts = task.prompts(cfg.n_eval, EVAL_SEED)
    budget = cfg.answer_budget()
    _check_fits(
        [len(p.ids) + budget for p in train_prompts + eval_prompts],
        min(policy.config.context, reward_model.trunk.config.context),
        "prompts + responses",
    )
    ptx_tokens = None
    if cfg.ptx_coef > 0:
        if cfg.ptx_corpus is None:
            ptx_tokens = task.pretraining_tokens(max(100_000, 20 * cfg.context), cfg.seed)
        else:
            from scalelab.data import prepare

            data = prepare(cfg.ptx_corpus, "byte", cache_dir=workspace.cache_dir)
            ptx_tokens = data.train
    module = PPOModule(cfg, model, ref, reward_model, train_prompts, eval_prompts, ptx_tokens)
    params = _size_params(policy, model)
    rm_cfg = reward_model.trunk.config
    params.update(
        policy_init=policy_ref,
        reward_init=reward_ref,
        rm_n_params=rm_cfg.n_params_nonembedding,
        rm_n_layer=rm_cfg.n_layer,
        rm_d_model=rm_cfg.d_model,
    )
    return _Built(
        module, policy, model, params, meta={"rm_n_params": rm_cfg.n_params}, steps=cfg.steps
    )


def _flat_config(cfg: StageConfig) -> dict[str, Any]:
    out = {k: v for k, v in cfg.model_dump().items() if k != "task"}
    out.update({f"task_{k}": v for k, v in cfg.task.model_dump().items()})
    return {k: ("" if v is None else v) for k, v in out.items()}


def run_stage(
    stage: Stage,
    cfg: StageConfig | dict[str, Any],
    workspace: Workspace | None = None,
    *,
    run_id: str | None = None,
    callbacks: list[Any] | None = None,
    tags: dict[str, str] | None = None,
    enable_progress_bar: bool = False,
) -> StageResult:
    """Train one stage and log it to MLflow (see the module docstring).

    ``cfg`` is the stage's config or a dict of its fields (validated; a bad value raises
    ``pydantic.ValidationError``, a ``ValueError``). ``run_id`` continues an MLflow run made
    by the caller (a sweep's nested trial run); ``callbacks`` go to Lightning's Trainer;
    ``tags`` are set on the run. Raises ``scalelab.train.TrainingDiverged`` (after marking
    the run FAILED with a ``failure_reason`` tag) if a loss becomes non-finite.
    """
    from scalelab.training.run import TrackedRun

    cfg = stage_config(stage, cfg)
    workspace = (workspace or Workspace.resolve()).ensure()
    run = TrackedRun(
        cfg.experiment,
        workspace,
        run_name=cfg.run_name,
        run_id=run_id,
        tags={"stage": stage, **(tags or {})},
    )
    started = time.perf_counter()
    with run.failing_on(Exception):
        built = _build(stage, cfg, workspace, run.run_id, enable_progress_bar)
    run.log_setup(
        {"stage": stage, **_flat_config(cfg), **built.params},
        {"stage": stage, "config": cfg.model_dump(), "model": built.trunk.config.to_dict()},
    )
    with run.failing_on(Exception):
        metrics = _fit(stage, built, cfg, run, workspace, callbacks, enable_progress_bar)
    final = {}  # metrics Lightning has not logged yet
    if isinstance(cfg, RewardConfig) and cfg.normalize:
        final["reward_bias"] = _normalize_reward(built.module.model, cfg)
        built.meta["reward_bias"] = final["reward_bias"]
    metrics.update(final)
    wall = time.perf_counter() - started
    name, direction, loss_key = HEADLINE[stage]
    metric = metrics[name]
    loss = metrics[loss_key] if loss_key else 1.0 - metric
    if not math.isfinite(loss):
        run.fail(f"final loss is {loss}")
        raise TrainingDiverged(f"{stage}: final loss is {loss}")
    run.log_final({"loss": loss, "metric": metric, "wall_time": wall, **final}, step=built.steps)
    ref = None
    if cfg.save_checkpoint:
        ref = run.log_checkpoint(
            checkpoint.payload(built.trunk, stage, built.head_module, **built.meta)
        )
    run.finish()
    return StageResult(
        stage=stage,
        run_id=run.run_id,
        loss=loss,
        metric=metric,
        metric_name=name,
        direction=direction,
        n_params=int(built.params["n_params"]),
        n_params_total=int(built.params["n_params_total"]),
        metrics=metrics,
        wall_time=wall,
        checkpoint=ref,
        history=list(getattr(built.module, "history", [])),
    )


def _build(
    stage: str, cfg: StageConfig, workspace: Workspace, run_id: str, enable_progress_bar: bool
) -> _Built:
    """The stage's module on a seeded trunk; ppo first gets (or trains) its prerequisites,
    as runs tagged with ``run_id`` as their ``rlhf_parent``."""
    import lightning as L

    if isinstance(cfg, PPOConfig):
        policy_ref, reward_ref = _ppo_prerequisites(cfg, workspace, run_id, enable_progress_bar)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        return _build_ppo(cfg, workspace, policy_ref, reward_ref)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    builder = {"sft": _build_sft, "reward": _build_reward, "classify": _build_classify}
    return builder[stage](cfg, workspace)


def _fit(
    stage: str,
    built: _Built,
    cfg: StageConfig,
    run: TrackedRun,
    workspace: Workspace,
    callbacks: list[Any] | None,
    enable_progress_bar: bool,
) -> dict[str, float]:
    """Train ``built.module`` (validating at the end too) and return its ``train_*`` and
    ``eval_*`` metrics."""
    from scalelab.training.trainer import make_trainer

    total = built.module.total_steps
    trainer = make_trainer(
        total,
        val_every=built.val_every,
        # PPO optimises manually and clips its own gradients.
        grad_clip=None if isinstance(cfg, PPOConfig) else (cfg.grad_clip or None),
        log_every=max(1, min(50, total // 50)),  # MLflow writes cost time
        logger=run.logger,
        callbacks=callbacks or [],
        enable_progress_bar=enable_progress_bar,
        # PPO's bar counts iterations (each several optimizer steps), as --steps does.
        progress_unit=f"{stage} iteration" if isinstance(cfg, PPOConfig) else f"{stage} step",
        root_dir=workspace.root / "lightning",
        accelerator=cfg.accelerator,
        devices=1,
    )
    with warnings.catch_warnings():
        # PPO's frozen reference policy and reward model stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        trainer.fit(built.module)
    if built.val_every is not None and built.steps % built.val_every:
        trainer.validate(built.module, verbose=False)
    return {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("eval_", "train_"))
    }
