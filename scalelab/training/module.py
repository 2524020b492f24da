"""``ScheduledModule``: the LightningModule base of pre-training and every RLHF stage.

It owns the optimiser (``optim.adamw_with_schedule``, stepped every optimizer step);
subclasses define the model, the data and the steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from scalelab.training.optim import Optimisation, adamw_with_schedule
from scalelab.training.schedule import TrainingDiverged


def check_finite(loss: torch.Tensor, step: int, what: str = "training loss") -> None:
    """Raise ``TrainingDiverged`` if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{what} became {loss.item()} at step {step}")


class ScheduledModule(L.LightningModule):
    """A LightningModule trained by AdamW (decay on matrices only) for ``total_steps``
    optimizer steps on the warm-up/decay schedule of ``cfg``."""

    def __init__(
        self, cfg: Optimisation, total_steps: int, betas: tuple[float, float] = (0.9, 0.95)
    ) -> None:
        super().__init__()
        self.cfg, self.total_steps, self.betas = cfg, total_steps, betas

    def fused_adamw_allowed(self) -> bool:
        """Whether the Trainer accepts a fused AdamW: Lightning's mixed-precision plugin
        refuses to clip the gradients of an optimizer that unscales them itself, which fused
        AdamW declares, even in bf16 where nothing is scaled (the plugin raises at the first
        step); then torch's default implementation is used."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        trainer = self._trainer
        if trainer is None:
            return True
        return not (
            isinstance(trainer.precision_plugin, MixedPrecision) and trainer.gradient_clip_val
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = adamw_with_schedule(
            self, self.cfg, self.total_steps, self.betas, fused=self.fused_adamw_allowed()
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
