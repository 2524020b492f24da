"""The reward model and InstructGPT's pairwise ranking loss.

For a prompt x with K completions ranked by a labeller, InstructGPT (Ouyang et al. 2022, eq. 1)
minimises

    loss(θ) = −1/C(K,2) · Σ_{y_w ≻ y_l} log σ(r_θ(x, y_w) − r_θ(x, y_l)),

the mean over all K-choose-2 pairs, with all pairs of one prompt in one batch element: each
completion is scored once per prompt rather than once per pair (K forward passes instead of
K(K−1)), and the comparisons of a prompt, which are correlated, are never split across
batches (the paper's remedy for the over-fitting it saw when shuffling pairs). A batch holds
prompts with different K; ``valid`` masks the missing completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from scalelab.rlhf.config import RewardConfig
from scalelab.rlhf.heads import RewardModel, pad_batch
from scalelab.rlhf.module import StageModule
from scalelab.rlhf.task import END, Comparison, encode
from scalelab.training.module import check_finite


def pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, K, K) bool: True at (i, j) when completion i is ranked above j and both exist.

    Completions are stored best first, so every i < j is a pair (winner i, loser j).
    """
    k = valid.size(1)
    above = torch.ones(k, k, dtype=torch.bool, device=valid.device).triu(diagonal=1)
    return above & valid[:, :, None] & valid[:, None, :]


def pairwise_loss(rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """InstructGPT's loss: for each prompt the mean of −log σ(r_w − r_l) over its C(K,2)
    pairs, then the mean over prompts. ``rewards`` (B, K) are ordered best first."""
    pairs = pair_mask(valid)
    diff = rewards[:, :, None] - rewards[:, None, :]
    nll = -F.logsigmoid(diff) * pairs
    per_prompt = nll.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
    return per_prompt.mean()


def pairwise_stats(
    rewards: torch.Tensor, valid: torch.Tensor, gold: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Accuracy (share of pairs with r_w > r_l) and mean margin r_w − r_l over all pairs;
    with ``gold``, the share of pairs whose scores order them as the gold reward does (pairs
    with equal gold reward left out)."""
    pairs = pair_mask(valid)
    diff = (rewards[:, :, None] - rewards[:, None, :])[pairs]
    stats = {"accuracy": (diff > 0).float().mean(), "margin": diff.mean()}
    if gold is not None:
        gold_diff = (gold[:, :, None] - gold[:, None, :])[pairs]
        decided = gold_diff != 0
        agree = (torch.sign(diff) == torch.sign(gold_diff))[decided]
        stats["gold_accuracy"] = agree.float().mean() if agree.numel() else diff.new_tensor(1.0)
    return stats


@dataclass(frozen=True)
class RankedBatch:
    """Flattened completions of B prompts: ``ids``/``lengths`` of every completion, and where
    each one goes in the (B, K) reward matrix (``row``, ``col``)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    valid: torch.Tensor
    gold: torch.Tensor

    def scatter(self, scores: torch.Tensor) -> torch.Tensor:
        """The (B, K) reward matrix of per-completion ``scores`` (zeros where not valid)."""
        out = scores.new_zeros(self.valid.shape)
        out[self.row, self.col] = scores
        return out


def completion_ids(comparison: Comparison) -> list[np.ndarray]:
    """Token ids of prompt + completion + ``END`` for each completion, best first."""
    return [
        np.concatenate([comparison.prompt.ids, encode(c), [END]]) for c in comparison.completions
    ]


def collate(comparisons: Sequence[Comparison]) -> RankedBatch:
    seqs, rows, cols = [], [], []
    k_max = max(len(c.completions) for c in comparisons)
    valid = torch.zeros(len(comparisons), k_max, dtype=torch.bool)
    gold = torch.zeros(len(comparisons), k_max)
    for b, comparison in enumerate(comparisons):
        for k, ids in enumerate(completion_ids(comparison)):
            seqs.append(ids)
            rows.append(b)
            cols.append(k)
        valid[b, : len(comparison.completions)] = True
        gold[b, : len(comparison.completions)] = torch.tensor(comparison.gold)
    ids, lengths = pad_batch(seqs)
    return RankedBatch(ids, lengths, torch.tensor(rows), torch.tensor(cols), valid, gold)


def score(model: RewardModel, batch: RankedBatch) -> torch.Tensor:
    """The (B, K) rewards of a batch."""
    return batch.scatter(model(batch.ids, batch.lengths))


class RewardModule(StageModule):
    """Trains a reward model on ranked completions; logs loss, accuracy and margin."""

    collate = staticmethod(collate)
    eval_batch_size = 64
    model: RewardModel

    def __init__(
        self,
        cfg: RewardConfig,
        model: RewardModel,
        train: Sequence[Comparison],
        evaluation: Sequence[Comparison],
    ) -> None:
        super().__init__(cfg, model, train, evaluation)

    def _step(self, batch: RankedBatch, prefix: str) -> torch.Tensor:
        rewards = score(self.model, batch)
        loss = pairwise_loss(rewards, batch.valid)
        n_pairs = int(pair_mask(batch.valid).sum())
        self.log(f"{prefix}_loss", loss, batch_size=len(batch.valid), prog_bar=True)
        stats = pairwise_stats(rewards.detach(), batch.valid, batch.gold)
        for name, value in stats.items():
            self.log(f"{prefix}_{name}", value, batch_size=n_pairs)
        return loss

    def training_step(self, batch: RankedBatch, _: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        check_finite(loss, self.global_step)
        return loss

    def validation_step(self, batch: RankedBatch, _: int) -> None:
        self._step(batch, "eval")

    def transfer_batch_to_device(self, batch, device, dataloader_idx):  # noqa: ANN001
        return RankedBatch(*(t.to(device) for t in batch.__dict__.values()))
