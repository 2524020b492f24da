"""``GroupTrainer``: several runs of one model shape trained together as one stacked model.

Each member keeps what makes it its own run: its initial weights (its seed), its data stream,
its peak learning rate, schedule, weight decay, betas and clipping threshold, its number of
steps, its validations and its outcome. Every step trains the members still running on their
own batches through one ``StackedGPT``; a member that finishes, is pruned or diverges leaves
the stack, and the others go on. The update is that of ``LanguageModel`` under Lightning
(``optim.adamw_with_schedule``: AdamW with decay on matrices only, the ``lr_factor`` schedule
stepped per optimizer step, the gradient norm clipped per run), written on stacked tensors;
a test compares the losses of a group, step by step, with the same runs trained one by one.

A plain loop, not a Lightning Trainer: at these sizes the per-step framework work is what the
group amortises. CPU and fp32 only, one process (callers fall back to one-at-a-time runs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from scalelab.model import GPT, GPTConfig
from scalelab.training.schedule import Schedule, TrainingDiverged, lr_factor
from scalelab.training.stacked import StackedGPT

EPS = 1e-8  # torch.optim.AdamW's default, as every run uses
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ adds it to the norm
VAL_BATCH = 32  # validation windows per forward, as LanguageModel's val_dataloader


class MemberConfig(Schedule, Protocol):
    """The fields of a run's config a group member reads (``TrainConfig`` has them all)."""

    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    seed: int


class BatchSource(Protocol):
    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class Member:
    """One run of the group. ``on_step(step, loss, lr)`` and ``on_validation(step, loss)``
    are called after the member's optimizer step ``step`` (1-based) and after each of its
    validations; an exception they raise ends this member only (``outcome.error``).
    ``on_end(outcome)`` is called the moment the member leaves the group, so its result can
    be recorded while the others still train."""

    cfg: MemberConfig
    steps: int
    val_every: int
    data: BatchSource
    on_step: Callable[[int, float, float], None] | None = None
    on_validation: Callable[[int, float], None] | None = None
    on_end: Callable[[MemberOutcome], None] | None = None
    outcome: MemberOutcome = field(default_factory=lambda: MemberOutcome())


@dataclass
class MemberOutcome:
    """How a member ended: its last validation loss, or the error that stopped it."""

    loss: float = math.nan
    steps_done: int = 0
    error: BaseException | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)


class GroupTrainer:
    """Train ``members`` (one ``GPTConfig``) together; ``run()`` returns when all have ended.

    ``val_windows`` (n, T + 1) are every member's fixed validation windows. With
    ``keep_weights`` each finished member's weights are kept in ``outcome.state_dict``.
    """

    def __init__(
        self,
        model_cfg: GPTConfig,
        members: Sequence[Member],
        val_windows: torch.Tensor,
        keep_weights: bool = False,
    ) -> None:
        if not members:
            raise ValueError("a group needs at least one member")
        self.model_cfg = model_cfg
        self.members = list(members)
        self.val_windows = val_windows
        self.keep_weights = keep_weights
        models = []
        for member in self.members:
            torch.manual_seed(member.cfg.seed)  # as seed_everything before GPT(...) in train()
            models.append(GPT(model_cfg))
        self.model = StackedGPT.from_models(models)
        self.active = list(range(len(self.members)))  # member index of each stack row
        self.step_of = [0] * len(self.members)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.model.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.model.params.items()}

    # --- Per-member hyper-parameters as (K, 1, ...) tensors --------------------------------

    def _column(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    def _rows(self, column: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return column.view(-1, *([1] * (like.dim() - 1)))

    # --- One step ---------------------------------------------------------------------------

    def _batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(
            *(self.members[i].data.batch(self.step_of[i]) for i in self.active), strict=True
        )
        return torch.stack(xs), torch.stack(ys)

    def _clip(self) -> None:
        params = self.model.params.values()
        sq = sum(p.grad.pow(2).flatten(1).sum(1) for p in params)
        norm = torch.sqrt(sq)
        limits = self._column([self.members[i].cfg.grad_clip for i in self.active])
        # grad_clip 0 means no clipping (Lightning gets None): a factor of exactly 1.
        factor = torch.where(
            limits > 0, (limits / (norm + CLIP_EPS)).clamp(max=1.0), torch.ones_like(norm)
        )
        for p in params:
            p.grad.mul_(self._rows(factor, p.grad))

    def _adamw(self) -> list[float]:
        """One AdamW step of every active member (torch.optim.AdamW's update); returns the
        learning rates used."""
        cfgs = [self.members[i].cfg for i in self.active]
        steps = [self.step_of[i] + 1 for i in self.active]  # AdamW's 1-based step count
        lrs = [
            c.lr * lr_factor(self.step_of[i], self.members[i].steps, c)
            for c, i in zip(cfgs, self.active, strict=True)
        ]
        b1 = self._column([c.beta1 for c in cfgs])
        b2 = self._column([c.beta2 for c in cfgs])
        decay = self._column([1 - r * c.weight_decay for r, c in zip(lrs, cfgs, strict=True)])
        step_size = self._column(
            [r / (1 - c.beta1**t) for r, c, t in zip(lrs, cfgs, steps, strict=True)]
        )
        bias2_sqrt = self._column(
            [math.sqrt(1 - c.beta2**t) for c, t in zip(cfgs, steps, strict=True)]
        )
        with torch.no_grad():
            for name, p in self.model.params.items():
                g, m, v = p.grad, self.exp_avg[name], self.exp_avg_sq[name]
                if p.dim() >= 3:  # a matrix of each member: decayed (optim.param_groups)
                    p.mul_(self._rows(decay, p))
                m.lerp_(g, 1 - self._rows(b1, p))
                v.mul_(self._rows(b2, p)).addcmul_(g, g * (1 - self._rows(b2, p)))
                denom = (v.sqrt() / self._rows(bias2_sqrt, p)).add_(EPS)
                p.sub_(self._rows(step_size, p) * m / denom)
                p.grad = None
        return lrs

    def _validate(self, rows: list[int]) -> list[float]:
        """Validation losses of the stack rows ``rows``: mean over windows, as Lightning's
        batch-size-weighted mean of per-batch means."""
        index = torch.tensor(rows)
        sub = StackedGPT(
            self.model_cfg, {n: p.detach()[index] for n, p in self.model.params.items()}
        )
        total = torch.zeros(len(rows))
        with torch.no_grad():
            for chunk in self.val_windows.split(VAL_BATCH):
                x = chunk[:, :-1].expand(len(rows), -1, -1)
                y = chunk[:, 1:].expand(len(rows), -1, -1)
                total += sub.losses(x, y) * len(chunk)
        return (total / len(self.val_windows)).tolist()

    # --- Membership -------------------------------------------------------------------------

    def _drop(self, rows: list[int]) -> None:
        """Take stack rows ``rows`` out of the stack (their members have ended)."""
        keep = torch.tensor([r for r in range(len(self.active)) if r not in rows], dtype=torch.long)
        for store in (self.exp_avg, self.exp_avg_sq):
            for name in store:
                store[name] = store[name][keep]
        self.model.params = {
            n: p.detach()[keep].requires_grad_(True) for n, p in self.model.params.items()
        }
        self.active = [m for r, m in enumerate(self.active) if r not in rows]

    def _end(self, row: int, error: BaseException | None) -> None:
        member = self.members[self.active[row]]
        member.outcome.error = error
        if error is None and self.keep_weights:
            member.outcome.state_dict = self.model.state_dict(row)
        if member.on_end is not None:
            member.on_end(member.outcome)

    # --- The loop ---------------------------------------------------------------------------

    def run(self) -> float:
        """Train until every member has ended; returns the wall time in seconds."""
        started = time.perf_counter()
        while self.active:
            x, y = self._batches()
            losses = self.model.losses(x, y)
            losses.sum().backward()  # each member's gradient is that of its own loss
            values = losses.tolist()
            clip = any(self.members[i].cfg.grad_clip > 0 for i in self.active)
            if clip:
                self._clip()
            lrs = self._adamw()
            ended: dict[int, BaseException | None] = {}
            validate = []
            for row, i in enumerate(self.active):
                member, loss = self.members[i], values[row]
                self.step_of[i] += 1
                step = self.step_of[i]
                member.outcome.steps_done = step
                member.outcome.train_losses.append(loss)
                if not math.isfinite(loss):
                    ended[row] = TrainingDiverged(f"training loss became {loss} at step {step - 1}")
                    continue
                if member.on_step is not None:
                    try:
                        member.on_step(step, loss, lrs[row])
                    except Exception as err:  # the member's own failure, not the group's
                        ended[row] = err
                        continue
                if step % member.val_every == 0 or step == member.steps:
                    validate.append(row)
            if validate:
                for row, loss in zip(validate, self._validate(validate), strict=True):
                    member = self.members[self.active[row]]
                    step = self.step_of[self.active[row]]
                    member.outcome.loss = loss
                    member.outcome.val_losses.append((step, loss))
                    try:
                        if not math.isfinite(loss):
                            raise TrainingDiverged(f"validation loss became {loss} at step {step}")
                        if member.on_validation is not None:
                            member.on_validation(step, loss)
                    except Exception as err:
                        ended[row] = err
                        continue
                    if step == member.steps:
                        ended[row] = None
            for row, error in ended.items():
                self._end(row, error)
            if ended:
                self._drop(sorted(ended))
        return time.perf_counter() - started
