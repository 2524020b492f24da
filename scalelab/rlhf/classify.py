"""GPT-1's supervised fine-tuning of a task head (Radford et al. 2018, §3.2).

The classifier is a linear layer on the final token's hidden state with a softmax over
classes, trained with L2 = −Σ log P(y | x¹..xᵐ); GPT-1 adds the language-model loss of the
same inputs as an auxiliary objective, L3(C) = L2(C) + λ·L1(C) with λ = 0.5, which it found
to improve generalisation and speed up convergence. ``aux_lm_weight=0`` drops it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from scalelab.rlhf.config import ClassifyConfig
from scalelab.rlhf.heads import TaskHead, pad_batch
from scalelab.rlhf.module import StageModule
from scalelab.training.module import check_finite


def collate(
    examples: Sequence[tuple[np.ndarray, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, lengths, labels) of right-padded classification examples."""
    ids, lengths = pad_batch([x for x, _ in examples])
    return ids, lengths, torch.tensor([y for _, y in examples], dtype=torch.long)


def classification_losses(
    model: TaskHead, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """L2 (cross-entropy of the class), L1 (LM loss on the input tokens, padding ignored)
    and the accuracy of the arg-max class."""
    class_logits, lm_logits = model(ids, lengths)
    targets = ids[:, 1:].clone()
    positions = torch.arange(1, ids.size(1), device=ids.device)
    targets[positions[None, :] >= lengths[:, None]] = -100
    lm = F.cross_entropy(
        lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), targets.reshape(-1), ignore_index=-100
    )
    return {
        "class_loss": F.cross_entropy(class_logits, labels),
        "lm_loss": lm,
        "accuracy": (class_logits.argmax(-1) == labels).float().mean(),
    }


class ClassifyModule(StageModule):
    """Fine-tunes a ``TaskHead`` with L3 = L2 + λ·L1."""

    collate = staticmethod(collate)
    eval_batch_size = 256
    model: TaskHead

    def __init__(
        self,
        cfg: ClassifyConfig,
        model: TaskHead,
        train: Sequence[tuple[np.ndarray, int]],
        evaluation: Sequence[tuple[np.ndarray, int]],
    ) -> None:
        super().__init__(cfg, model, train, evaluation)

    def _step(self, batch: tuple[torch.Tensor, ...], prefix: str) -> torch.Tensor:
        ids, lengths, labels = batch
        parts = classification_losses(self.model, ids, lengths, labels)
        loss = parts["class_loss"] + self.cfg.aux_lm_weight * parts["lm_loss"]
        size = len(labels)
        self.log(f"{prefix}_loss", loss, batch_size=size, prog_bar=True)
        for name, value in parts.items():
            self.log(f"{prefix}_{name}", value, batch_size=size)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], _: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        check_finite(loss, self.global_step)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        self._step(batch, "eval")
