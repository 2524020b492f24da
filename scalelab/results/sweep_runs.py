"""A sweep's MLflow runs: one parent run per sweep, one nested run per trial, their states.

The sweep layer (``scalelab.sweep``) decides what happens to a trial; this module writes it to
MLflow. Lightning's ``MLFlowLogger`` cannot nest runs itself, so a trial's run is created here
(tag ``mlflow.parentRunId``) and training continues it by id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scalelab.results import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from scalelab.workspace import Workspace


class MissingParentRun(ValueError):
    """The sweep's parent run is not in this tracking store."""


def parent_run(
    client: MlflowClient,
    workspace: Workspace,
    *,
    experiment: str,
    sweep: str,
    run_id: str | None,
    tags: dict[str, str],
    params: dict[str, Any],
    spec: dict[str, Any],
) -> str:
    """The sweep's parent run: ``run_id`` reopened (set RUNNING), or a new run of
    ``experiment`` with ``tags``, ``params`` and the spec as ``sweep.json``."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception as err:
            raise MissingParentRun(
                f"the MLflow parent run {run_id} of sweep {sweep!r} is not in "
                f"{workspace.tracking_uri}; point --tracking-uri (MLFLOW_TRACKING_URI) "
                "at the sweep's tracking store"
            ) from err
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id
    experiment_id = tracking.ensure_experiment(experiment, workspace)
    run_id = tracking.create_run(client, experiment_id, name=sweep, tags=tags, params=params)
    tracking.log_json_artifact(client, run_id, spec, "sweep.json")
    return run_id


def trial_run(
    client: MlflowClient,
    workspace: Workspace,
    *,
    experiment: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any],
) -> str:
    """A new run for one trial (``tags`` name its parent, sweep, cell and trial), with
    ``params`` (the cell's budget as numbers) logged before training starts."""
    experiment_id = tracking.ensure_experiment(experiment, workspace)
    return tracking.create_run(client, experiment_id, name=name, tags=tags, params=params)


def set_run_state(client: MlflowClient, run_id: str, status: str, **tags: str) -> None:
    """Tag the run (``trial_state``, ``failure_reason``...) and end it with ``status``."""
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)


def kill_run(
    client: MlflowClient, run_id: str, reason: str, statuses: tuple[str, ...] = ("RUNNING",)
) -> None:
    """End a run in one of ``statuses`` as KILLED with ``reason`` (no-op if it is absent)."""
    try:
        run = client.get_run(run_id)
    except Exception:
        return  # the run was never written (e.g. killed during creation)
    if run.info.status in statuses:
        set_run_state(client, run_id, "KILLED", failure_reason=reason, trial_state="FAIL")


def running_runs(client: MlflowClient, experiment: str, sweep: str) -> list[tuple[str, dict]]:
    """(run id, tags) of every run of ``sweep`` still RUNNING."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.sweep = '{sweep}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    return [(run.info.run_id, dict(run.data.tags)) for run in runs]
