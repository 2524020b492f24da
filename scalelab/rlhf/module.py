"""``StageModule``: the LightningModule base of the supervised RLHF stages (SFT, reward
model, GPT-1's task head): a model trained on shuffled examples, evaluated on held-out ones.

The optimiser and schedule are pre-training's (``scalelab.training.module.ScheduledModule``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from scalelab.rlhf.config import StageConfig
from scalelab.training.module import ScheduledModule


class StageModule(ScheduledModule):
    """Trains ``model`` on ``train`` for ``cfg.steps`` steps, in batches of ``cfg.batch_size``
    shuffled reproducibly from ``cfg.seed``, and evaluates it on ``evaluation`` in batches of
    ``eval_batch_size``. Subclasses set ``collate`` (examples to a batch) and the steps."""

    collate: ClassVar[Callable[[Sequence[Any]], Any]]
    eval_batch_size: ClassVar[int] = 128
    cfg: StageConfig

    def __init__(
        self, cfg: StageConfig, model: nn.Module, train: Sequence[Any], evaluation: Sequence[Any]
    ) -> None:
        super().__init__(cfg, cfg.steps)
        self.model = model
        self.train_set, self.eval_set = list(train), list(evaluation)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.cfg.seed),
            collate_fn=type(self).collate,
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.eval_set, batch_size=self.eval_batch_size, collate_fn=type(self).collate
        )
