"""The worker loop: claim queued trials, smallest cells first, until the sweep is done.

A worker runs in the coordinator's process (``sweep run``, one worker), as a subprocess of it
(``sweep run --workers K``), or on another machine (``sweep worker``). All behave the same:

1. fail the trials of dead workers (heartbeats, or a dead pid on this machine), which
   re-queues them;
2. claim a WAITING trial of the smallest cell that has one and train it;
3. when nothing is queued but trials are still running elsewhere, wait and look again (those
   workers may die and their trials come back); when nothing is queued or running, stop.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from scalelab.sweep import grouping
from scalelab.sweep.storage import heartbeat_features
from scalelab.sweep.trial import TrialLost, TrialOutcome, run_trial, take_cell_trial

if TYPE_CHECKING:
    from scalelab.sweep.study import Sweep


def quiet_training_logs() -> None:
    """One line per trial is the worker's output: no library banners (``quiet_libraries``),
    no line per trial from Optuna and no INFO from MLflow; ``SCALELAB_VERBOSE=1`` keeps all."""
    from scalelab.quiet import quiet_libraries, verbose

    quiet_libraries()
    if not verbose():
        logging.getLogger("optuna").setLevel(logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.ERROR)


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads for this worker: ``threads`` (a coordinator's share of the
    cores, or the user's), else this worker's share of the cores free now."""
    from scalelab.resources import pick_threads, set_torch_threads

    set_torch_threads(pick_threads(1, threads)[0])


def terminate_as_interrupt() -> None:
    """SIGTERM behaves like Ctrl-C: the running trial is re-queued and its run closed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def work(
    sweep: Sweep,
    *,
    on_trial: Callable[[TrialOutcome], None] | None = None,
    poll: float | None = None,
    max_trials: int | None = None,
    flush_every: float = 15.0,
) -> list[TrialOutcome]:
    """Run trials of ``sweep`` until none is queued or running; returns what this worker ran.

    ``poll``: seconds between looks while other workers' trials run [default: a heartbeat
    interval, at most 5 s]. ``max_trials`` stops after that many trials (benchmarks, tests).
    """
    from scalelab.data import prepare
    from scalelab.resources import keep_freed_memory

    keep_freed_memory()  # a worker trains one small model after another
    attrs = sweep.attrs
    # Refuse a corpus whose content differs from the one the sweep started with.
    prepare(
        sweep.spec.corpus,
        sweep.spec.tokenizer,
        cache_dir=sweep.workspace.ensure().cache_dir,
        expect_hash=attrs.get("corpus_hash"),
    )
    parent_run_id = attrs["mlflow_parent_run_id"]
    requeue = _unbounded_retry(sweep.storage.get_heartbeat_stale_trial_callback())
    poll = poll if poll is not None else min(5.0, float(sweep.heartbeat.interval))
    last_stale_check: dict[str, float] = {}
    done: list[TrialOutcome] = []

    while max_trials is None or len(done) < max_trials:
        claimed = False
        busy_elsewhere = False
        for cell in sweep.cells:
            if cell.tuned_at is not None:
                reusing = sweep.reusing_base(cell)
                if reusing is None:  # its base-width cell still searches
                    busy_elsewhere = True
                    continue
                cell = reusing  # the same cell, its parameters now fixed
            study = sweep.study(cell)
            now = time.monotonic()
            if now - last_stale_check.get(cell.key, -1e9) >= sweep.heartbeat.interval:
                sweep.fail_stale(study)
                last_stale_check[cell.key] = now
            if grouping.applies(sweep.spec, cell):
                limit = sweep.spec.group.max_trials
                if max_trials is not None:
                    limit = min(limit, max_trials - len(done))
                outcomes = grouping.run_group(
                    sweep,
                    cell,
                    parent_run_id=parent_run_id,
                    limit=limit,
                    retry=requeue,
                    flush_every=flush_every,
                    on_trial=on_trial,
                )
                done.extend(outcomes)
                if outcomes:
                    claimed = True
                    break  # back to the smallest cell
            trial = take_cell_trial(sweep, cell)
            if trial is None:
                busy_elsewhere = busy_elsewhere or bool(
                    study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                )
                continue
            try:
                outcome = run_trial(
                    spec=sweep.spec,
                    cell=cell,
                    study=study,
                    trial=trial,
                    storage=sweep.storage,
                    workspace=sweep.workspace,
                    client=sweep.client,
                    parent_run_id=parent_run_id,
                    retry=requeue,
                    flush_every=flush_every,
                )
            except TrialLost:
                continue  # its slot is queued again; this or another worker takes it
            done.append(outcome)
            if on_trial is not None:
                on_trial(outcome)
            claimed = True
            break  # back to the smallest cell
        if claimed:
            continue
        if not busy_elsewhere:
            break
        time.sleep(poll)
    return done


def _unbounded_retry(stale_callback: object) -> Callable | None:
    """Re-queue an interrupted trial whatever its retry count: an interrupt is not its fault.
    None when the storage has no heartbeats (nothing re-queues stale trials either)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if stale_callback is None:
        return None
    with heartbeat_features():
        return RetryHeartbeatStaleTrialCallback(max_retry=None)


def print_line(text: str) -> None:
    """One line to stdout, flushed at once (several workers share a terminal or a log)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def worker_prefix() -> str:
    return f"[worker {os.getpid()}]"
