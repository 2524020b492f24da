"""Batched MLflow logging for training runs: one ``log_batch`` call every few seconds.

``BatchedMLflowLogging`` replaces the Trainer's MLflow logger by a buffering wrapper: over HTTP
to a tracking server one call costs tens of milliseconds, which per logged step would cost more
than the training of a small model.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

from scalelab.results.tracking import MAX_BATCH


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


def buffered_logger(inner: Logger, flush_every: float = 15.0) -> _BufferedLogger:
    """``inner`` (an ``MLFlowLogger``) behind the buffer, for loops without a Trainer
    (``scalelab.training.grouped_run``); ``flush()`` it when the run ends."""
    return _BufferedLogger(inner, flush_every)


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
