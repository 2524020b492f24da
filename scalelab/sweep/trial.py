"""One trial: sample its hyper-parameters, train in a nested MLflow run, tell Optuna the outcome.

The MLflow run is created here, as a child of the sweep's parent run (tag
``mlflow.parentRunId``), and handed to ``scalelab.train.train`` by id: Lightning's
``MLFlowLogger`` cannot nest runs itself. The Optuna trial keeps the run id (user attribute
``mlflow_run_id``) and the run keeps the trial (tags ``sweep``, ``cell``, ``trial``).

A spec's RLHF ``stage`` is trained by ``scalelab.rlhf.run_stage`` instead: its ``loss`` is the
trial's value and its headline metric is kept as user attributes ``metric`` and
``metric_name``; the run is tagged ``stage``.

Outcomes, each recorded in both places:

- ``COMPLETE``: the final validation loss is the trial's value; the run is ``FINISHED``.
- ``PRUNED``: stopped early by the cell's pruner; the run is ``KILLED``, tag ``trial_state``.
- ``FAIL`` with ``outcome=diverged``: the loss became NaN or infinite; the run is ``FAILED``
  with tag ``failure_reason``. Such a trial is final: its slot is not retried.
- ``FAIL`` with ``outcome=error``: any other exception, recorded the same way; the sweep goes on.
- ``FAIL`` with ``outcome=interrupted`` (Ctrl-C, SIGTERM): the run is ``KILLED`` and a copy of
  the trial is queued again at once, as for a worker that stopped sending heartbeats.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

from scalelab.sweep.spec import Cell, Range, SweepSpec, WidthRule
from scalelab.vocab import BUDGET, BUDGET_KIND

if TYPE_CHECKING:
    from lightning import Callback
    from mlflow import MlflowClient

    from scalelab.rlhf import StageResult
    from scalelab.sweep.study import Sweep
    from scalelab.train import TrainConfig
    from scalelab.workspace import Workspace

FINAL_OUTCOMES = frozenset({"diverged", "error"})  # failures that are not retried


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def boot_id() -> str:
    """This machine's boot id (Linux), so a pid is only ever compared on its own machine."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cell_seed(sweep: str, cell: str) -> int:
    """A seed per cell, the same in every worker process."""
    digest = hashlib.sha256(f"{sweep}/{cell}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(
    spec: SweepSpec, cell: Cell, seed: int, number: int
) -> optuna.samplers.BaseSampler:
    """The sampler for trial ``number`` of ``cell``, whose seed is ``seed``.

    TPE and random samplers are seeded with ``seed + number``: the same trial gets the same
    parameters whichever worker runs it, and two workers starting at once do not draw the
    same ones. The grid sampler shuffles its grid with its seed, so every trial of a cell
    must share one seed; it gives trial ``n`` grid point ``n``.
    """
    search = spec.search
    if search.sampler == "grid":
        space = {name: choices(spec, cell, name) for name in ("lr", "warmup", "batch_size")}
        return optuna.samplers.GridSampler(space, seed=seed)
    trial_seed = (seed + number) % 2**31
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=trial_seed)
    return optuna.samplers.TPESampler(seed=trial_seed, n_startup_trials=search.startup_trials)


def tell(study: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> None:
    """``study.tell``, tolerating the grid sampler's request to stop an optimize loop.

    ``GridSampler.after_trial`` calls ``study.stop()`` once its grid is covered, which raises
    outside ``Study.optimize``; the trial's state is stored before that. Slots, not the
    sampler, decide when a cell is done.
    """
    try:
        study.tell(trial, skip_if_finished=True, **kwargs)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def horizon(cell: Cell) -> int:
    """A trial's length in the unit of its pruning reports: tokens seen when pretraining,
    optimizer steps for an RLHF stage (see ``callbacks.OptunaPruning``)."""
    return cell.tokens if cell.steps is None else cell.steps


def make_pruner(spec: SweepSpec, cell: Cell) -> optuna.pruners.BasePruner:
    """The spec's pruner with its steps in the unit of every report (``horizon``)."""
    p = spec.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=int(p.warmup * horizon(cell))
        )
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=val_every(spec, cell),
            max_resource=horizon(cell),
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def val_every(spec: SweepSpec, cell: Cell) -> int:
    """Tokens between validations: a whole number of steps for every searched batch size,
    so trials of a cell are validated (and reported to the pruner) at the same tokens seen.
    For an RLHF stage, steps between validations (its ``eval_every``)."""
    if cell.steps is not None:
        return max(1, cell.steps // spec.validations)
    step = spec.tokens_per_step()
    return max(step, (cell.tokens // spec.validations) // step * step)


def choices(spec: SweepSpec, cell: Cell, name: str) -> list[Any]:
    """The values of a parameter that is not a range: its list, or its one value; the base
    width's best value where ``cell`` reuses it."""
    if cell.fixed_params is not None:
        return [cell.fixed_params[name]]
    value = getattr(spec.search, name)
    if isinstance(value, WidthRule):
        return value.lrs(cell.d_model)
    return list(value) if isinstance(value, list) else [value]


def suggest(trial: optuna.Trial, spec: SweepSpec, cell: Cell) -> dict[str, Any]:
    """The trial's lr, warmup and batch_size: fixed values are recorded as one-choice params."""
    out: dict[str, Any] = {}
    for name in ("lr", "warmup", "batch_size"):
        value = getattr(spec.search, name)
        if isinstance(value, Range) and cell.fixed_params is None:
            out[name] = trial.suggest_float(name, value.low, value.high, log=value.log)
        else:
            out[name] = trial.suggest_categorical(name, choices(spec, cell, name))
    out["batch_size"] = int(out["batch_size"])
    return out


def take_waiting_trial(
    study: optuna.Study,
    storage: BaseStorage,
    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None,
) -> optuna.Trial | None:
    """Claim one queued (WAITING) trial, or None; never creates a trial.

    ``Study.ask`` would create a new trial when the queue is empty, which under several
    workers overshoots the requested count. Claiming is atomic in the RDB and journal
    storages: of two workers setting the same trial RUNNING, one is told it lost.
    ``sampler_for(number)`` sets the study's sampler before the trial is built (samplers
    prepare a trial as it is constructed).
    """
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if not storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if is_heartbeat_enabled(storage):
            # RDB storages only ever see a trial as stale after its first heartbeat, so the
            # first is recorded the moment the trial is claimed.
            assert isinstance(storage, BaseHeartbeat)
            storage.record_heartbeat(frozen._trial_id)
        if sampler_for is not None:
            study.sampler = sampler_for(frozen.number)
        trial = optuna.Trial(study, frozen._trial_id)
        if "failed_trial" in frozen.system_attrs:
            # A retry copies its predecessor's user attributes; they describe the old run.
            for key in ("mlflow_run_id", "outcome", "failure_reason"):
                if frozen.user_attrs.get(key):
                    trial.set_user_attr(key, "")
        return trial
    return None


def take_cell_trial(sweep: Sweep, cell: Cell) -> optuna.Trial | None:
    """Claim a queued trial of ``cell`` (``take_waiting_trial``), built with its own seeded
    sampler (``make_sampler``)."""
    return take_waiting_trial(
        sweep.study(cell),
        sweep.storage,
        sampler_for=lambda n: make_sampler(sweep.spec, cell, cell_seed(sweep.name, cell.key), n),
    )


class TrialLost(RuntimeError):
    """A claimed trial was failed (and its slot re-queued) by another process before it ran."""


class Heartbeat:
    """Record the trial's heartbeat every interval in a thread, while training runs."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if is_heartbeat_enabled(self.storage):
            assert isinstance(self.storage, BaseHeartbeat)
            self.thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
            self.thread.start()
        return self

    def _beat(self) -> None:
        assert isinstance(self.storage, BaseHeartbeat)
        interval = self.storage.get_heartbeat_interval() or 60
        while True:
            # A transient storage error must not kill the trial; the next beat retries.
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(interval):
                return

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


@dataclass(frozen=True)
class TrialOutcome:
    cell: str
    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    loss: float
    params: dict[str, Any]
    run_id: str
    seconds: float
    train_seconds: float
    reason: str = ""

    def line(self) -> str:
        params = " ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        value = f"loss {self.loss:.4f}" if math.isfinite(self.loss) else self.state.lower()
        why = f" ({self.reason})" if self.reason and self.state != "COMPLETE" else ""
        return (
            f"{self.cell} trial {self.number}: {value} {params} | {self.seconds:.1f}s"
            f" | {self.state}{why} | run {self.run_id[:12]}"
        )


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_fields(spec: SweepSpec, cell: Cell, number: int, params: dict[str, Any]) -> dict[str, Any]:
    """Config fields every trial sets, pretraining or a stage: size, seed, tracking, the
    sampled hyper-parameters and the spec's ``train:`` overrides."""
    return dict(
        preset=cell.preset,
        n_params_target=cell.n_params_target,
        variant=spec.variant,
        context=spec.context,
        seed=cell.seed,
        experiment=spec.experiment_name,
        run_name=f"{cell.key}/{number}",
        **params,
        **spec.train,
        **(
            {"parametrization": "mup", "mup_base_width": spec.mup_base_width}
            if spec.parametrization == "mup"
            else {}
        ),
    )


def pretrain_config(
    spec: SweepSpec, cell: Cell, number: int, params: dict[str, Any]
) -> TrainConfig:
    """The training config of a pretraining trial: the cell's budget, validated every
    ``val_every`` tokens."""
    from scalelab.train import TrainConfig

    return TrainConfig(
        corpus=spec.corpus,
        tokenizer=spec.tokenizer,
        tokens=cell.tokens,
        val_every=val_every(spec, cell),
        evals=spec.eval,
        **run_fields(spec, cell, number, params),
    )


def _train_stage(
    spec: SweepSpec,
    cell: Cell,
    trial: optuna.Trial,
    workspace: Workspace,
    run_id: str,
    params: dict[str, Any],
    logging: Callback,
) -> StageResult:
    """Train ``spec.stage`` for the cell's steps, pruned on the validation loss that becomes
    the trial's value; ppo validates inside its own loop, so no pruning callback sees it."""
    from scalelab.rlhf import run_stage, stage_config
    from scalelab.rlhf.stages import HEADLINE
    from scalelab.sweep.callbacks import OptunaPruning

    cfg = stage_config(
        spec.stage,
        steps=cell.steps,
        eval_every=val_every(spec, cell),
        **run_fields(spec, cell, trial.number, params),
    )
    monitor = HEADLINE[spec.stage][2]
    callbacks = [logging] if monitor is None else [OptunaPruning(trial, monitor=monitor), logging]
    # The run exists (tagged by run_trial): run_stage continues it by id.
    return run_stage(spec.stage, cfg, workspace, run_id=run_id, callbacks=callbacks)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _open_run(
    spec: SweepSpec,
    cell: Cell,
    study: optuna.Study,
    trial: optuna.Trial,
    client: MlflowClient,
    workspace: Workspace,
    parent_run_id: str,
) -> str:
    """The trial's nested MLflow run, tagged with where it came from and holding the cell's
    budget as numbers (``budget``, ``budget_kind``: what the trial was asked to spend)."""
    from scalelab.results.sweep_runs import trial_run

    frozen = study.get_trials(deepcopy=False)[trial.number]
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "sweep": spec.name,
        "cell": cell.key,
        "trial": str(trial.number),
        "optuna_study": study.study_name,
        "slot": str(frozen.user_attrs.get("slot", "")),
        "worker": worker_name(),
        "torch_threads": str(_torch_threads()),  # chosen for the machine's free cores
    }
    if spec.stage != "pretrain":
        tags["stage"] = spec.stage  # run_stage tags only the runs it creates itself
    retried_from = frozen.system_attrs.get("failed_trial")
    if retried_from is not None:
        tags["retry_of_trial"] = str(retried_from)
    run_id = trial_run(
        client,
        workspace,
        experiment=spec.experiment_name,
        name=f"{cell.key}/{trial.number}",
        tags=tags,
        params={BUDGET: f"{cell.budget_value:.10g}", BUDGET_KIND: cell.budget_kind},
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    return run_id


def _train_trial(
    spec: SweepSpec,
    cell: Cell,
    trial: optuna.Trial,
    workspace: Workspace,
    run_id: str,
    params: dict[str, Any],
    flush_every: float,
) -> tuple[float, float]:
    """Train the trial in its run; returns (final loss, training seconds)."""
    from scalelab.results.batched_logging import BatchedMLflowLogging
    from scalelab.sweep.callbacks import OptunaPruning
    from scalelab.train import TrainingDiverged, train
    from scalelab.training.progress import Progress

    logging = BatchedMLflowLogging(flush_every)
    if spec.stage == "pretrain":
        cfg = pretrain_config(spec, cell, trial.number, params)
        pruning = OptunaPruning(trial, tokens_per_step=cfg.batch_size * cfg.context)
        # Live on a terminal, a line a minute in a log; the sweep's own line follows the trial.
        progress = Progress(f"{cell.key} trial {trial.number}", keep=False)
        callbacks = [pruning, logging, progress]
        result = train(
            cfg, workspace, run_id=run_id, callbacks=callbacks, enable_progress_bar=False
        )
    else:
        result = _train_stage(spec, cell, trial, workspace, run_id, params, logging)
        trial.set_user_attr("metric", result.metric)
        trial.set_user_attr("metric_name", result.metric_name)
    if not math.isfinite(result.loss):
        raise TrainingDiverged(f"final validation loss is {result.loss}")
    return result.loss, result.wall_time


def _failed(trial: optuna.Trial, outcome: str, reason: str) -> None:
    trial.set_user_attr("outcome", outcome)
    trial.set_user_attr("failure_reason", reason)


def record_failure(
    err: BaseException, spec: SweepSpec, trial: optuna.Trial, client: MlflowClient, run_id: str
) -> tuple[str, str]:
    """Record why a trial's training stopped (pruned, diverged, any other error) on the trial
    and its run; returns its state (PRUNED or FAIL) and the reason."""
    from scalelab.results.sweep_runs import set_run_state
    from scalelab.train import TrainingDiverged

    if isinstance(err, optuna.TrialPruned):
        reason = str(err)
        if spec.stage != "pretrain":
            # run_stage tags every exception as the run's failure; being pruned is not one.
            client.delete_tag(run_id, "failure_reason")
        set_run_state(client, run_id, "KILLED", trial_state="PRUNED", pruned_reason=reason)
        return "PRUNED", reason
    if isinstance(err, TrainingDiverged):
        reason = str(err)
        _failed(trial, "diverged", reason)
    else:
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        _failed(trial, "error", reason)
        trace = traceback.format_exception(err)
        trial.set_user_attr("traceback", "".join(trace)[-4000:])
    set_run_state(client, run_id, "FAILED", failure_reason=reason, trial_state="FAIL")
    return "FAIL", reason


def requeue_interrupted(
    study: optuna.Study, trial: optuna.Trial, client: MlflowClient, run_id: str, retry: Any
) -> None:
    """The worker was interrupted (Ctrl-C, SIGTERM): fail the trial, kill its run and queue a
    copy of it at once (``retry``)."""
    from scalelab.results.sweep_runs import set_run_state

    reason = f"worker {worker_name()} interrupted (Ctrl-C or SIGTERM); trial re-queued"
    _failed(trial, "interrupted", reason)
    tell(study, trial, state=TrialState.FAIL)
    set_run_state(client, run_id, "KILLED", failure_reason=reason, trial_state="FAIL")
    if retry is not None:
        retry(study, study.get_trials(deepcopy=False)[trial.number])


def tell_outcome(
    study: optuna.Study,
    trial: optuna.Trial,
    client: MlflowClient,
    run_id: str,
    state: str,
    loss: float,
) -> None:
    """Tell Optuna how the trial ended; a COMPLETE trial's run is tagged once Optuna has it."""
    if state == "COMPLETE":
        tell(study, trial, values=loss)  # first: the result counts once Optuna has it
        client.set_tag(run_id, "trial_state", "COMPLETE")
    else:
        tell(study, trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)


def run_trial(
    *,
    spec: SweepSpec,
    cell: Cell,
    study: optuna.Study,
    trial: optuna.Trial,
    storage: BaseStorage,
    workspace: Workspace,
    client: MlflowClient,
    parent_run_id: str,
    retry: Any = None,
    flush_every: float = 15.0,
) -> TrialOutcome:
    """Train one trial of ``cell`` and tell ``study`` how it ended (see the module docstring).

    ``retry(study, frozen_trial)`` re-queues the trial if the worker is interrupted (Ctrl-C,
    SIGTERM), which is then raised again. Other exceptions end the trial as failed and are
    not raised: the sweep goes on.
    """
    started = time.perf_counter()
    number = trial.number
    try:
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("worker_boot", boot_id())
    except optuna.exceptions.UpdateFinishedTrialError as err:
        # On a loaded machine the claim can outlive the grace period before the heartbeat
        # thread starts; another process then failed and re-queued it. Nothing ran yet.
        raise TrialLost(f"trial {number} was given up as stale before it started") from err
    run_id = _open_run(spec, cell, study, trial, client, workspace, parent_run_id)
    params: dict[str, Any] = {}
    state, loss, reason, train_seconds = "FAIL", math.nan, "", 0.0
    with Heartbeat(storage, trial._trial_id):
        try:
            params = suggest(trial, spec, cell)
            loss, train_seconds = _train_trial(
                spec, cell, trial, workspace, run_id, params, flush_every
            )
            state = "COMPLETE"
        except (KeyboardInterrupt, SystemExit):
            # Lightning turns Ctrl-C into SystemExit(1) after closing the run as FAILED.
            requeue_interrupted(study, trial, client, run_id, retry)
            raise
        except Exception as err:
            state, reason = record_failure(err, spec, trial, client, run_id)

    tell_outcome(study, trial, client, run_id, state, loss)
    return TrialOutcome(
        cell=cell.key,
        number=number,
        state=state,
        loss=loss,
        params=params,
        run_id=run_id,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        reason=reason,
    )
