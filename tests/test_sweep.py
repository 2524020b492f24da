"""Sweep machinery in one process: slots, claiming, heartbeats, pruning, logging, sweeps."""

from __future__ import annotations

import math
import multiprocessing
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
import torch
from optuna.trial import TrialState

from scalelab.data import prepare
from scalelab.results.batched_logging import BatchedMLflowLogging
from scalelab.sweep.callbacks import OptunaPruning
from scalelab.sweep.coordinator import run_sweep
from scalelab.sweep.spec import HeartbeatSpec, parse_spec
from scalelab.sweep.storage import JournalHeartbeatStorage, RetryStaleTrial, open_storage
from scalelab.sweep.study import Sweep, SweepConflict, slot_states
from scalelab.sweep.trial import Heartbeat, take_waiting_trial
from scalelab.sweep.worker import work
from scalelab.train import TrainConfig, TrainingDiverged, train
from scalelab.workspace import Workspace

# Heartbeats and their retry callback are marked experimental in Optuna; they are what we use.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {
    "corpus": "stdlib-notests",
    "context": 64,
    "sizes": ["n10k"],
    "budgets": {"tokens": [64 * 8 * 30]},
    "search": {"trials": 1, "batch_size": 8},
    "validations": 3,
    "train": {"val_tokens": 64 * 32},
}


def _trial(state: TrialState, slot: int, age: float = 3600.0, **attrs: object):
    """A trial of ``slot`` that ended (or started) ``age`` seconds ago."""
    now = datetime.now()
    return optuna.trial.FrozenTrial(
        number=0,
        trial_id=0,
        state=state,
        value=1.0 if state == TrialState.COMPLETE else None,
        datetime_start=None if state == TrialState.WAITING else now - timedelta(seconds=age + 9),
        datetime_complete=now - timedelta(seconds=age) if state.is_finished() else None,
        params={},
        distributions={},
        user_attrs={"slot": slot, **attrs},
        system_attrs={},
        intermediate_values={},
    )


def test_slot_states_count_each_slot_once() -> None:
    trials = [
        _trial(TrialState.COMPLETE, 0),
        _trial(TrialState.FAIL, 1),  # stale, retried by the copy below
        _trial(TrialState.RUNNING, 1),
        _trial(TrialState.FAIL, 2, outcome="diverged"),  # final: its own fault
        _trial(TrialState.FAIL, 3),  # stale long ago, never re-queued: lost
        _trial(TrialState.FAIL, 4, age=1.0),  # stale a moment ago: re-queue on its way
        *[_trial(TrialState.FAIL, 5) for _ in range(3)],  # gave up after max_retry=2
        _trial(TrialState.WAITING, 6),
    ]
    states = slot_states(trials, n_slots=8, max_retry=2)
    assert states == {
        0: "done",
        1: "pending",
        2: "done",
        3: "lost",
        4: "pending",
        5: "done",
        6: "pending",
        7: "lost",  # never queued
    }


def _claim_all(path: str, out: multiprocessing.Queue) -> None:
    storage = open_storage(f"journal:{path}")
    study = optuna.load_study(study_name="q", storage=storage)
    mine = []
    while (trial := take_waiting_trial(study, storage)) is not None:
        mine.append(trial.number)
        study.tell(trial, 1.0)
    out.put(mine)


def test_claiming_is_exclusive_across_processes_and_never_creates(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.log")
    storage = open_storage(f"journal:{path}")
    study = optuna.create_study(study_name="q", storage=storage)
    for slot in range(12):
        study.add_trial(
            optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"slot": slot})
        )
    out: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_claim_all, args=(path, out))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    numbers = sorted(n for mine in claimed for n in mine)
    assert numbers == list(range(12))  # each trial exactly once
    assert len(study.get_trials()) == 12  # and none created
    assert take_waiting_trial(study, storage) is None
    assert len(study.get_trials()) == 12


def test_journal_heartbeats_fail_and_requeue_a_silent_trial(tmp_path: Path) -> None:
    seen = []
    storage = JournalHeartbeatStorage(
        tmp_path / "journal.log",
        heartbeat_interval=1,
        grace_period=3,
        heartbeat_stale_trial_callback=RetryStaleTrial(1, lambda s, t: seen.append(t.number)),
    )
    study = optuna.create_study(study_name="hb", storage=storage)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"slot": 0}))
    dead = take_waiting_trial(study, storage)
    dead.suggest_float("lr", 1e-4, 1e-1, log=True)
    time.sleep(3.5)  # no heartbeat after the claim: its worker "died"
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].user_attrs["slot"] == 0
    assert seen == [0]

    alive = take_waiting_trial(study, storage)
    with Heartbeat(storage, alive._trial_id):
        time.sleep(4)  # longer than the grace period, but beating every second
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials()[1].state == TrialState.RUNNING
    study.tell(alive, 0.5)
    assert seen == [0]


def test_sqlite_heartbeats_use_optunas_rdb_storage(tmp_path: Path) -> None:
    hb = HeartbeatSpec(interval=1, grace=2, max_retry=0)
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", hb)
    study = optuna.create_study(study_name="hb", storage=storage)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"slot": 0}))
    take_waiting_trial(study, storage)  # records the first heartbeat, then silence
    time.sleep(3.5)  # SQLite's clock has whole seconds: more than the 2 s grace
    optuna.storages.fail_stale_trials(study)
    # max_retry=0: failed and not re-queued; the slot is done (given up).
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert slot_states(study.get_trials(), 1, max_retry=0) == {0: "done"}


def _trainer(value: float, step: int, max_steps: int = 100, fn: str = "fit"):
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn=fn),
        callback_metrics={"val/loss": torch.tensor(value)},
        global_step=step,
        max_steps=max_steps,
    )


def test_pruning_callback_reports_by_tokens_seen_and_prunes() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=3.0))
    trial = study.ask()
    callback = OptunaPruning(trial, tokens_per_step=512)
    callback.on_validation_end(_trainer(2.5, 10), None)
    callback.on_validation_end(_trainer(2.4, 10, fn="validate"), None)  # after fit: ignored
    with pytest.raises(optuna.TrialPruned, match="tokens_seen 10,240"):
        callback.on_validation_end(_trainer(3.5, 20), None)
    assert study.trials[0].intermediate_values == {5120: 2.5, 10240: 3.5}
    # The last validation of a run is reported but never pruned.
    last = OptunaPruning(study.ask(), tokens_per_step=512)
    last.on_validation_end(_trainer(9.0, 100), None)
    with pytest.raises(TrainingDiverged, match="validation loss became nan"):
        last.on_validation_end(_trainer(math.nan, 50), None)


def test_batched_logging_keeps_every_metric_in_few_calls(workspace: Workspace) -> None:
    cfg = TrainConfig(
        preset="n10k",
        corpus="stdlib-notests",
        context=64,
        batch_size=8,
        tokens=64 * 8 * 40,
        val_tokens=64 * 32,
        experiment="batched",
    )
    batched = BatchedMLflowLogging(flush_every=1e9)
    result = train(cfg, workspace, callbacks=[batched], enable_progress_bar=False)
    client = mlflow.MlflowClient(workspace.tracking_uri)
    history = client.get_metric_history(result.run_id, "train/loss")
    assert len(history) == 40  # logged every step, none lost
    assert batched.logger.calls <= 1 + 10 + 1  # one per validation, end of fit and validate
    assert client.get_run(result.run_id).info.status == "FINISHED"


def _sweep(workspace: Workspace, **changes: object) -> tuple[Sweep, str]:
    spec = parse_spec({"name": "unit", **TINY, **changes})
    data = prepare(spec.corpus, spec.tokenizer, cache_dir=workspace.cache_dir)
    url = f"journal:{workspace.root / 'optuna-journal.log'}"
    return Sweep(spec, url, workspace), data.corpus_hash


def test_changed_spec_is_refused_unless_named_anew(workspace: Workspace) -> None:
    sweep, corpus = _sweep(workspace)
    sweep.ensure(corpus)
    same, _ = _sweep(workspace, search={"trials": 2, "batch_size": 8})  # more trials: fine
    same.ensure(corpus)
    assert len(same.study(same.cells[0]).get_trials()) == 2
    with pytest.raises(SweepConflict, match="trials can grow but not shrink"):
        _sweep(workspace)[0].ensure(corpus)
    with pytest.raises(SweepConflict, match=r"different sizes \(sizes: stored \[\"n10k\"\]"):
        _sweep(workspace, sizes=["n10k", "n30k"])[0].ensure(corpus)
    with pytest.raises(SweepConflict, match="corpus .content hash."):
        _sweep(workspace)[0].ensure("0" * 16)
    renamed, _ = _sweep(workspace, name="unit-2", sizes=["n10k", "n30k"])
    renamed.ensure(corpus)
    assert renamed.attrs["ready"]


def test_nan_trial_fails_with_its_reason_and_the_sweep_completes(workspace: Workspace) -> None:
    sweep, corpus = _sweep(
        workspace,
        search={
            "sampler": "grid",
            "trials": 2,
            "lr": [3e-3, 100.0],
            "warmup": 0.0,
            "batch_size": 8,
        },
        train={"val_tokens": 64 * 32, "grad_clip": 0.0},
    )
    lines: list[str] = []
    summary = run_sweep(sweep, corpus, echo=lines.append)
    assert summary.complete and summary.counts == {"COMPLETE": 1, "FAIL": 1}
    trials = sweep.study(sweep.cells[0]).get_trials()
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert failed.params["lr"] == 100.0 and failed.user_attrs["outcome"] == "diverged"
    assert "loss became nan" in failed.user_attrs["failure_reason"]
    run = mlflow.MlflowClient(workspace.tracking_uri).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == failed.user_attrs["failure_reason"]
    assert run.data.tags["trial"] == str(failed.number)
    assert any("no auto fit" in line for line in lines)  # one point: the reason is said


def test_a_pruned_trial_is_reported_by_tokens_and_its_run_killed(workspace: Workspace) -> None:
    sweep, corpus = _sweep(
        workspace,
        search={"trials": 1, "lr": 1e-6, "batch_size": 8, "sampler": "random"},
        pruner={"kind": "median", "startup_trials": 1, "warmup": 0.0},
    )
    sweep.ensure(corpus)
    cell = sweep.cells[0]
    study = sweep.study(cell)
    every = cell.tokens // 3 // 512 * 512
    # A finished trial of this cell that did far better at every validation.
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=1.0,
            intermediate_values={every * k: 1.0 for k in (1, 2, 3)},
            user_attrs={"slot": 99},
        )
    )
    (outcome,) = work(sweep)
    assert outcome.state == "PRUNED"
    pruned = study.get_trials()[outcome.number]
    assert pruned.state == TrialState.PRUNED
    assert list(pruned.intermediate_values) == [every]  # keyed by tokens seen, pruned at once
    run = mlflow.MlflowClient(workspace.tracking_uri).get_run(outcome.run_id)
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "PRUNED"
    assert sweep.progress().complete
