"""The optimiser every run uses: AdamW with decay on matrices only, and the schedule of
``lr_factor`` stepped once per optimizer step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from scalelab.training.schedule import Schedule, lr_factor


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


def adamw_implementation(params: Iterable[torch.Tensor], fused: bool = True) -> dict[str, bool]:
    """AdamW's implementation for parameters on these devices: ``fused`` on CUDA and CPU,
    torch's default elsewhere.

    The fused kernel updates every parameter of a group in one call instead of a loop of small
    ops; it is the same AdamW update. On CUDA PyTorch documents it as the fastest of its three
    implementations (fused > foreach > for-loop). On CPU torch's default is the for-loop, and
    ``benchmarks/bench_optim.py`` measured one optimizer step 8x (10M parameters) to 15x (1M)
    faster fused, with foreach between; other backends (MPS, XLA) may lack the kernel.
    ``fused=False`` (see ``ScheduledModule``) keeps torch's default everywhere.
    """
    if not fused:
        return {}
    devices = {p.device.type for p in params}
    return {"fused": True} if len(devices) == 1 and devices <= {"cuda", "cpu"} else {}


def adamw_with_schedule(
    module: nn.Module,
    cfg: Optimisation,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.95),
    fused: bool = True,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on ``module``'s trainable parameters (peak ``cfg.lr``) and its warm-up/decay
    schedule over ``total_steps`` (``lr_factor``); the fused kernel where
    ``adamw_implementation`` allows it."""
    groups = param_groups(module, cfg.weight_decay)
    kernel = adamw_implementation((p for group in groups for p in group["params"]), fused)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **kernel)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg)
    )
    return optimizer, scheduler
