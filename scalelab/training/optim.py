"""The optimiser every run uses: AdamW with decay on matrices only, and the schedule of
``lr_factor`` stepped once per optimizer step."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from scalelab.training.config import Schedule, lr_factor


class Optimisation(Schedule, Protocol):
    """The optimiser fields ``TrainConfig`` and the RLHF stage configs share."""

    lr: float
    weight_decay: float


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decay on matrices only (Radford et al. 2019
    via nanoGPT); biases and gains are not scale parameters and decaying them only hurts."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw_with_schedule(
    module: nn.Module,
    cfg: Optimisation,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.95),
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on ``module``'s trainable parameters (peak ``cfg.lr``) and its warm-up/decay
    schedule over ``total_steps`` (``lr_factor``)."""
    optimizer = torch.optim.AdamW(param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg)
    )
    return optimizer, scheduler
