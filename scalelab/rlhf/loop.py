"""What every stage's LightningModule shares: the optimiser, the schedule, the Trainer.

Lightning is imported inside functions (``import lightning`` costs seconds and the CLI imports
this package to print ``--help``); the module classes are built once on first use.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from scalelab.rlhf.config import StageConfig
from scalelab.train import TrainingDiverged, lr_factor

if TYPE_CHECKING:
    import lightning as L


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices only (GPT-2 via nanoGPT), trainable parameters only."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def shuffled_loader(dataset: Any, cfg: StageConfig, collate: Any) -> torch.utils.data.DataLoader:
    """Training batches of ``cfg.batch_size``, shuffled reproducibly from ``cfg.seed``."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=collate,
    )


def check_finite(loss: torch.Tensor, step: int, what: str = "training loss") -> None:
    """Raise ``TrainingDiverged`` (as ``scalelab.train`` does) if ``loss`` is NaN or inf."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{what} became {loss.item()} at step {step}")


@functools.cache
def base_module_class() -> type[L.LightningModule]:
    """``StageModule``: a LightningModule with AdamW and the warm-up/decay schedule of
    ``scalelab.train``; subclasses define the model (``self.model``), steps and data."""
    import lightning as L

    class StageModule(L.LightningModule):
        def __init__(self, cfg: StageConfig, total_steps: int) -> None:
            super().__init__()
            self.cfg, self.total_steps = cfg, total_steps

        def configure_optimizers(self) -> dict[str, Any]:
            optimizer = torch.optim.AdamW(
                param_groups(self, self.cfg.weight_decay), lr=self.cfg.lr, betas=(0.9, 0.95)
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(step, self.total_steps, self.cfg)
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    return StageModule


def make_trainer(
    cfg: StageConfig,
    max_steps: int,
    *,
    logger: Any,
    callbacks: list[Any] | None = None,
    val_every: int | None = None,
    automatic: bool = True,
    root_dir: str | None = None,
    enable_progress_bar: bool = False,
) -> L.Trainer:
    """A single-device Trainer for ``max_steps`` optimizer steps (one epoch when
    ``val_every`` is None, as the PPO loop uses)."""
    import lightning as L

    kwargs: dict[str, Any] = {}
    if val_every is not None:
        kwargs = dict(val_check_interval=val_every, check_val_every_n_epoch=None)
    else:
        kwargs = dict(limit_val_batches=0, max_epochs=1)
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        max_steps=max_steps,
        logger=logger,
        callbacks=list(callbacks or []),
        gradient_clip_val=(cfg.grad_clip or None) if automatic else None,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, max_steps // 50)),  # MLflow writes cost time
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        default_root_dir=root_dir,
        deterministic=True,
        **kwargs,
    )
