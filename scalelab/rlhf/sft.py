"""Supervised fine-tuning: next-token loss on response tokens only, prompt tokens masked.

The demonstrations are single- or multi-turn dialogues (``USER ... ASSISTANT ... END`` per
turn); every assistant turn and its ``END`` is a target and every user turn and role token
before the answer is not, as in InstructGPT's SFT and ChatGPT's dialogue fine-tuning.
Masked targets are ``-100``, which ``GPT.forward`` ignores, so the loss is the mean over
response tokens in nats per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from scalelab.model import GPT
from scalelab.rlhf.config import SFTConfig
from scalelab.rlhf.generate import sample_gold
from scalelab.rlhf.heads import pad_batch
from scalelab.rlhf.module import StageModule
from scalelab.rlhf.task import Example, Prompt
from scalelab.training.module import check_finite

IGNORE = -100


def sft_targets(ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``ids[:, :-1]`` and targets ``ids[:, 1:]`` with ``-100`` wherever the target
    token is not a response token."""
    targets = ids[:, 1:].masked_fill(~loss_mask[:, 1:], IGNORE)
    return ids[:, :-1], targets


def collate(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (inputs, targets) of demonstrations; padding is never a target."""
    ids, _ = pad_batch([e.ids for e in examples])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, e in enumerate(examples):
        mask[i, : len(e.loss_mask)] = torch.from_numpy(e.loss_mask)
    return sft_targets(ids, mask)


def sft_loss(model: GPT, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over response targets (nats per token)."""
    _, loss = model(inputs, targets)
    return loss


class SFTModule(StageModule):
    """SFT of ``model`` on demonstrations; evaluation adds the gold reward of samples."""

    collate = staticmethod(collate)
    model: GPT

    def __init__(
        self,
        cfg: SFTConfig,
        model: GPT,
        train: Sequence[Example],
        evaluation: Sequence[Example],
        eval_prompts: Sequence[Prompt],
        max_new_tokens: int,
    ) -> None:
        super().__init__(cfg, model, train, evaluation)
        self.eval_prompts, self.max_new_tokens = list(eval_prompts), max_new_tokens

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        inputs, targets = batch
        loss = sft_loss(self.model, inputs, targets)
        check_finite(loss, self.global_step)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_response_tokens", (targets != IGNORE).sum().float())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        inputs, targets = batch
        n = int((targets != IGNORE).sum())
        self.log("eval_loss", sft_loss(self.model, inputs, targets), batch_size=n)

    def on_validation_epoch_end(self) -> None:
        stats = sample_gold(self.model, self.eval_prompts, self.max_new_tokens, seed=self.cfg.seed)
        self.log("eval_gold_reward", stats["gold_reward"])
        self.log("eval_finished", stats["finished"])
