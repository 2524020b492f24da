"""The optimiser every run uses: AdamW with decay on matrices only, per-parameter learning-rate
scales where the model asks for them (μP), and the schedule of ``lr_factor`` stepped once per
optimizer step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from scalelab.model import GPT
from scalelab.training.schedule import Schedule, lr_factor


class Optimisation(Schedule, Protocol):
    """The optimiser fields ``TrainConfig`` and the RLHF stage configs share."""

    lr: float
    weight_decay: float


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: decay on matrices only (Radford et al. 2019
    via nanoGPT); biases and gains are not scale parameters and decaying them only hurts.

    Each group's ``lr_scale`` multiplies the peak learning rate: 1 unless a GPT inside
    ``module`` scales a parameter (``GPT.lr_scales``: μP's hidden matrices at 1/m). Groups at
    scale 1 come first, so the first group's rate is the run's ``lr``.
    """
    scales = {
        id(p): scale
        for gpt in module.modules()
        if isinstance(gpt, GPT)
        for p, scale in gpt.lr_scales()
    }
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for p in module.parameters():
        if p.requires_grad:
            groups.setdefault((scales.get(id(p), 1.0), p.dim() >= 2), []).append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (scale, decay), params in sorted(
            groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1])
        )
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
    """AdamW on ``module``'s trainable parameters (peak ``cfg.lr`` times each group's
    ``lr_scale``) and its warm-up/decay schedule over ``total_steps`` (``lr_factor``); the fused
    kernel where ``adamw_implementation`` allows it."""
    groups = param_groups(module, cfg.weight_decay)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]  # LambdaLR scales each group's own rate
    kernel = adamw_implementation((p for group in groups for p in group["params"]), fused)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, **kernel)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg)
    )
    return optimizer, scheduler
