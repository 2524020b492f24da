"""``sweep run``: create or resume a sweep, run its workers, show progress, fit at the end.

With one worker the trials run in this process. With ``K`` > 1 each worker is a subprocess
(``python -m scalelab sweep worker``), so a crash in one does not take down the others; the
cores are split between them. With ``K`` = 0 no trial runs here: the coordinator watches
workers started elsewhere (``scalelab sweep worker``) and fits when they are done.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scalelab.resources import pick_threads, set_torch_threads
from scalelab.sweep.report import RESULT_COLUMNS, fit_and_log, text_table
from scalelab.sweep.spec import SweepSpec
from scalelab.sweep.storage import STORAGE_ENV, redact
from scalelab.sweep.study import Progress, Sweep
from scalelab.sweep.trial import TrialOutcome
from scalelab.sweep.worker import quiet_training_logs, work
from scalelab.training.progress import LINES_ENV, duration
from scalelab.workspace import Workspace

POLL_SECONDS = 2.0
MAX_ROUNDS = 5  # re-launches after workers exit with slots re-queued (lost, then recovered)


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the coordinator dies, so a killed sweep leaves no
    orphan training in the background (its trials are then recovered on resume)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn_workers(sweep: Sweep, k: int, threads: int) -> list[subprocess.Popen]:
    """``k`` worker subprocesses joining ``sweep`` (they find its spec in the storage).

    The storage URL (which may hold a database password) and the tracking URI travel in the
    environment, readable only by this user, never on the command line every user sees in ``ps``.
    """
    command = [
        sys.executable,
        "-m",
        "scalelab",
        "sweep",
        "worker",
        sweep.name,
        "--workspace",
        str(sweep.workspace.root),
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["MLFLOW_TRACKING_URI"] = sweep.workspace.tracking_uri
    env[STORAGE_ENV] = sweep.url
    env[LINES_ENV] = "1"  # the workers share this terminal: progress as lines, not redraws
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return [subprocess.Popen(command, env=env, preexec_fn=preexec) for _ in range(k)]


@dataclass
class RunSummary:
    complete: bool
    trials_here: int
    seconds: float
    counts: dict[str, int]


class SweepClock:
    """The sweep's remaining time, from how fast this run has done its work so far.

    Work is trial slots weighted by their cell's compute C (6·N·D), so a finished small cell
    does not promise that the large ones are as quick; slots count alike when a cell has no C.
    """

    def __init__(self, progress: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.done_at_start = work_done(progress)[0]

    def eta(self, progress: Progress) -> str:
        """`` | sweep ETA ~12m30s``, or nothing before this run has finished a trial."""
        done, total = work_done(progress)
        ran = done - self.done_at_start
        if ran <= 0 or done >= total:
            return ""
        seconds = (self.clock() - self.started) / ran * (total - done)
        return f" | sweep ETA ~{duration(seconds)}"


def work_done(progress: Progress) -> tuple[float, float]:
    """(work of the done slots, work of all slots), each slot weighted by its cell's C."""
    weights = [status.cell.compute for status in progress.cells]
    if not all(w > 0 and math.isfinite(w) for w in weights):
        weights = [1.0] * len(weights)
    done = total = 0.0
    for weight, status in zip(weights, progress.cells, strict=True):
        done += weight * sum(state == "done" for state in status.slots.values())
        total += weight * len(status.slots)
    return done, total


def _progress_printer(
    sweep: Sweep, echo: Callable[[str], None], clock: SweepClock
) -> Callable[[], None]:
    last = {"line": ""}

    def show() -> None:
        progress = sweep.progress()
        line = progress.line()
        if line != last["line"]:
            echo(line + clock.eta(progress))
            last["line"] = line

    return show


def open_sweep(
    spec: str | os.PathLike[str] | SweepSpec,
    workspace: Workspace,
    *,
    workers: int = 1,
    storage: str | None = None,
    name: str | None = None,
) -> Sweep:
    """The sweep of ``spec`` (a path or a parsed spec), created or checked against the stored
    one, its corpus prepared: everything ``sweep run`` does before training.

    Bad input raises ``ValueError`` (a malformed spec, a storage that cannot serve
    ``workers`` processes) or ``SweepConflict`` (a spec that differs from the stored sweep).
    """
    from scalelab.data import prepare
    from scalelab.sweep.preflight import preflight
    from scalelab.sweep.spec import load_spec
    from scalelab.sweep.storage import default_storage_url, storage_kind

    if not isinstance(spec, SweepSpec):
        spec = load_spec(Path(spec), name=name)
    url = storage or spec.storage or default_storage_url(workspace)
    if storage_kind(url) == "sqlite" and workers > 1:
        raise ValueError(
            f"SQLite storage ({url}) serves one worker process; for --workers {workers} "
            "use the default journal storage or a PostgreSQL URL"
        )
    workspace.ensure()
    data = prepare(spec.corpus, spec.tokenizer, cache_dir=workspace.cache_dir)
    preflight(spec, data)  # before anything is stored: a refused spec leaves no sweep behind
    sweep = Sweep(spec, url, workspace)
    sweep.ensure(data.corpus_hash)
    return sweep


def run_sweep(
    sweep: Sweep,
    corpus_hash: str | None = None,
    *,
    workers: int = 1,
    echo: Callable[[str], None] = print,
    flush_every: float = 15.0,
    threads: int | None = None,
) -> RunSummary:
    """Train ``sweep`` until every cell is done, then print the results and the fit.

    With ``corpus_hash`` the sweep is created or resumed first (``Sweep.ensure``); without,
    the caller has done it. ``threads``: torch threads per worker [default: its share of the
    free cores, see ``resources.pick_threads``].
    """
    started = time.perf_counter()
    if corpus_hash is not None:
        sweep.ensure(corpus_hash)
    sweep.recover()
    progress = sweep.progress()
    attrs = sweep.attrs
    echo(
        f"sweep {sweep.name}: {progress.total} cells × {sweep.spec.search.trials} trials "
        f"({progress.done} cells done) | storage {redact(sweep.url)} | MLflow experiment "
        f"{sweep.spec.experiment_name}, parent run {attrs['mlflow_parent_run_id']}"
    )
    clock = SweepClock(progress)
    show = _progress_printer(sweep, echo, clock)
    trials_here = 0
    per_worker, why = pick_threads(workers, threads)
    try:
        if not progress.complete:
            echo(f"torch threads per worker: {per_worker} ({why})")
            if workers == 1:
                set_torch_threads(per_worker)
                trials_here = _run_here(sweep, echo, flush_every, clock)
            else:
                _run_elsewhere(sweep, workers, show, per_worker)
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning turns Ctrl-C during fit into SystemExit(1) once it has cleaned up.
        sweep.finish("KILLED")
        echo(f"interrupted: resume with the same command (sweep {sweep.name})")
        raise KeyboardInterrupt from err
    sweep.recover()
    progress = sweep.progress()
    show()
    counts = dict(sweep.state_counts())
    if progress.complete:
        sweep.finish("FINISHED")
        results = sweep.results()
        echo("trials: " + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())))
        if len(results):
            echo(text_table(results.to_dict("records"), RESULT_COLUMNS))
            fit_and_log(sweep, results, echo)
        else:
            echo("no completed trial: nothing to fit")
    else:
        echo(f"sweep {sweep.name} is not complete: {progress.line()}")
    return RunSummary(progress.complete, trials_here, time.perf_counter() - started, counts)


def _run_here(
    sweep: Sweep, echo: Callable[[str], None], flush_every: float, clock: SweepClock
) -> int:
    quiet_training_logs()
    ran = 0

    def on_trial(outcome: TrialOutcome) -> None:
        progress = sweep.progress()
        echo(f"[{progress.done}/{progress.total} cells] {outcome.line()}{clock.eta(progress)}")
        status = next(c for c in progress.cells if c.cell.key == outcome.cell)
        if status.done:
            echo(f"  {progress.line()}")

    for _ in range(MAX_ROUNDS):
        ran += len(work(sweep, on_trial=on_trial, flush_every=flush_every))
        if sweep.progress().complete or not sweep.recover():
            break
    return ran


def _run_elsewhere(sweep: Sweep, workers: int, show: Callable[[], None], threads: int) -> None:
    """Watch (and, with ``workers`` > 0, launch) worker processes until the sweep is done."""
    procs = spawn_workers(sweep, workers, threads) if workers else []
    last_recover = time.monotonic()
    rounds = 1
    try:
        while True:
            show()
            if sweep.progress().complete:
                break
            if time.monotonic() - last_recover >= sweep.heartbeat.interval:
                sweep.recover()
                last_recover = time.monotonic()
            if procs and all(p.poll() is not None for p in procs):
                queued = sweep.recover()
                if sweep.progress().complete:
                    break
                if not queued or rounds >= MAX_ROUNDS:
                    codes = [p.returncode for p in procs]
                    raise RuntimeError(f"all workers exited (codes {codes}) before the end")
                procs = spawn_workers(sweep, workers, threads)
                rounds += 1
            time.sleep(POLL_SECONDS)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # each re-queues its trial and closes its run
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    for p in procs:
        p.wait()
