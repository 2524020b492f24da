"""Sampling responses from a policy, batched over prompts of different lengths.

Prompts are right padded and each row writes its next token at its own position. Attention is
causal and positions are absolute, so the logits a row sees are exactly those of its unpadded
prefix: no attention mask and no left padding (which would shift learned positions) needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scalelab.model import GPT
from scalelab.rlhf.heads import pad_batch
from scalelab.rlhf.task import END, PAD, Prompt, gold_reward


@dataclass(frozen=True)
class Rollout:
    """Prompts with sampled responses, right padded.

    ``ids`` (B, T); row b holds its prompt in ``[0, prompt_len[b])`` and its response (ending
    with ``END`` when the policy finished) in ``[prompt_len[b], lengths[b])``.
    """

    ids: torch.Tensor
    prompt_len: torch.Tensor
    response_len: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.prompt_len + self.response_len

    def action_mask(self) -> torch.Tensor:
        """(B, T−1) bool, aligned with ``token_logprobs``: index t is True when token t+1 is
        a response token."""
        t = torch.arange(1, self.ids.size(1), device=self.ids.device)
        return (t >= self.prompt_len[:, None]) & (t < self.lengths[:, None])

    def responses(self) -> list[np.ndarray]:
        """Each row's response ids (with ``END`` if it finished)."""
        ids = self.ids.cpu().numpy()
        return [
            ids[b, p : p + r]
            for b, (p, r) in enumerate(
                zip(self.prompt_len.tolist(), self.response_len.tolist(), strict=True)
            )
        ]

    def finished(self) -> torch.Tensor:
        """(B,) bool: the response ends with ``END``."""
        last = self.ids.gather(1, (self.lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        return (last == END) & (self.response_len > 0)


@torch.no_grad()
def generate(
    policy: GPT,
    prompts: Sequence[np.ndarray],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample up to ``max_new_tokens`` tokens after each prompt, stopping a row at ``END``."""
    ids, prompt_len = pad_batch(prompts)
    B = ids.size(0)
    width = int(prompt_len.max()) + max_new_tokens
    if width > policy.config.context:
        raise ValueError(
            f"prompt ({int(prompt_len.max())} tokens) plus {max_new_tokens} new tokens exceeds "
            f"the context of {policy.config.context}"
        )
    device = next(policy.parameters()).device
    buf = torch.full((B, width), PAD, dtype=torch.long, device=device)
    buf[:, : ids.size(1)] = ids.to(device)
    pos = prompt_len.to(device).clone()
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)
    was_training = policy.training
    policy.eval()
    for _ in range(max_new_tokens):
        hidden = policy.hidden(buf[:, : int(pos.max())])
        logits = policy.lm_head(hidden[rows, pos - 1]).float()
        if greedy:
            token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if generator is not None and generator.device != probs.device:
                probs = probs.to(generator.device)  # a seeded CPU generator drives the draw
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        active = ~done
        buf[rows[active], pos[active]] = token[active]
        pos = pos + active.long()
        done = done | (active & (token == END))
        if bool(done.all()):
            break
    policy.train(was_training)
    return Rollout(buf[:, : int(pos.max())], prompt_len.to(device), pos - prompt_len.to(device))


@torch.no_grad()
def sample_gold(
    policy: GPT,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean gold reward and finished share of one sampled response per prompt (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    gold, finished = [], []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        rollout = generate(
            policy,
            [p.ids for p in chunk],
            max_new_tokens,
            temperature=temperature,
            generator=generator,
        )
        gold += [gold_reward(p, r) for r, p in zip(rollout.responses(), chunk, strict=True)]
        finished += rollout.finished().tolist()
    return {"gold_reward": float(np.mean(gold)), "finished": float(np.mean(finished))}
