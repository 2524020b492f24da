"""Best-of-n sampling against a reward model: the no-training baseline of RLHF.

Draw n responses from the policy and keep the one the reward model scores highest. Its KL
from the policy is analytic, log n − (n−1)/n (``scalelab.forecast.overoptimization.bon_kl``),
so best-of-n traces a gold-vs-KL curve without any optimisation (Stiennon et al. 2020; Nakano
et al. 2021; Gao et al. 2022). ``sample_pool`` draws one pool of N samples per prompt (scored
again by any reward model with ``SamplePool.rescored``) and ``bon_frame`` evaluates every
n ≤ N on it with the unbiased estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from scalelab.forecast.overoptimization import bon_curve, bon_kl
from scalelab.model import GPT
from scalelab.rlhf.generate import generate
from scalelab.rlhf.heads import RewardModel, pad_batch
from scalelab.rlhf.task import Prompt, gold_reward


@dataclass(frozen=True)
class SamplePool:
    """N sampled responses per prompt with their gold and reward-model scores, (prompts, N).

    ``ids``/``lengths`` keep the sampled sequences (prompt + response, right padded, row
    ``p·N + i`` is sample i of prompt p) so that other reward models can score the same pool
    (``rescored``).
    """

    proxy: np.ndarray
    gold: np.ndarray
    responses: list[list[np.ndarray]]
    ids: torch.Tensor
    lengths: torch.Tensor

    @property
    def size(self) -> int:
        return self.proxy.shape[1]

    @torch.no_grad()
    def rescored(self, reward_model: RewardModel, batch_size: int = 1024) -> SamplePool:
        """The same samples scored by another reward model."""
        was_training = reward_model.training
        reward_model.eval()
        device = next(reward_model.parameters()).device
        scores = torch.cat(
            [
                reward_model(
                    self.ids[i : i + batch_size].to(device),
                    self.lengths[i : i + batch_size].to(device),
                )
                for i in range(0, len(self.ids), batch_size)
            ]
        )
        reward_model.train(was_training)
        proxy = scores.float().cpu().numpy().reshape(self.gold.shape)
        return replace(self, proxy=proxy)


@torch.no_grad()
def sample_pool(
    policy: GPT,
    prompts: Sequence[Prompt],
    n: int,
    max_new_tokens: int,
    *,
    reward_model: RewardModel | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 512,
) -> SamplePool:
    """``n`` samples per prompt from ``policy`` with their gold reward and, given a
    ``reward_model``, its scores (NaN otherwise)."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    generator = torch.Generator().manual_seed(seed)
    flat = [p for p in prompts for _ in range(n)]
    gold, responses, seqs = [], [], []
    for i in range(0, len(flat), batch_size):
        chunk = flat[i : i + batch_size]
        rollout = generate(
            policy,
            [p.ids for p in chunk],
            max_new_tokens,
            temperature=temperature,
            generator=generator,
        )
        chunk_responses = rollout.responses()
        gold += [gold_reward(p, r) for p, r in zip(chunk, chunk_responses, strict=True)]
        responses += chunk_responses
        seqs += [
            row[:length]
            for row, length in zip(rollout.ids.cpu().numpy(), rollout.lengths.tolist(), strict=True)
        ]
    ids, lengths = pad_batch(seqs)
    shape = (len(prompts), n)
    pool = SamplePool(
        proxy=np.full(shape, np.nan),
        gold=np.reshape(gold, shape),
        responses=[responses[j * n : (j + 1) * n] for j in range(len(prompts))],
        ids=ids,
        lengths=lengths,
    )
    return pool if reward_model is None else pool.rescored(reward_model)


def best_of_n(pool: SamplePool, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The response the reward model prefers among the first ``n`` of each prompt's pool, and
    its gold reward."""
    if np.isnan(pool.proxy).any():
        raise ValueError("the pool has no reward-model scores; use pool.rescored(reward_model)")
    if not 1 <= n <= pool.size:
        raise ValueError(f"n must be in [1, {pool.size}]; got {n}")
    best = pool.proxy[:, :n].argmax(axis=1)
    rows = np.arange(len(best))
    return [pool.responses[r][b] for r, b in zip(rows, best, strict=True)], pool.gold[rows, best]


def bon_frame(pool: SamplePool, ns: Sequence[int] | None = None) -> pd.DataFrame:
    """Best-of-n at each n (default powers of two up to the pool size): ``n``, ``kl``,
    ``d``, expected ``proxy`` and ``gold`` reward (unbiased estimates from the pool)."""
    if np.isnan(pool.proxy).any():
        raise ValueError("the pool has no reward-model scores; use pool.rescored(reward_model)")
    if ns is None:
        ns = [2**k for k in range(int(np.log2(pool.size)) + 1)]
    return bon_curve(pool.proxy, pool.gold, ns)


__all__ = ["SamplePool", "best_of_n", "bon_frame", "bon_kl", "sample_pool"]
