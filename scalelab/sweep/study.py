"""A sweep in storage: one Optuna study per cell, a queue of trial slots, and its MLflow runs.

Layout in the Optuna storage:

- study ``{sweep}``: holds no trials; its user attributes record the sweep's identity (corpus
  hash, sizes, budgets, search, a spec hash), the full spec, the requested trials per cell,
  heartbeat settings and the MLflow parent run. ``ready`` is written last.
- study ``{sweep}/{cell}`` per cell, so samplers and pruners compare trials of one cell only
  (a median pruner across sizes would prune every large model).

Exactly ``trials`` trials per cell, whatever the number of workers and crashes: when a cell's
study is created it gets ``trials`` WAITING trials, one per *slot* (user attribute ``slot``).
Workers only claim WAITING trials (``trial.take_waiting_trial``), never create them. A slot is

- *done* once one of its trials is COMPLETE or PRUNED, or FAILed for a reason of its own
  (``outcome`` ``diverged`` or ``error``), or after ``max_retry`` retries;
- *pending* while one of its trials is WAITING or RUNNING;
- *lost* otherwise: its trial failed as stale but the process that failed it died before
  re-queueing it. The coordinator re-queues lost slots.

A running trial whose heartbeat stops is failed by the next worker that looks and a copy is
queued (``storage.RetryStaleTrial``); its MLflow run is set ``KILLED`` with the reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from scalelab.sweep.spec import Cell, HeartbeatSpec, SweepSpec, parse_spec
from scalelab.sweep.storage import heartbeat_features, open_storage, redact, redact_spec
from scalelab.sweep.trial import FINAL_OUTCOMES, boot_id, make_pruner

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from scalelab.workspace import Workspace

SETTLE_SECONDS = 30.0  # a stale trial's re-queue happens within this time of its failure
IDENTITY_LABELS = {
    "stage": "stage",
    "corpus_hash": "corpus (content hash)",
    "corpus": "corpus",
    "tokenizer": "tokenizer",
    "variant": "variant",
    "context": "context",
    "sizes": "sizes",
    "budgets": "budgets",
    "seeds": "seeds",
    "cells": "cells",
    "search": "search space",
    "validations": "validations",
    "train": "train settings",
    "experiment": "MLflow experiment",
}


class SweepConflict(ValueError):
    """The spec differs from the sweep of the same name already in the storage."""


class SweepNotFound(ValueError):
    """No sweep of that name in the storage."""


@dataclass
class CellStatus:
    """Where one cell stands: its slots, trials and best completed trial."""

    cell: Cell
    slots: dict[int, str]
    trials: list[FrozenTrial]

    @property
    def done(self) -> bool:
        return all(state == "done" for state in self.slots.values())

    @property
    def best(self) -> FrozenTrial | None:
        complete = [t for t in self.trials if t.state == TrialState.COMPLETE]
        return min(complete, key=lambda t: t.value) if complete else None

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)


@dataclass
class Progress:
    cells: list[CellStatus] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(c.done for c in self.cells)

    @property
    def total(self) -> int:
        return len(self.cells)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def running(self) -> int:
        return sum(c.count(TrialState.RUNNING) for c in self.cells)

    def best_per_size(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for status in self.cells:
            best = status.best
            current = out.get(status.cell.size)
            if best is not None and (current is None or best.value < current):
                out[status.cell.size] = best.value
            else:
                out.setdefault(status.cell.size, current)
        return out

    def line(self) -> str:
        def size_key(item: tuple[str, float | None]) -> int:
            return next(c.cell.n_params for c in self.cells if c.cell.size == item[0])

        best = " | ".join(
            f"{size} {'-' if loss is None else f'{loss:.4f}'}"
            for size, loss in sorted(self.best_per_size().items(), key=size_key)
        )
        return f"cells {self.done}/{self.total} done, {self.running()} running | best loss: {best}"


def slot_states(
    trials: Iterable[FrozenTrial], n_slots: int, max_retry: int, now: float | None = None
) -> dict[int, str]:
    """``done``, ``pending`` or ``lost`` for each slot 0..n_slots-1 (see the module docstring).

    Trials with a slot beyond ``n_slots`` (from a run that asked for more) are counted too.
    """
    now = time.time() if now is None else now
    by_slot: dict[int, list[FrozenTrial]] = {s: [] for s in range(n_slots)}
    for trial in trials:
        slot = trial.user_attrs.get("slot")
        if isinstance(slot, int):
            by_slot.setdefault(slot, []).append(trial)
    states = {}
    for slot, group in by_slot.items():
        if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in group) or any(
            t.state == TrialState.FAIL and t.user_attrs.get("outcome") in FINAL_OUTCOMES
            for t in group
        ):
            states[slot] = "done"
        elif any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in group):
            states[slot] = "pending"
        else:
            retried = [t for t in group if t.state == TrialState.FAIL]
            if len(retried) > max_retry:
                states[slot] = "done"  # gave up: the slot ends failed
            elif retried and any(
                t.datetime_complete is not None
                and now - t.datetime_complete.timestamp() < SETTLE_SECONDS
                for t in retried
            ):
                states[slot] = "pending"  # its re-queue may still be on the way
            else:
                states[slot] = "lost"
    return states


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sweep:
    """A sweep's studies and runs in one storage and one MLflow tracking store.

    ``heartbeat`` defaults to the spec's; workers joining a sweep use the settings the
    coordinator stored, so that every process agrees on when a trial is stale.
    """

    def __init__(
        self,
        spec: SweepSpec,
        storage_url: str,
        workspace: Workspace,
        heartbeat: HeartbeatSpec | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.url = storage_url
        self.workspace = workspace
        self.heartbeat = heartbeat or spec.heartbeat
        self.storage = open_storage(storage_url, self.heartbeat, on_stale=self._close_stale_run)
        self.cells = spec.cells()
        self._studies: dict[str, optuna.Study] = {}
        self._client: MlflowClient | None = None
        self._boot = boot_id()

    # --- Loading ----------------------------------------------------------------------------

    @staticmethod
    def _attrs_in(storage: Any, name: str) -> dict[str, Any] | None:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            return None
        return storage.get_study_user_attrs(study_id)

    @classmethod
    def load(cls, name: str, storage_url: str, workspace: Workspace, wait: float = 0.0) -> Sweep:
        """The sweep ``name`` as its coordinator stored it (spec, heartbeat).

        ``wait`` seconds are spent polling for a sweep that is still being created.
        """
        storage = open_storage(storage_url)
        deadline = time.monotonic() + wait
        while True:
            attrs = cls._attrs_in(storage, name)
            if attrs and attrs.get("ready"):
                break
            if time.monotonic() >= deadline:
                raise SweepNotFound(
                    f"no sweep named {name!r} in {redact(storage_url)}; start it with "
                    f"`scalelab sweep run SPEC --storage {redact(storage_url)}`"
                )
            time.sleep(1.0)
        spec = parse_spec(attrs["spec"], f"sweep {name!r} in storage")
        return cls(spec, storage_url, workspace, HeartbeatSpec(**attrs["heartbeat"]))

    @property
    def attrs(self) -> dict[str, Any]:
        """The sweep study's user attributes ({} before the sweep is created)."""
        return self._attrs_in(self.storage, self.name) or {}

    def study_name(self, cell: Cell) -> str:
        return f"{self.name}/{cell.key}"

    def study(self, cell: Cell) -> optuna.Study:
        """The cell's study (loaded once per process), with the cell's pruner."""
        if cell.key not in self._studies:
            self._studies[cell.key] = optuna.load_study(
                study_name=self.study_name(cell),
                storage=self.storage,
                pruner=make_pruner(self.spec, cell),
                sampler=optuna.samplers.RandomSampler(),  # replaced per trial
            )
        return self._studies[cell.key]

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from scalelab.results import tracking

            self._client = tracking.client(self.workspace)
        return self._client

    # --- Creating and resuming --------------------------------------------------------------

    def check_identity(self, stored: dict[str, Any], corpus_hash: str | None) -> None:
        """Raise ``SweepConflict`` naming what differs from the stored sweep."""
        ours = self.spec.identity()
        if corpus_hash is not None:
            ours["corpus_hash"] = corpus_hash
        theirs = stored.get("identity", {})
        differ = [k for k in IDENTITY_LABELS if k in ours and theirs.get(k) != ours[k]]
        if "cells" in differ and {"sizes", "budgets", "seeds"} & set(differ):
            differ.remove("cells")  # a consequence, not news
        if not differ:
            return
        first = differ[0]
        detail = f"stored {_brief(theirs.get(first))}, spec {_brief(ours[first])}"
        raise SweepConflict(
            f"sweep {self.name!r} already exists in {redact(self.url)} with a different "
            f"{', '.join(IDENTITY_LABELS[k] for k in differ)} ({IDENTITY_LABELS[first]}: "
            f"{detail}); to run the changed spec, name a new sweep (--name NEW or name: in "
            "the spec)"
        )

    def ensure(self, corpus_hash: str) -> None:
        """Create the sweep, or check that the stored one is this spec's, and fill its queues.

        Idempotent: re-running creates nothing already there and trains nothing already done.
        Two processes creating the same sweep at once take turns (a lock in the workspace):
        otherwise each makes a parent run and one stays RUNNING forever.
        """
        from scalelab.data.atomic import file_lock

        with file_lock(self.workspace.root / "locks" / f"sweep-{self.name}.lock"):
            self._ensure(corpus_hash)

    def _ensure(self, corpus_hash: str) -> None:
        attrs = self.attrs
        if attrs:
            self.check_identity(attrs, corpus_hash)
            stored_trials = int(attrs.get("trials", 0))
            if self.spec.search.trials < stored_trials:
                raise SweepConflict(
                    f"sweep {self.name!r} already asked for {stored_trials} trials per cell; "
                    f"trials can grow but not shrink (spec: {self.spec.search.trials})"
                )
        spec_hash = self.spec.spec_hash()
        for cell in self.cells:
            study = optuna.create_study(
                study_name=self.study_name(cell),
                storage=self.storage,
                direction="minimize",
                load_if_exists=True,
            )
            cell_attrs = study.user_attrs
            if not cell_attrs:
                for key, value in {
                    "sweep": self.name,
                    "cell": cell.to_dict(),
                    "spec_hash": spec_hash,
                    "corpus_hash": corpus_hash,
                }.items():
                    study.set_user_attr(key, value)
            elif cell_attrs.get("spec_hash") != spec_hash or cell_attrs.get("corpus_hash") != (
                corpus_hash
            ):
                raise SweepConflict(
                    f"study {study.study_name!r} in {redact(self.url)} was created by a "
                    "different spec or corpus; name a new sweep (--name NEW or name: in the spec)"
                )
            self._top_up(study, cell)
        parent = self._parent_run(attrs.get("mlflow_parent_run_id"), corpus_hash)
        self._set_attrs(
            {
                "scalelab_sweep": 1,
                "identity": {**self.spec.identity(), "corpus_hash": corpus_hash},
                "spec_hash": spec_hash,
                "spec": redact_spec(self.spec.model_dump(mode="json")),
                "trials": self.spec.search.trials,
                "cells": [c.to_dict() for c in self.cells],
                "heartbeat": self.heartbeat.model_dump(),
                "experiment": self.spec.experiment_name,
                "mlflow_parent_run_id": parent,
                "ready": True,
            }
        )

    def _set_attrs(self, values: dict[str, Any]) -> None:
        study = optuna.create_study(study_name=self.name, storage=self.storage, load_if_exists=True)
        current = study.user_attrs
        for key, value in values.items():
            if current.get(key) != value:
                study.set_user_attr(key, value)

    def _top_up(self, study: optuna.Study, cell: Cell) -> int:
        """Queue a WAITING trial for every missing or lost slot; returns how many."""
        trials = study.get_trials(deepcopy=False)
        states = slot_states(trials, self.spec.trials_of(cell), self.heartbeat.max_retry)
        queued = 0
        for slot, state in sorted(states.items()):
            missing = not any(t.user_attrs.get("slot") == slot for t in trials)
            if missing or state == "lost":
                # Plain WAITING trials (not enqueue_trial, whose fixed_params stop the grid
                # sampler from assigning a grid point): parameters are sampled when claimed.
                study.add_trial(
                    optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"slot": slot})
                )
                queued += 1
        return queued

    def _parent_run(self, run_id: str | None, corpus_hash: str) -> str:
        from scalelab.results.sweep_runs import MissingParentRun, parent_run

        spec = self.spec
        try:
            return parent_run(
                self.client,
                self.workspace,
                experiment=spec.experiment_name,
                sweep=self.name,
                run_id=run_id,
                tags={"sweep": self.name, "sweep_role": "parent", "spec_hash": spec.spec_hash()},
                params={
                    "corpus": corpus_hash,
                    "corpus_source": spec.corpus,
                    "tokenizer": spec.tokenizer,
                    "variant": spec.variant,
                    "context": spec.context,
                    "n_cells": len(self.cells),
                    "trials": spec.search.trials,
                    "sampler": spec.search.sampler,
                    "pruner": spec.pruner.kind,
                    "budget_kind": spec.budgets.kind,
                },
                spec=redact_spec(spec.model_dump(mode="json")),
            )
        except MissingParentRun as err:
            raise SweepConflict(str(err)) from err

    # --- Recovery ---------------------------------------------------------------------------

    def fail_dead_local_trials(self, study: optuna.Study) -> int:
        """Fail RUNNING trials whose worker process on this machine no longer exists.

        A fast path next to heartbeats: after a crash on one machine, resuming there need not
        wait for the grace period. Trials of other machines are left to their heartbeats.
        """
        callback = self.storage.get_heartbeat_stale_trial_callback()
        failed = 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get("worker", ""))
            if not self._boot or trial.user_attrs.get("worker_boot") != self._boot:
                continue
            pid = int(worker.rsplit(":", 1)[-1]) if ":" in worker else -1
            if pid <= 0 or pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed += 1
            if callback is not None:
                callback(study, self.storage.get_trial(trial._trial_id))
        return failed

    def fail_stale(self, study: optuna.Study) -> None:
        """Fail (and re-queue) the cell's trials whose worker died: locally dead, or stale."""
        self.fail_dead_local_trials(study)
        with heartbeat_features():
            fail_stale_trials(study)

    def recover(self) -> int:
        """Fail dead workers' trials, close their MLflow runs, re-queue lost slots.

        Returns the number of slots re-queued. Safe to call at any time, from any process.
        """
        queued = 0
        for cell in self.cells:
            study = self.study(cell)
            self.fail_stale(study)
            queued += self._top_up(study, cell)
        self.close_orphan_runs()
        return queued

    def _close_stale_run(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        reason = (
            f"the worker {trial.user_attrs.get('worker', '?')} of trial {trial.number} "
            "stopped (killed or lost) before Optuna had its result; the trial was queued again"
        )
        # A run FINISHED whose trial never got its result (killed between the two) is closed
        # too: its retry will log the slot's one finished run.
        self._kill_run(run_id, reason, statuses=("RUNNING", "FINISHED"))

    def _kill_run(self, run_id: str, reason: str, statuses: tuple[str, ...] = ("RUNNING",)):
        from scalelab.results.sweep_runs import kill_run

        kill_run(self.client, run_id, reason, statuses)

    def close_orphan_runs(self) -> int:
        """Set KILLED every child run still RUNNING whose trial has ended (or never recorded
        the run), with the reason; returns how many."""
        from scalelab.results.sweep_runs import running_runs

        parent = self.attrs.get("mlflow_parent_run_id")
        by_cell = {c.key: c for c in self.cells}
        closed = 0
        for run_id, tags in running_runs(self.client, self.spec.experiment_name, self.name):
            cell = by_cell.get(tags.get("cell", ""))
            if run_id == parent or cell is None or "trial" not in tags:
                continue
            trials = self.study(cell).get_trials(deepcopy=False)
            number = int(tags["trial"])
            trial = trials[number] if number < len(trials) else None
            if (
                trial is not None
                and trial.state == TrialState.RUNNING
                and trial.user_attrs.get("mlflow_run_id") in (run_id, None, "")
            ):
                continue  # still training (or about to record its run)
            state = trial.state.name if trial is not None else "missing"
            self._kill_run(
                run_id,
                f"trial {number} of cell {cell.key} ended ({state}) without closing this run; "
                "its worker was killed",
            )
            closed += 1
        return closed

    # --- Reading ----------------------------------------------------------------------------

    def progress(self) -> Progress:
        trials_per_cell = max(self.spec.search.trials, int(self.attrs.get("trials", 0)))
        out = Progress()
        for cell in self.cells:
            trials = self.study(cell).get_trials(deepcopy=False)
            slots = 1 if cell.tuned_at is not None else trials_per_cell
            states = slot_states(trials, slots, self.heartbeat.max_retry)
            out.cells.append(CellStatus(cell, states, trials))
        return out

    def reusing_base(self, cell: Cell) -> Cell | None:
        """``cell`` with the best parameters of its base-width cell (``cell.tuned_at``), or
        None while that cell still searches. A base cell none of whose trials completed
        leaves ``cell`` to its own search, one trial."""
        base = next(c for c in self.cells if c.key == cell.tuned_at)
        trials = self.study(base).get_trials(deepcopy=False)
        slots = slot_states(trials, self.spec.trials_of(base), self.heartbeat.max_retry)
        status = CellStatus(base, slots, trials)
        if not status.done:
            return None
        best = status.best
        return cell if best is None else replace(cell, fixed_params=dict(best.params))

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent MLflow run."""
        parent = self.attrs.get("mlflow_parent_run_id")
        if parent:
            self.client.set_terminated(parent, status)

    def trial_rows(self) -> list[dict[str, Any]]:
        """One row per trial, in the shared vocabulary, for ``status`` and exports."""
        rows = []
        for status in self.progress().cells:
            cell = status.cell
            for t in status.trials:
                rows.append(
                    {
                        "cell": cell.key,
                        "size": cell.size,
                        "trial": t.number,
                        "slot": t.user_attrs.get("slot"),
                        "state": t.state.name,
                        "n_params": cell.n_params,
                        "tokens": cell.tokens,
                        "compute": cell.compute,
                        "loss": t.value if t.state == TrialState.COMPLETE else None,
                        **{k: t.params.get(k) for k in ("lr", "warmup", "batch_size")},
                        # A queued retry still carries its predecessor's run id.
                        "run_id": (t.user_attrs.get("mlflow_run_id") or None)
                        if t.state != TrialState.WAITING
                        else None,
                        "reason": _reason(t),
                        "seed": cell.seed,
                    }
                )
        return rows

    def results(self) -> pd.DataFrame:
        """The best completed trial of each cell: the points a scaling law is fitted to."""
        import pandas as pd

        rows = []
        for status in self.progress().cells:
            best = status.best
            if best is None:
                continue
            cell = status.cell
            rows.append(
                {
                    "cell": cell.key,
                    "size": cell.size,
                    "n_params": cell.n_params,
                    "tokens": cell.tokens,
                    "compute": cell.compute,
                    "loss": best.value,
                    "trial": best.number,
                    "run_id": best.user_attrs.get("mlflow_run_id"),
                    "seed": cell.seed,
                    **{k: best.params.get(k) for k in ("lr", "warmup", "batch_size")},
                }
            )
        return pd.DataFrame(rows)

    def state_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for status in self.progress().cells:
            counts.update(t.state.name for t in status.trials)
        return counts


def _reason(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL:
        reason = trial.user_attrs.get("failure_reason")
        return str(reason or "worker stopped (killed or lost); re-queued")
    if "failed_trial" in trial.system_attrs and trial.state != TrialState.FAIL:
        return f"retry of trial {trial.system_attrs['failed_trial']}"
    return ""


def _brief(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
