"""The learning-rate schedule and the divergence error every run shares; imports no torch,
Lightning or pydantic, so ``benchmarks/gpu_check.py`` runs the scaffold without pydantic."""

from __future__ import annotations

import math
from typing import Literal, Protocol


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Schedule(Protocol):
    """The schedule fields ``TrainConfig`` and the RLHF stage configs share."""

    warmup: float
    min_lr_ratio: float
    schedule: Literal["cosine", "wsd"]
    decay_fraction: float


def lr_factor(step: int, total: int, cfg: Schedule) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total``.

    Linear warm-up, then either cosine decay to ``min_lr_ratio`` (GPT-3, Chinchilla) or
    warm-up-stable-decay: constant, then linear decay over the last ``decay_fraction``.
    """
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return (step + 1) / warmup
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = total - int(cfg.decay_fraction * total)
    if step < decay_start:
        return 1.0
    return 1.0 - (1 - floor) * (step - decay_start + 1) / max(1, total - decay_start)
