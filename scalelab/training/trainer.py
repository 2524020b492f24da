"""The one Trainer factory of pre-training and the RLHF stages, and the precision rule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from scalelab.training.progress import Progress


def resolve_precision(precision: str) -> str:
    """bf16 autocast where the GPU supports it, else fp32 (CPU bf16 is emulated, ~4x slower)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_trainer(
    max_steps: int,
    *,
    val_every: int | None,
    grad_clip: float | None,
    log_every: int,
    logger: Any,
    callbacks: Sequence[L.Callback] = (),
    enable_progress_bar: bool = True,
    progress_unit: str = "step",
    root_dir: Path | None = None,
    **hardware: Any,
) -> L.Trainer:
    """A Trainer for exactly ``max_steps`` optimizer steps, validating every ``val_every``
    steps (``None``: never, in one epoch, as the PPO loop that evaluates itself), clipping
    gradients at ``grad_clip`` (``None``: off, or done by a manual-optimisation module).

    ``hardware`` (``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``)
    passes to Lightning unchanged; no sanity validation, checkpoints or summary, and
    deterministic algorithms. ``enable_progress_bar`` shows scalelab's ``Progress``, counting
    ``progress_unit``s, instead of Lightning's bar."""
    if val_every is None:
        validation: dict[str, Any] = dict(limit_val_batches=0, max_epochs=1)
    else:
        validation = dict(val_check_interval=val_every, check_val_every_n_epoch=None)
    return L.Trainer(
        **hardware,
        max_steps=max_steps,
        **validation,
        log_every_n_steps=log_every,
        logger=logger,
        callbacks=[*callbacks, *([Progress(unit=progress_unit)] if enable_progress_bar else [])],
        gradient_clip_val=grad_clip,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root_dir) if root_dir else None,
        deterministic=True,
    )
