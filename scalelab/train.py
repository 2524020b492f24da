"""Language-model pre-training: ``train(TrainConfig(...))``, one tracked run.

``train`` trains one GPT for an exact token budget D (so that compute C = 6·N·D is
controlled), validates on a fixed held-out set, and logs everything to MLflow. The pieces live
in ``scalelab.training``: the config (``config``), the LightningModule (``language_model``), the
Trainer (``trainer``), the run's records (``run``). Importing this module imports no torch or
Lightning, so the CLI and sweep specs can read ``TrainConfig`` cheaply.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from scalelab.resources import check_resources, share_cores_among_processes
from scalelab.training.config import (
    RepeatedDataError,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    check_no_repeats,
    lr_factor,
)
from scalelab.training.plan import budget, run_params
from scalelab.vocab import compute_6nd
from scalelab.workspace import Workspace

if TYPE_CHECKING:
    pass

__all__ = [
    "RepeatedDataError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_no_repeats",
    "budget",
    "lr_factor",
    "run_params",
    "train",
]


def train(
    cfg: TrainConfig,
    workspace: Workspace | None = None,
    *,
    run_id: str | None = None,
    callbacks: list[Any] | None = None,
    tags: dict[str, str] | None = None,
    enable_progress_bar: bool = True,
) -> TrainResult:
    """Train one model for ``cfg.tokens`` tokens and log it to MLflow.

    ``run_id`` continues an MLflow run created by the caller (sweeps create nested runs);
    otherwise a new run is started in ``cfg.experiment``. Raises ``TrainingDiverged`` (after
    marking the run FAILED) if the loss becomes non-finite.
    """
    import lightning as L

    from scalelab.data import prepare
    from scalelab.training.language_model import LanguageModel, pretraining_trainer
    from scalelab.training.run import TrackedRun

    workspace = (workspace or Workspace.resolve()).ensure()
    data = prepare(cfg.corpus, cfg.tokenizer, cache_dir=workspace.cache_dir)
    model_cfg = cfg.model_cfg(data.vocab_size)
    check_resources(cfg, model_cfg)  # before the run exists: a refusal leaves nothing RUNNING
    share_cores_among_processes(cfg.devices, cfg.accelerator)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    steps, tokens, val_every_steps = budget(cfg)
    check_no_repeats(tokens, len(data.train), cfg)

    run = TrackedRun(cfg.experiment, workspace, run_name=cfg.run_name, run_id=run_id, tags=tags)
    trainer = pretraining_trainer(
        cfg,
        steps,
        val_every_steps,
        logger=run.logger,
        callbacks=callbacks,
        enable_progress_bar=enable_progress_bar,
        root_dir=workspace.root / "lightning",
    )
    run.active = trainer.is_global_zero
    module = LanguageModel(model_cfg, cfg, data, steps)
    run.log_setup(
        run_params(cfg, model_cfg, data, tokens),
        {"train": cfg.model_dump(), "model": model_cfg.to_dict(), "data": data.describe()},
        tags={"corpus_baselines": json.dumps(data.baselines)},
    )

    started = time.perf_counter()
    with run.failing_on(TrainingDiverged):
        trainer.fit(module)
    if steps % val_every_steps:
        trainer.validate(module, verbose=False)
    wall = time.perf_counter() - started

    loss = float(trainer.callback_metrics["val/loss"])
    bpb = float(trainer.callback_metrics.get("val/bpb", math.nan))
    run.log_final({"loss": loss, "val_bpb": bpb, "wall_time": wall}, step=steps)
    if cfg.evals and trainer.is_global_zero:
        from scalelab.evals.run import evaluate

        report = evaluate(module.model, cfg.evals, samples=cfg.eval_samples, seed=cfg.seed)
        run.log_final(report.metrics, step=steps)
        for name, table in report.tables.items():
            run.log_table(table, f"eval-{name}.csv")
    if cfg.save_checkpoint:
        from scalelab.training import checkpoint

        run.log_checkpoint(checkpoint.payload(module.model, "pretrain"))
    run.finish()
    return TrainResult(
        run_id=run.run_id,
        loss=loss,
        bpb=bpb,
        n_params=model_cfg.n_params_nonembedding,
        n_params_total=model_cfg.n_params_total,
        tokens=tokens,
        compute=compute_6nd(model_cfg.n_params_nonembedding, tokens),
        wall_time=wall,
    )
