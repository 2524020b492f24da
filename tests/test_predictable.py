"""The second predictable-scaling study end to end, reduced: a ladder up to 1e10 FLOPs in the
target's shape family forecasts a 1e12-FLOP run (100x) with the benchmarked engine, logs the
forecast (and the secondary laws') before training it, and scores it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from scalelab.results.forecasts import load_forecast
from scalelab.studies.predictable_v2 import run_study_v2
from scalelab.sweep.spec import load_spec
from scalelab.workspace import Workspace

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.slow
@pytest.mark.longest
@pytest.mark.timeout(1200)
def test_reduced_study_forecasts_a_100x_run_before_training_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    spec = yaml.safe_load((SWEEPS / "predictable-scaling-v2-ci.yaml").read_text())
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    study = run_study_v2(path, [1e12], workspace, workers=1, seeds=(1,), best=1, echo=lines.append)
    print("\n".join(lines))

    (outcome,) = study["outcomes"]
    front, cells = study["frontier"], study["cells"]
    assert outcome.plan.compute_full / front["compute_full"].max() > 90
    # One shape family from the smallest ladder model to the target.
    assert set(cells["n_layer"]) == {2} and (outcome.plan.n_layer, outcome.plan.n_head) == (2, 1)
    # Each budget's best cell was re-run with a new seed and its loss is the seeds' mean.
    assert len(study["reruns"]) == front["budget"].nunique()
    reran = cells.dropna(subset=["seed_sd"])
    assert len(reran) == len(study["reruns"])
    assert all(len(losses) == 2 for losses in reran["seed_losses"])
    assert math.isfinite(study["noise"]["seed_sd"])
    # The law was chosen by the benchmark's rule, not by this ladder or the target.
    assert study["selection"].choice is not None
    assert outcome.forecast.candidate.startswith(study["selection"].chosen.name)
    assert outcome.forecast.lo <= outcome.actual <= outcome.forecast.hi, lines
    assert abs(outcome.error) < 0.5, lines  # 100x beyond a tiny ladder: see the report

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    forecast = client.get_run(outcome.forecast_run_id)
    target = client.get_run(outcome.target_run_id)
    assert forecast.data.tags["kind"] == "forecast"
    assert target.data.tags["forecast_run_id"] == forecast.info.run_id
    # The record shows the forecast came first: it was finished before the target started.
    assert forecast.info.end_time <= target.info.start_time
    assert forecast.data.metrics["predicted_loss"] == pytest.approx(outcome.forecast.loss)
    assert forecast.data.metrics["actual_loss"] == pytest.approx(outcome.actual)
    # The secondary laws were logged in the same record, with intervals.
    secondary = load_forecast(workspace, outcome.forecast_run_id)["secondary"]
    assert len(secondary) == 2
    odds = next(record for name, record in secondary.items() if name.startswith("odds"))
    assert odds["lo"] <= odds["loss"] <= odds["hi"]
    # A law with more parameters than this 4-budget ladder can backtest says why it has none.
    for record in secondary.values():
        assert ("loss" in record) != ("error" in record), record
    assert target.data.params["compute_full"] == str(outcome.plan.compute_full)
    assert len(outcome.curve) >= 5

    # Running again reuses the ladder, the re-runs, the forecast and the target.
    again = run_study_v2(path, [1e12], workspace, workers=1, seeds=(1,), best=1, echo=lines.append)
    assert again["reruns"] == study["reruns"]
    assert again["outcomes"][0].forecast_run_id == outcome.forecast_run_id
    assert again["outcomes"][0].target_run_id == outcome.target_run_id
    assert load_spec(path).name in again["sweeps"]
