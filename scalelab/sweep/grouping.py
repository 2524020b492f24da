"""Trials of a sweep trained together: which ones fit a group, claiming them, and telling
Optuna about each one on its own.

A worker that reaches a cell whose models are small (``group.max_params``) claims up to
``group.max_trials`` queued trials of every cell with the same model shape (the cell's other
trials, and cells of other budgets or seeds), samples each one's parameters the moment it is
claimed (with its own seeded sampler, as ``run_trial``), and trains those whose configs agree
(``grouped_run.group_key``: e.g. one sampled batch size) as one group. Each trial keeps
Optuna's semantics: it is claimed, reported to its cell's pruner, pruned, and told alone, the
moment it ends; its heartbeat runs from its claim until it is told, so a killed worker's
untold trials all go stale and are retried, and its told ones are not. Where grouping does not
apply (RLHF stages, larger models, a GPU, ``compile``, dropout, several devices) the worker
trains one trial at a time.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from scalelab.sweep.spec import Cell, SweepSpec
from scalelab.sweep.trial import (
    Heartbeat,
    TrialOutcome,
    _open_run,
    boot_id,
    pretrain_config,
    record_failure,
    requeue_interrupted,
    suggest,
    take_cell_trial,
    tell_outcome,
    worker_name,
)

if TYPE_CHECKING:
    from scalelab.sweep.study import Sweep
    from scalelab.train import TrainConfig, TrainResult


def applies(spec: SweepSpec, cell: Cell) -> bool:
    """Whether ``cell``'s trials train in groups under ``spec``."""
    from scalelab.training.grouped_run import ungroupable

    if not spec.group.enabled or spec.stage != "pretrain":
        return False
    if cell.n_params > spec.group.max_params:
        return False
    return ungroupable(pretrain_config(spec, cell, 0, {})) is None


def _shapes(spec: SweepSpec) -> dict[str, tuple[int, int, int]]:
    return {size.label: size.shape for size in spec.resolved_sizes()}


@dataclass
class Claimed:
    """One claimed trial, its sampled parameters and, once opened, its MLflow run."""

    cell: Cell
    study: optuna.Study
    trial: optuna.Trial
    params: dict[str, Any]
    cfg: TrainConfig
    beat: Heartbeat
    started: float = field(default_factory=time.perf_counter)
    run_id: str = ""
    told: bool = False


def claim(sweep: Sweep, first: Cell, limit: int, beats: contextlib.ExitStack) -> list[Claimed]:
    """Claim up to ``limit`` queued trials of the cells shaped as ``first`` (``first``'s
    first), each with its parameters sampled and its heartbeat started in ``beats``."""
    shapes = _shapes(sweep.spec)
    cells = [first] + [
        c
        for c in sweep.cells
        if c.key != first.key and shapes[c.size] == shapes[first.size] and applies(sweep.spec, c)
    ]
    out: list[Claimed] = []
    for cell in cells:
        study = sweep.study(cell)
        while len(out) < limit:
            trial = take_cell_trial(sweep, cell)
            if trial is None:
                break
            try:
                trial.set_user_attr("worker", worker_name())
                trial.set_user_attr("worker_boot", boot_id())
                # Now, while the study's sampler is this trial's: as run_trial samples it.
                params = suggest(trial, sweep.spec, cell)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # given up as stale between claim and use; its slot is queued again
            beat = beats.enter_context(Heartbeat(sweep.storage, trial._trial_id))
            cfg = pretrain_config(sweep.spec, cell, trial.number, params)
            out.append(Claimed(cell, study, trial, params, cfg, beat))
    return out


def run_group(
    sweep: Sweep,
    first: Cell,
    *,
    parent_run_id: str,
    limit: int,
    retry: Any = None,
    flush_every: float = 15.0,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> list[TrialOutcome]:
    """Claim trials shaped as ``first``'s and train them in groups; the outcome of each, in
    the order they ended ([] when none was queued)."""
    with contextlib.ExitStack() as beats:
        claimed = claim(sweep, first, max(1, limit), beats)
        outcomes: list[TrialOutcome] = []
        try:
            for m in claimed:
                m.run_id = _open_run(
                    sweep.spec,
                    m.cell,
                    m.study,
                    m.trial,
                    sweep.client,
                    sweep.workspace,
                    parent_run_id,
                )
            for members in _partition(claimed, sweep):
                _train(sweep, members, flush_every, outcomes, on_trial)
        except (KeyboardInterrupt, SystemExit):
            for m in claimed:  # each untold trial queued again at once, as run_trial does
                if not m.told and m.run_id:
                    requeue_interrupted(m.study, m.trial, sweep.client, m.run_id, retry)
            raise
    return outcomes


def _partition(claimed: list[Claimed], sweep: Sweep) -> list[list[Claimed]]:
    """The claimed trials split into groups of equal ``group_key`` (in claim order)."""
    from scalelab.data import prepare
    from scalelab.training.grouped_run import group_key

    if not claimed:
        return []
    vocab = prepare(
        sweep.spec.corpus, sweep.spec.tokenizer, cache_dir=sweep.workspace.cache_dir
    ).vocab_size
    groups: dict[Any, list[Claimed]] = {}
    for member in claimed:
        groups.setdefault(group_key(member.cfg, vocab), []).append(member)
    return list(groups.values())


def _train(
    sweep: Sweep,
    members: list[Claimed],
    flush_every: float,
    outcomes: list[TrialOutcome],
    on_trial: Callable[[TrialOutcome], None] | None,
) -> None:
    """Train one group; each member is told the moment it ends."""
    from scalelab.training.grouped_run import MemberHooks, train_group

    client = sweep.client

    def hooks(m: Claimed) -> MemberHooks:
        def on_validation(tokens_seen: int, step: int, loss: float, final: bool) -> None:
            # As callbacks.OptunaPruning: keyed by tokens seen, the last one never pruned.
            m.trial.report(loss, tokens_seen)
            if not final and m.trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at tokens_seen {tokens_seen:,} (step {step}): val/loss "
                    f"{loss:.4f} is worse than the pruner allows"
                )

        def on_end(result: TrainResult | None, error: BaseException | None) -> None:
            _tell(m, client, result, error, outcomes, on_trial, sweep.spec)

        return MemberHooks(on_validation=on_validation, on_end=on_end)

    try:
        train_group(
            [m.cfg for m in members],
            sweep.workspace,
            run_ids=[m.run_id for m in members],
            hooks=[hooks(m) for m in members],
            flush_every=flush_every,
        )
    except Exception as err:  # the group's own failure (e.g. refused resources): every member's
        for m in members:
            if not m.told:
                _tell(m, client, None, err, outcomes, on_trial, sweep.spec)


def _tell(
    m: Claimed,
    client: Any,
    result: TrainResult | None,
    error: BaseException | None,
    outcomes: list[TrialOutcome],
    on_trial: Callable[[TrialOutcome], None] | None,
    spec: SweepSpec,
) -> None:
    loss, state, reason = math.nan, "COMPLETE", ""
    if result is not None and math.isfinite(result.loss):
        loss = result.loss
    else:
        from scalelab.train import TrainingDiverged

        error = error or TrainingDiverged(f"final validation loss is {result and result.loss}")
        state, reason = record_failure(error, spec, m.trial, client, m.run_id)
    tell_outcome(m.study, m.trial, client, m.run_id, state, loss)
    m.told = True
    m.beat.__exit__()  # told: no heartbeat keeps it alive any more
    outcome = TrialOutcome(
        cell=m.cell.key,
        number=m.trial.number,
        state=state,
        loss=loss,
        params=m.params,
        run_id=m.run_id,
        seconds=time.perf_counter() - m.started,
        train_seconds=result.wall_time if result is not None else 0.0,
        reason=reason,
    )
    outcomes.append(outcome)
    if on_trial is not None:
        on_trial(outcome)
