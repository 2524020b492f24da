"""Heads on the shared GPT trunk: GPT-1's task head, the reward model, the PPO value head.

Every head reads ``GPT.hidden`` (the final hidden states). Sequences in a batch are right
padded with ``PAD``; because attention is causal and positions are absolute, a row's hidden
states up to its length are exactly those of the unpadded sequence, so "the final token" is
position ``length − 1`` of each row.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scalelab.model import GPT, INIT_STD
from scalelab.rlhf.task import PAD


def pad_batch(
    seqs: Sequence[np.ndarray | Sequence[int]], pad: int = PAD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` int64 ids and the ``(B,)`` lengths of ``seqs``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(np.asarray(s), dtype=torch.long)
    return out, lengths


def final_token(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The hidden state (B, d) at each row's last real token, position ``lengths − 1``."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
    return hidden.gather(1, index).squeeze(1)


def _linear(d_in: int, d_out: int, std: float = INIT_STD) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class TaskHead(nn.Module):
    """GPT-1's fine-tuning head (Radford et al. 2018, §3.2): a linear layer W_y on the final
    token's hidden state, softmax over classes. ``forward`` also returns the language-model
    logits, for the auxiliary objective L3 = L2 + λ·L1."""

    def __init__(self, trunk: GPT, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.trunk = trunk
        self.n_classes = n_classes
        self.head = _linear(trunk.config.d_model, n_classes)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, n_classes) and LM logits (B, T, vocab)."""
        hidden = self.trunk.hidden(ids)
        return self.head(final_token(hidden, lengths)), self.trunk.lm_head(hidden)


class RewardModel(nn.Module):
    """A scalar head on the final token: r(x, y) for a prompt x and completion y.

    ``bias`` is subtracted from every score; InstructGPT (Ouyang et al. 2022, §3.5) sets it so
    that labeller demonstrations score 0 on average before RL (``normalize``).
    """

    def __init__(self, trunk: GPT) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = _linear(trunk.config.d_model, 1)
        self.register_buffer("bias", torch.zeros(()))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of right-padded sequences."""
        return self.head(final_token(self.trunk.hidden(ids), lengths)).squeeze(-1) - self.bias

    @torch.no_grad()
    def normalize(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256) -> float:
        """Shift scores so that the sequences given (demonstrations) average 0; returns the
        new bias."""
        self.bias.zero_()
        scores = [
            self(ids[i : i + batch_size], lengths[i : i + batch_size])
            for i in range(0, len(ids), batch_size)
        ]
        self.bias.fill_(torch.cat(scores).mean())
        return float(self.bias)


class PolicyWithValue(nn.Module):
    """The PPO policy (a GPT) and its value function V(s_t), one value per position.

    ``value_trunk=None`` puts a zero-initialised value head on the policy's own trunk (as trl's
    ``ValueHead``). Given a trunk (a copy of the reward model's), the value function is a
    separate network initialised from the reward model, as in Stiennon et al. (2020, §3.4) and
    InstructGPT (Ouyang et al. 2022, appendix C.4); ``value_head`` may then carry the reward
    head's weights.
    """

    def __init__(
        self, policy: GPT, value_trunk: GPT | None = None, value_head: nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.policy = policy
        self.value_trunk = value_trunk
        d_model = (value_trunk or policy).config.d_model
        if value_head is not None:
            self.value_head = copy.deepcopy(value_head)
        else:
            self.value_head = _linear(d_model, 1, std=0.0)  # V ≡ 0 at the start

    @property
    def shared(self) -> bool:
        return self.value_trunk is None

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LM logits (B, T, vocab) and values (B, T); value t is V of the prefix ids[:, :t+1]."""
        hidden = self.policy.hidden(ids)
        logits = self.policy.lm_head(hidden)
        value_hidden = hidden if self.value_trunk is None else self.value_trunk.hidden(ids)
        return logits, self.value_head(value_hidden).squeeze(-1)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(ids[:, t+1] | ids[:, :t+1]) for t = 0..T−2: shape (B, T−1)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
