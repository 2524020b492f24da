"""Lightning callbacks a sweep adds to every training run: pruning and batched MLflow logging.

- ``OptunaPruning`` reports the validation loss to the trial keyed by **tokens seen** (global
  step × tokens per step). Optuna's stock Lightning callback keys reports by epoch; a run here is
  one long epoch validated several times, so all but one report per epoch would be dropped, and
  global steps are not comparable between trials with different batch sizes. An RLHF stage's
  budget is steps, so every trial of a cell validates at the same steps: its reports are keyed
  by global step.
- ``BatchedMLflowLogging`` buffers metrics and sends them in one ``log_batch`` call every few
  seconds and at each validation: over HTTP to a tracking server one call costs tens of
  milliseconds, which per logged step would cost more than the training of a small model.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.loggers import Logger

from scalelab.train import TrainingDiverged

MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch call


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation during fit; raise ``TrialPruned`` when told.

    Reports are keyed by tokens seen (global step × ``tokens_per_step``), or by global step
    when ``tokens_per_step`` is None. The last validation of a run is reported but never
    pruned: the run is complete by then. A non-finite value raises ``TrainingDiverged``.
    """

    def __init__(
        self, trial: optuna.Trial, tokens_per_step: int | None = None, monitor: str = "val/loss"
    ) -> None:
        self.trial = trial
        self.tokens_per_step = tokens_per_step
        self.monitor = monitor
        self.reports: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return  # the final trainer.validate() after fit reports nothing new
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        step = trainer.global_step
        if self.tokens_per_step is None:
            at, where = step, f"step {step}"
        else:
            at = step * self.tokens_per_step
            where = f"tokens_seen {at:,} (step {step})"
        if not math.isfinite(value):
            raise TrainingDiverged(f"validation loss became {value} at {where} ({self.monitor})")
        self.trial.report(value, at)
        self.reports.append((at, value))
        if trainer.max_steps > 0 and step >= trainer.max_steps:
            return
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at {where}: {self.monitor} {value:.4f} is worse than the pruner allows"
            )


class _BufferedLogger(Logger):
    """Wraps a Lightning ``MLFlowLogger``: metrics are buffered and sent in batches."""

    def __init__(self, inner: Logger, flush_every: float) -> None:
        super().__init__()
        self.inner = inner
        self.flush_every = flush_every
        self.buffer: list[Any] = []
        self.last_flush = time.monotonic()
        self.calls = 0  # log_batch calls made, for the benchmark

    # Logger's abstract API, delegated.
    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.inner.version

    @property
    def save_dir(self) -> str | None:
        return self.inner.save_dir

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    @property
    def run_id(self) -> str:
        return self.inner.run_id

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.inner.log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, str):
                continue
            self.buffer.append(Metric(key=key, value=float(value), timestamp=now, step=step or 0))
        if time.monotonic() - self.last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        while self.buffer:
            chunk, self.buffer = self.buffer[:MAX_BATCH], self.buffer[MAX_BATCH:]
            self.inner.experiment.log_batch(run_id=self.inner.run_id, metrics=chunk)
            self.calls += 1

    def save(self) -> None:
        self.inner.save()

    def finalize(self, status: str) -> None:
        self.flush()
        self.inner.finalize(status)


class BatchedMLflowLogging(L.Callback):
    """Replace the Trainer's MLflow logger by a buffering wrapper for the whole run.

    Flushes every ``flush_every`` seconds, after every validation, at the end of fit and
    validate, and when training stops on an exception, so nothing logged is lost unless the
    process itself is killed.
    """

    def __init__(self, flush_every: float = 15.0) -> None:
        self.flush_every = flush_every
        self.logger: _BufferedLogger | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.logger is not None or not trainer.loggers:
            return
        from lightning.pytorch.loggers import MLFlowLogger

        loggers = list(trainer.loggers)
        for i, logger in enumerate(loggers):
            if isinstance(logger, MLFlowLogger):
                self.logger = _BufferedLogger(logger, self.flush_every)
                loggers[i] = self.logger
        trainer.loggers = loggers

    def _flush(self) -> None:
        if self.logger is not None:
            self.logger.flush()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._flush()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._flush()
