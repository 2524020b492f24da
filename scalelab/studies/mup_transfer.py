"""μP learning-rate transfer: the loss over a learning-rate grid at several widths, with and
without μP, on a real corpus.

Each (parametrisation, width, lr) trains a fixed-depth GPT from the same seed on the same
batches for a few dozen Adam steps (``adamw_with_schedule``: the groups and schedule every
run uses) and scores it on a fixed validation set. Width changes d_model only (depth, heads,
context and batch fixed), so d_head grows with width and μP's 1/d_head attention matters. A
plain loop rather than tracked runs: the grid is hundreds of tiny runs, where a Lightning
Trainer and an MLflow run each would cost more than the training.

Transfer is read off the grid: the best learning rate's index at each width, and the drift
from the base width to the widest, in grid steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from scalelab.data import RandomWindows, val_windows
from scalelab.model import GPT, GPTConfig
from scalelab.training.optim import adamw_with_schedule


@dataclass(frozen=True)
class GridSettings:
    """The fixed part of every run of the grid."""

    n_layer: int = 2
    n_head: int = 4
    context: int = 32
    batch_size: int = 8
    steps: int = 50
    warmup: float = 0.1
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    weight_decay: float = 0.0
    lr: float = 0.0  # set per run; ``adamw_with_schedule`` reads the fields above
    val_tokens: int = 16_384
    variant: str = "gpt2"
    seed: int = 0


def final_loss(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    width: int,
    lr: float,
    base_width: int | None,
    settings: GridSettings,
) -> float:
    """Validation loss (nats/token) after ``settings.steps`` steps; ``inf`` if training
    diverged. ``base_width`` None: the standard parametrisation."""
    torch.manual_seed(settings.seed)
    cfg = GPTConfig(
        variant=settings.variant,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        d_model=width,
        context=settings.context,
        vocab_size=vocab_size,
        mup_base_width=base_width,
    )
    model = GPT(cfg)
    optimizer, scheduler = adamw_with_schedule(model, replace(settings, lr=lr), settings.steps)
    stream = iter(RandomWindows(train, settings.context, settings.batch_size, settings.seed))
    for _ in range(settings.steps):
        x, y = next(stream)
        _, loss = model(x, y)
        if not torch.isfinite(loss):
            return math.inf  # diverged
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as every run clips
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    windows = val_windows(val, settings.context, settings.val_tokens)
    with torch.no_grad():
        losses = [model(w[:, :-1], w[:, 1:])[1].item() for w in windows.split(64)]
    return float(np.mean(losses))


@dataclass(frozen=True)
class Transfer:
    """Losses ``[width][lr]`` of one parametrisation and where their minima sit."""

    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    losses: tuple[tuple[float, ...], ...]

    @property
    def best(self) -> tuple[int, ...]:
        """Index of the best learning rate at each width."""
        return tuple(int(np.argmin(row)) for row in self.losses)

    @property
    def drift(self) -> int:
        """Grid steps the best learning rate moved from the first width to the last."""
        return self.best[-1] - self.best[0]

    @property
    def reused(self) -> float:
        """The widest model's loss at the rate tuned at the first width (tune once, reuse)."""
        return self.losses[-1][self.best[0]]

    @property
    def reuse_gap(self) -> float:
        """How much worse reusing is than tuning at the widest width, relative."""
        return self.reused / min(self.losses[-1]) - 1


def lr_grid(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    widths: tuple[int, ...],
    lrs: tuple[float, ...],
    base_width: int | None,
    settings: GridSettings,
) -> Transfer:
    """The loss at every (width, lr); ``base_width`` None trains the standard parametrisation."""
    losses = tuple(
        tuple(final_loss(train, val, vocab_size, w, lr, base_width, settings) for lr in lrs)
        for w in widths
    )
    return Transfer(widths, lrs, losses)
