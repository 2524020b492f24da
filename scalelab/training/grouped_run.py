"""``train_group``: several pre-training runs of one shape trained together, each its own
MLflow run, as ``scalelab.train.train`` records one.

Every member gets what ``train`` gives a run: its parameters, tags and ``config.json``, its
``train/loss``, ``lr``, ``tokens_seen`` and ``val/*`` curves, its final ``loss``, ``val_bpb`` and
``wall_time`` (the group's), its checkpoint when asked, FINISHED at the end or FAILED when it
diverges; the tag ``group_size`` says how many runs trained beside it. ``group_key`` says which
configs can share a group: those equal in everything but what a member owns.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scalelab.resources import check_resources, uses_gpu
from scalelab.training.config import (
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    check_no_repeats,
)
from scalelab.training.plan import budget, run_params
from scalelab.training.run import TrackedRun
from scalelab.training.stacked import STACKED_VARIANTS
from scalelab.vocab import compute_6nd
from scalelab.workspace import Workspace

if TYPE_CHECKING:
    from scalelab.data import TokenData
    from scalelab.model import GPTConfig
    from scalelab.training.grouped import MemberOutcome

# What each member of a group owns; every other TrainConfig field must be equal across it.
MEMBER_FIELDS = frozenset(
    {
        "tokens",
        "lr",
        "min_lr_ratio",
        "warmup",
        "schedule",
        "decay_fraction",
        "weight_decay",
        "beta1",
        "beta2",
        "grad_clip",
        "seed",
        "val_every",
        "experiment",
        "run_name",
        "save_checkpoint",
        "repeat_data",
    }
)
# Fields that pick the model; compared through the model config they resolve to.
SIZE_FIELDS = frozenset({"preset", "n_params_target"})


def ungroupable(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` must train alone, or None: grouping is one fp32 process on the CPU, for
    the variants ``StackedGPT`` writes, in the standard parametrisation."""
    if cfg.variant not in STACKED_VARIANTS:
        return f"variant {cfg.variant}"
    if cfg.parametrization != "standard":
        return f"parametrization {cfg.parametrization}"
    if cfg.dropout:
        return "dropout"
    if cfg.compile:
        return "compile"
    if cfg.devices not in (1, "1") or cfg.num_nodes != 1 or cfg.strategy != "auto":
        return "several devices"
    if cfg.precision not in ("auto", "32-true", "32"):
        return f"precision {cfg.precision}"
    if uses_gpu(cfg.accelerator):
        return "a GPU"  # a GPU runs one small model fast enough, and bf16 rounds differently
    if cfg.evals:
        return "evaluation suites"  # they decode with one model, not a stacked group
    return None


def group_key(cfg: TrainConfig, vocab_size: int) -> tuple[Any, ...]:
    """Configs with equal keys train together in one group."""
    shared = cfg.model_dump(exclude=set(MEMBER_FIELDS | SIZE_FIELDS))
    return (cfg.model_cfg(vocab_size), tuple(sorted((k, str(v)) for k, v in shared.items())))


@dataclass
class MemberHooks:
    """A caller's view of one member: ``on_validation(tokens_seen, step, val_loss, final)``
    after each validation every ``val_every`` tokens (as a Lightning callback sees them during
    fit; it may raise to stop the member, e.g. ``TrialPruned``), and ``on_end(result, error)``
    once the member's run is recorded."""

    on_validation: Callable[[int, int, float, bool], None] | None = None
    on_end: Callable[[TrainResult | None, BaseException | None], None] | None = None


def _stream(cfg: TrainConfig, data: TokenData) -> Any:
    from scalelab.data import EpochWindows, RandomWindows

    # One process: the batches LanguageModel.train_dataloader gives rank 0 of 1.
    if cfg.data_order == "epoch":
        return EpochWindows(data.train, cfg.context, cfg.batch_size, cfg.seed)
    return RandomWindows(data.train, cfg.context, cfg.batch_size, cfg.seed)


def train_group(
    cfgs: Sequence[TrainConfig],
    workspace: Workspace | None = None,
    *,
    run_ids: Sequence[str | None] | None = None,
    hooks: Sequence[MemberHooks] | None = None,
    tags: dict[str, str] | None = None,
    flush_every: float = 15.0,
) -> list[TrainResult | BaseException]:
    """Train ``cfgs`` (one ``group_key``) as one group; each member's result or its error.

    ``run_ids[i]`` continues an MLflow run the caller created (a sweep's trial), as in
    ``train``. A member that diverges ends FAILED; any other error of a member (e.g. its
    pruning hook's) is left for the caller to record; the others train on.
    """
    from scalelab.data import prepare, val_windows
    from scalelab.results.batched_logging import buffered_logger
    from scalelab.training.grouped import GroupTrainer, Member

    workspace = (workspace or Workspace.resolve()).ensure()
    first = cfgs[0]
    data = prepare(first.corpus, first.tokenizer, cache_dir=workspace.cache_dir)
    key = group_key(first, data.vocab_size)
    for cfg in cfgs:
        reason = ungroupable(cfg)
        if reason is not None or group_key(cfg, data.vocab_size) != key:
            raise ValueError(f"run {cfg.run_name!r} cannot join this group ({reason or 'shape'})")
    model_cfg = first.model_cfg(data.vocab_size)
    run_ids = list(run_ids or [None] * len(cfgs))
    hooks = list(hooks or [MemberHooks() for _ in cfgs])
    per_token = data.val_bytes_per_token
    bits_per_nat = 1.0 / (math.log(2) * per_token) if per_token > 0 else None
    results: list[TrainResult | BaseException] = [RuntimeError("not trained")] * len(cfgs)
    clock = _Clock()
    members = []
    for index, (cfg, run_id, hook) in enumerate(zip(cfgs, run_ids, hooks, strict=True)):
        check_resources(cfg, model_cfg)
        steps, tokens, val_every_steps = budget(cfg)
        check_no_repeats(tokens, len(data.train), cfg)
        run = TrackedRun(
            cfg.experiment,
            workspace,
            run_name=cfg.run_name,
            run_id=run_id,
            tags=tags,
        )
        run.log_setup(
            run_params(cfg, model_cfg, data, tokens),
            {"train": cfg.model_dump(), "model": model_cfg.to_dict(), "data": data.describe()},
            # Set here, not at creation: a continued run (a sweep trial's) exists already.
            tags={"corpus_baselines": json.dumps(data.baselines), "group_size": str(len(cfgs))},
        )
        tracked = _TrackedMember(
            cfg,
            model_cfg,
            run,
            buffered_logger(run.logger, flush_every),
            hook,
            bits_per_nat,
            clock,
            lambda value, i=index: results.__setitem__(i, value),
        )
        members.append(
            Member(
                cfg,
                steps,
                val_every_steps,
                _stream(cfg, data),
                on_step=tracked.on_step,
                on_validation=tracked.on_validation,
                on_end=tracked.on_end,
            )
        )
    trainer = GroupTrainer(
        model_cfg,
        members,
        val_windows(data.val, first.context, first.val_tokens),
        keep_weights=any(c.save_checkpoint for c in cfgs),
    )
    clock.start()  # wall_time counts training, as train()'s
    trainer.run()
    return results


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


class _TrackedMember:
    """One member's MLflow records, as ``train`` and ``LanguageModel`` log them."""

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: GPTConfig,
        run: TrackedRun,
        logger: Any,
        hook: MemberHooks,
        bits_per_nat: float | None,
        clock: _Clock,
        store: Callable[[TrainResult | BaseException], None],
    ) -> None:

        self.cfg, self.model_cfg, self.run, self.logger, self.hook = (
            cfg,
            model_cfg,
            run,
            logger,
            hook,
        )
        self.bits_per_nat, self.clock, self.store = bits_per_nat, clock, store
        self.steps, self.tokens, self.val_every = budget(cfg)
        self.tokens_per_step = cfg.batch_size * cfg.context
        self.log_every = max(1, min(50, self.steps // 100))  # as pretraining_trainer

    def _with_bpb(self, metrics: dict[str, float], name: str, loss: float) -> dict[str, float]:
        if self.bits_per_nat:
            metrics[name] = loss * self.bits_per_nat
        return metrics

    def on_step(self, step: int, loss: float, lr: float) -> None:
        if step % self.log_every == 0:
            metrics = {"train/loss": loss, "lr": lr, "tokens_seen": step * self.tokens_per_step}
            self.logger.log_metrics(self._with_bpb(metrics, "train/bpb", loss), step=step)

    def on_validation(self, step: int, loss: float) -> None:
        # Not flushed here, as train() flushes after each validation: a group validates several
        # members at once, one SQLite commit each (~30 ms), which cost a tiny ladder a seventh of
        # its time. The buffer is sent every flush_every seconds and when the member ends.
        self.logger.log_metrics(self._with_bpb({"val/loss": loss}, "val/bpb", loss), step=step)
        # An off-cadence last validation is train()'s trainer.validate: no fit callback sees it.
        if self.hook.on_validation is not None and step % self.val_every == 0:
            self.hook.on_validation(step * self.tokens_per_step, step, loss, step == self.steps)

    def on_end(self, outcome: MemberOutcome) -> None:
        self.logger.flush()
        error, result = outcome.error, None
        if isinstance(error, TrainingDiverged):
            self.run.fail(str(error))
        elif error is None:
            result = self._finish(outcome)
        self.store(result if result is not None else error)
        if self.hook.on_end is not None:
            self.hook.on_end(result, error)

    def _finish(self, outcome: MemberOutcome) -> TrainResult:
        wall, model_cfg = self.clock.seconds(), self.model_cfg
        bpb = outcome.loss * self.bits_per_nat if self.bits_per_nat else math.nan
        self.run.log_final(
            {"loss": outcome.loss, "val_bpb": bpb, "wall_time": wall}, step=self.steps
        )
        if self.cfg.save_checkpoint and outcome.state_dict is not None:
            from scalelab.model import GPT
            from scalelab.training import checkpoint

            model = GPT(model_cfg)
            model.load_state_dict(outcome.state_dict)
            self.run.log_checkpoint(checkpoint.payload(model, "pretrain"))
        self.run.finish()
        n_params = model_cfg.n_params_nonembedding
        return TrainResult(
            run_id=self.run.run_id,
            loss=outcome.loss,
            bpb=bpb,
            n_params=n_params,
            n_params_total=model_cfg.n_params_total,
            tokens=self.tokens,
            compute=compute_6nd(n_params, self.tokens),
            wall_time=wall,
        )
