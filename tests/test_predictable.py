"""The predictable-scaling study end to end, reduced: a ladder up to 1e10 FLOPs forecasts a
1e12-FLOP run (100x), logs the forecast before training it, and the interval covers it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from scalelab.studies.predictable import run_study
from scalelab.sweep.spec import load_spec
from scalelab.workspace import Workspace

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_reduced_study_forecasts_a_100x_run_before_training_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    spec = yaml.safe_load((SWEEPS / "predictable-scaling-ci.yaml").read_text())
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    study = run_study(path, [1e12], workspace, workers=1, echo=lines.append)
    print("\n".join(lines))

    (outcome,) = study["outcomes"]
    ladder_max = study["cells"]["compute_full"].max()
    assert outcome.plan.compute_full / ladder_max > 90
    assert outcome.forecast.lo <= outcome.actual <= outcome.forecast.hi, lines
    assert abs(outcome.error) < 0.25, lines  # 100x beyond a tiny ladder: see the report

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    forecast = client.get_run(outcome.forecast_run_id)
    target = client.get_run(outcome.target_run_id)
    assert forecast.data.tags["kind"] == "forecast"
    assert target.data.tags["forecast_run_id"] == forecast.info.run_id
    # The record shows the forecast came first: it was finished before the target started.
    assert forecast.info.end_time <= target.info.start_time
    assert forecast.data.metrics["predicted_loss"] == pytest.approx(outcome.forecast.loss)
    assert forecast.data.metrics["actual_loss"] == pytest.approx(outcome.actual)
    assert forecast.data.metrics["covered"] == 1.0
    # The target never saw a token twice and used the full-FLOPs plan.
    assert target.data.params["compute_full"] == str(outcome.plan.compute_full)
    assert len(outcome.curve) >= 5

    # Running again reuses the ladder, the forecast and the target: nothing is trained twice.
    again = run_study(path, [1e12], workspace, workers=1, echo=lines.append)
    assert again["outcomes"][0].forecast_run_id == outcome.forecast_run_id
    assert again["outcomes"][0].target_run_id == outcome.target_run_id
    assert load_spec(path).name in again["sweeps"]
