"""Pre-registered forecasts in MLflow: a finished ``kind=forecast`` run holds the prediction
before the run it predicts starts; the outcome is recorded on it afterwards.

A forecast run is found again by its ladder's fingerprint and its target compute, so a study
that is run again reuses what was logged (never a recomputed forecast). Its target is a
training run tagged ``kind=target`` and ``forecast_run_id``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from scalelab.results import tracking
from scalelab.workspace import Workspace

FORECAST_ARTIFACT = "forecast.json"


def _experiment_id(workspace: Workspace, experiment: str) -> str:
    return tracking.ensure_experiment(experiment, workspace)


def _first(workspace: Workspace, experiment: str, filter_string: str) -> str | None:
    client = tracking.client(workspace)
    runs = client.search_runs(
        [_experiment_id(workspace, experiment)], filter_string=filter_string, max_results=1
    )
    return runs[0].info.run_id if runs else None


def find_forecast(
    workspace: Workspace, experiment: str, ladder: str, target_compute: float
) -> str | None:
    """The forecast run of ``ladder`` (a fingerprint) for ``target_compute``, if logged."""
    return _first(
        workspace,
        experiment,
        f"tags.kind = 'forecast' AND tags.ladder = '{ladder}' AND "
        f"tags.target_compute = '{target_compute:.6g}'",
    )


def find_target(workspace: Workspace, experiment: str, forecast_run_id: str) -> str | None:
    """The finished target run of a forecast, if it was trained."""
    return _first(
        workspace,
        experiment,
        f"tags.kind = 'target' AND tags.forecast_run_id = '{forecast_run_id}' "
        "AND attributes.status = 'FINISHED'",
    )


def log_forecast(
    workspace: Workspace,
    experiment: str,
    *,
    name: str,
    ladder: str,
    target_compute: float,
    params: dict[str, Any],
    metrics: dict[str, float],
    record: dict[str, Any],
) -> str:
    """A finished ``kind=forecast`` run with ``params``, ``metrics`` (``predicted_loss``...)
    and ``record`` as ``forecast.json``; returns its id."""
    client = tracking.client(workspace)
    run_id = tracking.create_run(
        client,
        _experiment_id(workspace, experiment),
        name=name,
        tags={
            "kind": "forecast",
            "target_compute": f"{target_compute:.6g}",
            "ladder": ladder,
            "forecast_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        params=params,
    )
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    tracking.log_json_artifact(client, run_id, record, FORECAST_ARTIFACT)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def load_forecast(workspace: Workspace, run_id: str) -> dict[str, Any]:
    """The ``forecast.json`` record of a forecast run, as it was logged."""
    path = tracking.client(workspace).download_artifacts(run_id, FORECAST_ARTIFACT)
    return json.loads(Path(path).read_text())


def record_outcome(
    workspace: Workspace, forecast_run_id: str, target_run_id: str, metrics: dict[str, float]
) -> None:
    """Tag the forecast with its target and log how it did (``actual_loss``, ``error``...)."""
    client = tracking.client(workspace)
    client.set_tag(forecast_run_id, "target_run_id", target_run_id)
    for key, value in metrics.items():
        client.log_metric(forecast_run_id, key, value)


def final_metrics(workspace: Workspace, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run (``loss``, ``wall_time``...)."""
    return dict(tracking.client(workspace).get_run(run_id).data.metrics)
