"""The Lightning callback a sweep adds to every training run to prune it.

``OptunaPruning`` reports the validation loss to the trial keyed by **tokens seen** (global
  step × tokens per step). Optuna's stock Lightning callback keys reports by epoch; a run here is
one long epoch validated several times, so all but one report per epoch would be dropped, and
  global steps are not comparable between trials with different batch sizes. An RLHF stage's
  budget is steps, so every trial of a cell validates at the same steps: its reports are keyed
by global step. (Metrics go to MLflow in batches: ``scalelab.results.batched_logging``.)
"""

from __future__ import annotations

import math

import lightning as L
import optuna

from scalelab.train import TrainingDiverged


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
