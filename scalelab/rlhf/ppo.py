"""PPO against a reward model with a KL penalty to the SFT policy, and PPO-ptx.

One iteration (Ziegler et al. 2019; Stiennon et al. 2020; InstructGPT, Ouyang et al. 2022):

1. **Rollout**: sample a response to each of ``rollout_batch`` prompts from the policy π.
2. **Rewards**: per response token −β·(log π(a_t|s_t) − log π_SFT(a_t|s_t)), plus the reward
   model's score r(x, y) at the last token. β is fixed or set by the adaptive controller of
   Ziegler et al. (2019): β ← β·(1 + clip((KL − target)/target, −0.2, 0.2)·n/horizon).
3. **Advantages**: GAE(γ, λ) (Schulman et al. 2016) from the value function, whitened.
4. **Update**: ``ppo_epochs`` passes over the rollouts in minibatches, minimising the clipped
   surrogate (Schulman et al. 2017) max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = π/π_old, a
   clipped value loss ½·max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²), and for PPO-ptx
   (InstructGPT eq. 2) the pre-training term −γ·E_{x∼D_pretrain}[log π(x)] on a fresh batch of
   pre-training text per minibatch, which keeps the policy's language model from drifting.

Logged per iteration (``train_`` prefix): RM reward, gold reward, KL to the SFT policy
(sum over response tokens of log π − log π_SFT, mean over rollouts), the non-score reward,
approx-KL between successive policies (((ρ − 1) − log ρ), Schulman's k3 estimator), the clip
fractions of the policy and the value, the entropy, the losses and β. Evaluations (``eval_``
prefix) sample one response per held-out prompt with a fixed seed and report gold reward, RM
reward and KL(π‖π_SFT) summed over the sampled responses' steps (the exact per-step KL over the
vocabulary, an unbiased and lower-variance estimate of the sequence KL).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from scalelab.model import GPT
from scalelab.rlhf.config import PPOConfig
from scalelab.rlhf.generate import Rollout, generate
from scalelab.rlhf.heads import PolicyWithValue, RewardModel, token_logprobs
from scalelab.rlhf.task import Prompt, gold_reward
from scalelab.training.module import ScheduledModule, check_finite


# --- pieces -------------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is True."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` shifted and scaled to mean 0, variance 1 over the masked entries (0 elsewhere)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of ``logits`` over the last axis."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (Schulman et al. 2016) over (B, T) steps.

    ``mask`` marks each row's (contiguous) response steps; the step after the last one is
    terminal (value 0). Advantages and returns are 0 outside the mask.
    """
    mask_f = mask.to(rewards.dtype)
    values = values * mask_f
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    steps = rewards.size(1)
    for t in reversed(range(steps)):
        next_mask = mask_f[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_mask if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running * mask_f[:, t]
    return advantages, (advantages + values) * mask_f


class FixedKLController:
    """A constant β."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """No change."""


class AdaptiveKLController:
    """Ziegler et al. (2019, §2.2): β_{t+1} = β_t·(1 + K_β·e_t), e_t = clip((KL_t − target) /
    target, −0.2, 0.2), with K_β = n_steps / horizon (n_steps rollouts in the update)."""

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip((current_kl - self.target) / self.target, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon


def kl_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.kl_control == "adaptive":
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


@dataclass(frozen=True)
class Experience:
    """One rollout batch with everything the PPO update needs; tensors over (B, T−1) steps
    are aligned with ``token_logprobs``: step t emits token t+1."""

    ids: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor
    gold: torch.Tensor
    finished: torch.Tensor

    def __getitem__(self, index: torch.Tensor) -> Experience:
        return Experience(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def kl(self) -> torch.Tensor:
        """Per-rollout KL(π‖π_SFT) estimate: Σ_t (log π − log π_SFT) over response steps."""
        return ((self.logprobs - self.ref_logprobs) * self.mask).sum(-1)


def kl_penalised_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    lengths: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Per-step rewards −β·(log π − log π_SFT) on response steps, plus each rollout's score at
    its last step (the one that emits token ``lengths − 1``)."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, lengths - 2] += scores
    return rewards


@torch.no_grad()
def make_experience(
    model: PolicyWithValue,
    ref: GPT,
    reward_model: RewardModel,
    prompts: Sequence[Prompt],
    rollout: Rollout,
    *,
    kl_coef: float,
    gamma: float,
    lam: float,
    temperature: float = 1.0,
    whiten: bool = True,
) -> Experience:
    """Score a rollout: log-probabilities under π and π_SFT, values, RM scores, gold rewards,
    KL-penalised rewards and GAE advantages."""
    ids, mask = rollout.ids, rollout.action_mask()
    logits, values = model(ids)
    logprobs = token_logprobs(logits / temperature, ids)
    ref_logprobs = token_logprobs(ref(ids)[0] / temperature, ids)
    scores = reward_model(ids, rollout.lengths).float()
    gold = torch.tensor(
        [gold_reward(p, r) for p, r in zip(prompts, rollout.responses(), strict=True)],
        device=ids.device,
    )
    values = values[:, :-1].float() * mask
    rewards = kl_penalised_rewards(logprobs, ref_logprobs, mask, scores, rollout.lengths, kl_coef)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return Experience(
        ids,
        mask,
        logprobs,
        ref_logprobs,
        values,
        advantages,
        returns,
        scores,
        gold,
        rollout.finished(),
    )


def ppo_loss(
    model: PolicyWithValue,
    batch: Experience,
    cfg: PPOConfig,
    ptx: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO-ptx objective on a minibatch: clipped surrogate + vf_coef·clipped value loss
    − entropy_coef·entropy + ptx_coef·(−mean log π on the pre-training batch ``ptx``)."""
    logits, values = model(batch.ids)
    step_logits = logits[:, :-1] / cfg.temperature
    logprobs = token_logprobs(logits / cfg.temperature, batch.ids)
    values = values[:, :-1].float()
    mask = batch.mask

    log_ratio = (logprobs - batch.logprobs) * mask
    ratio = torch.exp(log_ratio)
    pg_losses = torch.max(
        -batch.advantages * ratio,
        -batch.advantages * ratio.clamp(1.0 - cfg.clip_range, 1.0 + cfg.clip_range),
    )
    pg_loss = masked_mean(pg_losses, mask)

    clipped = batch.values + (values - batch.values).clamp(
        -cfg.clip_range_value, cfg.clip_range_value
    )
    vf_losses = torch.max((values - batch.returns) ** 2, (clipped - batch.returns) ** 2)
    vf_loss = 0.5 * masked_mean(vf_losses, mask)
    entropy = masked_mean(entropy_from_logits(step_logits), mask)

    loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * entropy
    ptx_loss = torch.zeros((), device=loss.device)
    if ptx is not None and cfg.ptx_coef > 0:
        _, ptx_loss = model.policy(*ptx)  # mean −log π(x) per token
        loss = loss + cfg.ptx_coef * ptx_loss

    with torch.no_grad():
        stats = {
            "pg_loss": pg_loss.detach(),
            "vf_loss": vf_loss.detach(),
            "ptx_loss": ptx_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > cfg.clip_range).float(), mask),
            "vf_clipfrac": masked_mean(
                ((values - batch.values).abs() > cfg.clip_range_value).float(), mask
            ),
        }
    return loss, stats


@torch.no_grad()
def evaluate_policy(
    policy: GPT,
    ref: GPT,
    reward_model: RewardModel,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Gold reward, RM reward, KL(π‖π_ref) and finished share of one sampled response per
    prompt (mean over prompts). The KL is Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t)) over the steps of
    the sampled response: its expectation is the sequence-level KL, and every term is ≥ 0."""
    generator = torch.Generator().manual_seed(seed)
    gold, proxy, kl, finished = [], [], [], []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        rollout = generate(
            policy,
            [p.ids for p in chunk],
            max_new_tokens,
            temperature=temperature,
            generator=generator,
        )
        ids, mask = rollout.ids, rollout.action_mask()
        logp = F.log_softmax(policy(ids)[0][:, :-1].float() / temperature, dim=-1)
        ref_logp = F.log_softmax(ref(ids)[0][:, :-1].float() / temperature, dim=-1)
        step_kl = (logp.exp() * (logp - ref_logp)).sum(-1)
        kl += (step_kl * mask).sum(-1).tolist()
        proxy += reward_model(ids, rollout.lengths).tolist()
        gold += [gold_reward(p, r) for p, r in zip(chunk, rollout.responses(), strict=True)]
        finished += rollout.finished().tolist()
    return {
        "gold_reward": float(np.mean(gold)),
        "reward": float(np.mean(proxy)),
        "kl": float(np.mean(kl)),
        "finished": float(np.mean(finished)),
    }


def ptx_batches(
    tokens: np.ndarray, context: int, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) windows of pre-training text (``scalelab.data.RandomWindows``)."""
    from scalelab.data import RandomWindows

    return iter(RandomWindows(tokens, context, batch_size, seed))


# --- the Lightning module -----------------------------------------------------------------
class PPOModule(ScheduledModule):
    """PPO (and PPO-ptx) with manual optimisation: one ``training_step`` per iteration."""

    cfg: PPOConfig

    def __init__(
        self,
        cfg: PPOConfig,
        model: PolicyWithValue,
        ref: GPT,
        reward_model: RewardModel,
        train_prompts: Sequence[Prompt],
        eval_prompts: Sequence[Prompt],
        ptx_tokens: np.ndarray | None = None,
    ) -> None:
        minibatches = math.ceil(cfg.rollout_batch / cfg.minibatch_size)
        super().__init__(cfg, cfg.steps * cfg.ppo_epochs * minibatches)
        self.automatic_optimization = False
        self.model, self.ref, self.reward_model = model, ref, reward_model
        for frozen in (self.ref, self.reward_model):
            frozen.requires_grad_(False)
            frozen.eval()
        self.train_prompts, self.eval_prompts = list(train_prompts), list(eval_prompts)
        self.kl_ctl = kl_controller(cfg)
        self.max_new_tokens = cfg.answer_budget()
        self.ptx_tokens = ptx_tokens
        self.history: list[dict[str, float]] = []
        self._rng = np.random.default_rng([cfg.seed, 7])
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._ptx: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # One item per iteration; the rollout itself is sampled in training_step.
        return torch.utils.data.DataLoader(range(self.cfg.steps), batch_size=None)

    def on_train_start(self) -> None:
        self.ref.eval()
        self.reward_model.eval()
        if self.cfg.ptx_coef > 0:
            if self.ptx_tokens is None:
                raise ValueError("ptx_coef > 0 needs pre-training tokens")
            self._ptx = ptx_batches(
                self.ptx_tokens, self.cfg.context, self.cfg.ptx_batch_size, self.cfg.seed
            )
        self._evaluate(0)

    def training_step(self, iteration: int, _: int) -> None:
        beta = self.kl_ctl.value
        exp = self._experience(beta)
        means = self._update(exp, iteration)
        kl = float(exp.kl.mean())
        self.kl_ctl.update(kl, self.cfg.rollout_batch)
        done = iteration + 1
        self._log(self._iteration_metrics(exp, beta, means), done)
        if done % self.cfg.evaluations(self.cfg.steps) == 0 or done == self.cfg.steps:
            self._evaluate(done)

    def _experience(self, beta: float) -> Experience:
        """Sample a rollout batch from the policy and score it (``make_experience``)."""
        cfg = self.cfg
        picks = self._rng.choice(len(self.train_prompts), size=cfg.rollout_batch)
        prompts = [self.train_prompts[i] for i in picks]
        rollout = generate(
            self.model.policy,
            [p.ids for p in prompts],
            self.max_new_tokens,
            temperature=cfg.temperature,
            generator=self._gen,
        )
        rollout = Rollout(
            *(t.to(self.device) for t in (rollout.ids, rollout.prompt_len, rollout.response_len))
        )
        self.model.eval()  # old log-probabilities and values without dropout noise
        exp = make_experience(
            self.model,
            self.ref,
            self.reward_model,
            prompts,
            rollout,
            kl_coef=beta,
            gamma=cfg.gamma,
            lam=cfg.lam,
            temperature=cfg.temperature,
            whiten=cfg.whiten_advantages,
        )
        self.model.train()
        return exp

    def _update(self, exp: Experience, iteration: int) -> dict[str, float]:
        """``ppo_epochs`` passes over ``exp`` in shuffled minibatches; the mean statistics."""
        cfg = self.cfg
        sums: dict[str, float] = {}
        n_updates = 0
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.rollout_batch, generator=self._gen)
            for index in order.split(cfg.minibatch_size):
                stats = self._minibatch_step(exp[index.to(self.device)], iteration)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                n_updates += 1
        return {key: value / n_updates for key, value in sums.items()}

    def _minibatch_step(self, batch: Experience, iteration: int) -> dict[str, torch.Tensor]:
        """One optimizer and scheduler step on the PPO(-ptx) loss of ``batch``."""
        ptx = None
        if self._ptx is not None:
            ptx = tuple(t.to(self.device) for t in next(self._ptx))
        loss, stats = ppo_loss(self.model, batch, self.cfg, ptx)
        check_finite(loss, iteration, "PPO loss")
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.cfg.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        self.lr_schedulers().step()
        return stats

    def _iteration_metrics(
        self, exp: Experience, beta: float, means: dict[str, float]
    ) -> dict[str, float]:
        kl = exp.kl
        return {
            **{f"train_{k}": v for k, v in means.items()},
            "train_reward": float(exp.scores.mean()),
            "train_gold_reward": float(exp.gold.mean()),
            "train_kl": float(kl.mean()),
            "train_non_score_reward": float((-beta * kl).mean()),
            "train_kl_coef": beta,
            "train_response_len": float(exp.mask.sum(-1).float().mean()),
            "train_finished": float(exp.finished.float().mean()),
            "lr": float(self.lr_schedulers().get_last_lr()[0]),
        }

    def _evaluate(self, iteration: int) -> dict[str, float]:
        stats = evaluate_policy(
            self.model.policy,
            self.ref,
            self.reward_model,
            self.eval_prompts,
            self.max_new_tokens,
            seed=self.cfg.seed + 1,
            temperature=self.cfg.temperature,
        )
        metrics = {f"eval_{k}": v for k, v in stats.items()}
        self.history.append({"iteration": iteration, **stats})
        self._log(metrics, iteration)
        return metrics

    def _log(self, metrics: dict[str, float], iteration: int) -> None:
        # The MLflow step is the PPO iteration (Lightning's global_step counts minibatch
        # updates); callback_metrics still get every value, for callbacks.
        for key, value in metrics.items():
            self.trainer.callback_metrics[key] = torch.tensor(value)
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=iteration)


def policy_with_value(cfg: PPOConfig, policy: GPT, reward_model: RewardModel) -> PolicyWithValue:
    """The trainable policy and value function: a value network copied from the reward model
    (``value_model="separate"``), or a zero-initialised head on the policy trunk."""
    import copy

    if cfg.value_model == "shared":
        return PolicyWithValue(policy)
    head = copy.deepcopy(reward_model.head)
    with torch.no_grad():
        head.bias -= reward_model.bias  # the value starts as the normalised reward
    return PolicyWithValue(policy, copy.deepcopy(reward_model.trunk), head)


def describe(history: Sequence[dict[str, Any]]) -> str:
    """One line per evaluation: iteration, KL, gold and RM reward."""
    return "\n".join(
        f"iter {h['iteration']:>4}  KL {h['kl']:.3f}  gold {h['gold_reward']:.3f}  "
        f"reward {h['reward']:.3f}"
        for h in history
    )
