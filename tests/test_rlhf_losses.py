"""Losses and PPO pieces on hand-computed values and tiny untrained models (no training)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from scalelab.model import GPT, GPTConfig
from scalelab.rlhf.config import PPOConfig
from scalelab.rlhf.generate import generate
from scalelab.rlhf.heads import PolicyWithValue, RewardModel, TaskHead, final_token, pad_batch
from scalelab.rlhf.ppo import (
    AdaptiveKLController,
    evaluate_policy,
    gae,
    kl_penalised_rewards,
    make_experience,
    ppo_loss,
)
from scalelab.rlhf.reward import pairwise_loss, pairwise_stats
from scalelab.rlhf.sft import IGNORE, collate, sft_loss
from scalelab.rlhf.task import SyntheticTask, TaskConfig

TINY = GPTConfig(n_layer=2, n_head=2, d_model=32, context=64)


def nll(diff: float) -> float:
    """−log σ(diff), written out."""
    return math.log(1.0 + math.exp(-diff))


@pytest.fixture
def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY)


# --- reward model --------------------------------------------------------------------------
def test_pairwise_loss_k4_matches_hand_computed_pairs() -> None:
    rewards = torch.tensor([[2.0, 1.0, 0.5, -1.0]])  # best first
    # The six pairs (w, l) and their r_w − r_l:
    # (0,1) 1.0  (0,2) 1.5  (0,3) 3.0  (1,2) 0.5  (1,3) 2.0  (2,3) 1.5
    expected = (nll(1.0) + nll(1.5) + nll(3.0) + nll(0.5) + nll(2.0) + nll(1.5)) / 6
    loss = pairwise_loss(rewards, torch.ones(1, 4, dtype=torch.bool))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # By hand: 0.31326 + 0.20141 + 0.04859 + 0.47408 + 0.12693 + 0.20141 = 1.36568; / 6:
    assert loss.item() == pytest.approx(0.227613, abs=1e-6)


def test_pairwise_loss_k9_matches_hand_computed_pairs() -> None:
    # r_k = 0.5·(8 − k): a gap of g ranks has difference 0.5·g and occurs 9 − g times in
    # C(9, 2) = 36 pairs. One pair misordered by the model costs more: swap the last two.
    rewards = torch.tensor([[4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.0, 0.5]])
    diffs = []
    r = rewards[0].tolist()
    for i in range(9):
        for j in range(i + 1, 9):
            diffs.append(r[i] - r[j])
    assert len(diffs) == 36 and min(diffs) == -0.5
    expected = sum(nll(d) for d in diffs) / 36
    loss = pairwise_loss(rewards, torch.ones(1, 9, dtype=torch.bool))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    stats = pairwise_stats(rewards, torch.ones(1, 9, dtype=torch.bool))
    assert stats["accuracy"].item() == pytest.approx(35 / 36)
    assert stats["margin"].item() == pytest.approx(sum(diffs) / 36)


def test_pairwise_loss_averages_prompts_with_different_k() -> None:
    k4 = torch.tensor([2.0, 1.0, 0.5, -1.0])
    k9 = torch.linspace(4.0, 0.0, 9)
    padded = torch.zeros(2, 9)
    padded[0, :4], padded[1] = k4, k9
    padded[0, 4:] = 100.0  # padding must not count, whatever its value
    valid = torch.zeros(2, 9, dtype=torch.bool)
    valid[0, :4], valid[1] = True, True
    one = pairwise_loss(k4[None], torch.ones(1, 4, dtype=torch.bool))
    two = pairwise_loss(k9[None], torch.ones(1, 9, dtype=torch.bool))
    assert pairwise_loss(padded, valid).item() == pytest.approx((one + two).item() / 2)


def test_gold_accuracy_skips_ties_and_counts_agreement() -> None:
    rewards = torch.tensor([[3.0, 1.0, 2.0]])
    gold = torch.tensor([[1.0, 0.5, 0.5]])  # pair (1, 2) is a tie: left out
    stats = pairwise_stats(rewards, torch.ones(1, 3, dtype=torch.bool), gold)
    assert stats["gold_accuracy"].item() == 1.0
    assert stats["accuracy"].item() == pytest.approx(2 / 3)


# --- heads and sampling --------------------------------------------------------------------
def test_right_padding_leaves_each_rows_states_unchanged(tiny_gpt: GPT) -> None:
    seqs = [np.array([1, 5, 6, 7, 2]), np.array([1, 9, 2])]
    ids, lengths = pad_batch(seqs)
    hidden = tiny_gpt.hidden(ids)
    for row, seq in enumerate(seqs):
        alone = tiny_gpt.hidden(torch.tensor(seq)[None])[0]
        torch.testing.assert_close(hidden[row, : len(seq)], alone)
        torch.testing.assert_close(final_token(hidden, lengths)[row], alone[-1])
    rm = RewardModel(tiny_gpt)
    head = TaskHead(tiny_gpt, n_classes=5)
    assert rm(ids, lengths).shape == (2,)
    assert head(ids, lengths)[0].shape == (2, 5)


def test_generate_matches_sampling_each_prompt_alone(tiny_gpt: GPT) -> None:
    prompts = SyntheticTask().prompts(6, seed=0)
    rollout = generate(tiny_gpt, [p.ids for p in prompts], 5, greedy=True)
    for row, prompt in enumerate(prompts):
        alone = generate(tiny_gpt, [prompt.ids], 5, greedy=True)
        assert np.array_equal(rollout.responses()[row], alone.responses()[0])
    mask = rollout.action_mask()
    assert mask.sum().item() == rollout.response_len.sum().item()
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(tiny_gpt, [prompts[0].ids], 64)


# --- SFT -----------------------------------------------------------------------------------
def test_sft_targets_are_response_tokens_only_and_loss_is_their_mean(tiny_gpt: GPT) -> None:
    task = SyntheticTask(TaskConfig(multi_turn_fraction=1.0))
    demos = task.demonstrations(4, seed=0)
    inputs, targets = collate(demos)
    for row, demo in enumerate(demos):
        n = len(demo.ids)
        kept = targets[row, : n - 1] != IGNORE
        assert torch.equal(kept, torch.from_numpy(demo.loss_mask[1:]))
        assert (targets[row, n - 1 :] == IGNORE).all()  # padding
        assert torch.equal(
            targets[row, : n - 1][kept], torch.from_numpy(demo.ids[1:][demo.loss_mask[1:]])
        )
    logits, _ = tiny_gpt(inputs)
    logp = F.log_softmax(logits, dim=-1)
    picked = [
        -logp[b, t, targets[b, t]].item()
        for b in range(len(demos))
        for t in range(targets.size(1))
        if targets[b, t] != IGNORE
    ]
    assert sft_loss(tiny_gpt, inputs, targets).item() == pytest.approx(np.mean(picked), rel=1e-5)

    # Prompt tokens carry no gradient to the loss: the logits at prompt positions do not matter.
    logits = logits.detach().requires_grad_(True)
    F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1), ignore_index=IGNORE).backward()
    at_prompt = targets == IGNORE
    assert logits.grad[at_prompt].abs().max().item() == 0.0
    assert logits.grad[~at_prompt].abs().max().item() > 0.0


# --- PPO -----------------------------------------------------------------------------------
def _experience(policy: GPT, ref: GPT, kl_coef: float = 0.1):
    torch.manual_seed(1)
    rm = RewardModel(GPT(TINY))
    model = PolicyWithValue(policy)
    prompts = SyntheticTask().prompts(8, seed=0)
    rollout = generate(
        policy, [p.ids for p in prompts], 6, generator=torch.Generator().manual_seed(0)
    )
    exp = make_experience(model, ref, rm, prompts, rollout, kl_coef=kl_coef, gamma=1.0, lam=0.95)
    return model, rm, prompts, exp


def test_kl_term_is_zero_when_policy_equals_reference(tiny_gpt: GPT) -> None:
    ref = copy.deepcopy(tiny_gpt)
    _, rm, prompts, exp = _experience(tiny_gpt, ref)
    assert torch.equal(exp.logprobs, exp.ref_logprobs)
    assert exp.kl.abs().max().item() == 0.0
    rewards = kl_penalised_rewards(
        exp.logprobs, exp.ref_logprobs, exp.mask, exp.scores, exp.mask.sum(-1) + 0, 0.5
    )
    assert rewards.abs().sum().item() == pytest.approx(exp.scores.abs().sum().item(), rel=1e-6)
    stats = evaluate_policy(tiny_gpt, ref, rm, prompts, 6)
    assert stats["kl"] == 0.0

    # A different policy: the per-token penalty is −β·(log π − log π_ref) on response steps.
    other = GPT(TINY)
    _, _, _, moved = _experience(other, ref, kl_coef=0.5)
    assert moved.kl.abs().max().item() > 0.0
    assert evaluate_policy(other, ref, rm, prompts, 6)["kl"] > 0.0


def test_rewards_put_the_score_on_the_last_response_step() -> None:
    logprobs = torch.tensor([[0.0, -1.0, -2.0, -3.0]])
    ref = torch.tensor([[0.0, -1.5, -2.0, -2.0]])
    mask = torch.tensor([[False, True, True, False]])  # tokens 2 and 3 are the response
    rewards = kl_penalised_rewards(logprobs, ref, mask, torch.tensor([5.0]), torch.tensor([4]), 0.1)
    assert rewards[0].tolist() == pytest.approx([0.0, -0.05, 5.0, 0.0])


def test_gae_with_lambda_one_gives_returns_to_go() -> None:
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[False, True, True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert ret[0].tolist() == pytest.approx([0.0, 6.0, 5.0, 3.0, 0.0])
    assert adv[0].tolist() == pytest.approx([0.0, 5.5, 4.5, 2.5, 0.0])
    adv0, _ = gae(rewards, values, mask, gamma=1.0, lam=0.0)  # one-step TD errors
    assert adv0[0].tolist() == pytest.approx([0.0, 1.0, 2.0, 2.5, 0.0])


def test_ptx_term_changes_the_gradient_only_when_gamma_positive(tiny_gpt: GPT) -> None:
    ref = copy.deepcopy(tiny_gpt)
    model, _, _, exp = _experience(tiny_gpt, ref)
    tokens = SyntheticTask().pretraining_tokens(2000, seed=0)
    x = torch.from_numpy(tokens[:256].reshape(8, 32))
    y = torch.from_numpy(tokens[1:257].reshape(8, 32))

    def grads(ptx_coef: float, with_batch: bool) -> torch.Tensor:
        model.zero_grad()
        cfg = PPOConfig(preset="n10k", ptx_coef=ptx_coef)
        loss, stats = ppo_loss(model, exp, cfg, (x, y) if with_batch else None)
        loss.backward()
        assert torch.isfinite(loss)
        return torch.cat([p.grad.flatten() for p in model.policy.parameters()])

    plain = grads(0.0, with_batch=False)
    assert torch.equal(grads(0.0, with_batch=True), plain)  # γ = 0: the batch is ignored
    mixed = grads(1.0, with_batch=True)
    assert not torch.allclose(mixed, plain)
    _, nll_ptx = model.policy(x, y)
    model.zero_grad()
    nll_ptx.backward()
    ptx_only = torch.cat([p.grad.flatten() for p in model.policy.parameters()])
    torch.testing.assert_close(mixed - plain, ptx_only, rtol=1e-4, atol=1e-6)


def test_ppo_stats_at_the_old_policy() -> None:
    torch.manual_seed(0)
    policy = GPT(TINY)
    model, _, _, exp = _experience(policy, copy.deepcopy(policy))
    _, stats = ppo_loss(model, exp, PPOConfig(preset="n10k"))
    # Before any update π = π_old: ratio 1, nothing clipped, approx-KL 0.
    assert stats["approx_kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["clipfrac"].item() == 0.0
    assert stats["entropy"].item() > 0.0


def test_adaptive_kl_controller_moves_beta_towards_target() -> None:
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=1000)
    ctl.update(current_kl=4.0, n_steps=100)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=1000)
    ctl.update(current_kl=1.8, n_steps=100)  # error −0.1
    assert ctl.value == pytest.approx(0.1 * (1 - 0.1 * 0.1))
