"""``TrackedRun``: what every training run records in MLflow, pre-training and RLHF alike.

Its parameters, tags and ``config.json`` when it starts; its final metrics at the last step;
its checkpoint; and, when it fails, the status FAILED with a ``failure_reason`` tag. MLflow is
reached only through ``scalelab.results.tracking``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scalelab.results import tracking
from scalelab.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

MAX_REASON = 5000  # characters of an error kept in the failure_reason tag


class TrackedRun:
    """One MLflow run of ``experiment`` (``run_id`` continues a run the caller created, e.g.
    a sweep's trial) and its Lightning logger, ``logger``.

    Set ``active`` to False on the non-zero ranks of a multi-process run: only rank zero
    records anything.
    """

    def __init__(
        self,
        experiment: str,
        workspace: Workspace,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.workspace = workspace
        self.logger = tracking.run_logger(
            experiment, workspace, run_name=run_name, run_id=run_id, tags=tags
        )
        self.active = True

    @property
    def run_id(self) -> str:
        return self.logger.run_id

    def log_setup(
        self, params: dict[str, Any], config: dict[str, Any], tags: dict[str, str] | None = None
    ) -> None:
        """Log the run's parameters and tags, and ``config`` as ``config.json``."""
        if not self.active:
            return
        self.logger.log_hyperparams(params)
        client = self.logger.experiment
        for key, value in (tags or {}).items():
            client.set_tag(self.run_id, key, value)
        tracking.log_json_artifact(client, self.run_id, config, "config.json")

    def fail(self, reason: str) -> None:
        """End the run as FAILED with ``reason`` as its ``failure_reason`` tag."""
        if not self.active:
            return
        self.logger.experiment.set_tag(self.run_id, "failure_reason", reason[:MAX_REASON])
        self.logger.finalize("failed")

    @contextlib.contextmanager
    def failing_on(self, *errors: type[BaseException]) -> Iterator[None]:
        """Fail the run (``fail``) when one of ``errors`` escapes the block, then re-raise."""
        try:
            yield
        except errors as err:
            self.fail(str(err))
            raise

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """Log the finite ``metrics`` at ``step``, the run's last."""
        if not self.active:
            return
        client = self.logger.experiment
        for key, value in metrics.items():
            if math.isfinite(value):
                client.log_metric(self.run_id, key, value, step=step)

    def log_table(self, table: pd.DataFrame, name: str) -> None:
        """Log ``table`` as the CSV artifact ``name``."""
        if self.active:
            tracking.log_table_artifact(self.logger.experiment, self.run_id, table, name)

    def log_checkpoint(self, ckpt: dict) -> str | None:
        """Log ``ckpt`` (``scalelab.training.checkpoint``); its reference ``runs:/<run_id>``."""
        if not self.active:
            return None
        from scalelab.training import checkpoint

        return checkpoint.log(self.logger.experiment, self.run_id, ckpt, self.workspace)

    def finish(self) -> None:
        """End the run as FINISHED."""
        if self.active:
            self.logger.finalize("success")
