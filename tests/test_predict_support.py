"""Answers the fitted runs contradict are flagged; a fit's warnings reach every answer; a query
without an experiment uses the newest fit and says which."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from scalelab.forecast.support import absurd_allocation, beaten_by_a_run, undominated_runs
from scalelab.results.fits import FitStore, fit_table
from scalelab.results.runs import read_csv_table
from scalelab.workspace import Workspace
from tests.test_query_cli import run_cli
from tests.test_query_data import write_csv


def test_frontier_keeps_only_runs_no_smaller_run_beats() -> None:
    points = pd.DataFrame(
        {
            "n_params": [1e4, 1e4, 2e4, 2e4, 4e4],
            "tokens": [1e6, 2e6, 1e6, 2e6, 2e6],
            "loss": [3.0, 2.8, 3.1, 2.6, 2.7],  # (2e4, 1e6) is beaten by (1e4, 1e6)
        }
    )
    points["compute"] = 6 * points.n_params * points.tokens
    front = undominated_runs(points)
    cells = {(n, d) for n, d, _, _ in front}
    assert cells == {(1e4, 1e6), (1e4, 2e6), (2e4, 2e6)}  # (4e4, 2e6) is beaten by (2e4, 2e6)
    assert undominated_runs(points[["compute", "loss"]])[0][2:] == [6 * 2e4 * 2e6, 2.6]


def test_a_prediction_worse_than_a_smaller_run_is_flagged_beyond_the_noise() -> None:
    runs = [[4.6e5, 1.6e6, 4.4e12, 1.904]]
    why = beaten_by_a_run(runs, 1.915 * 1.05, rmse=0.005, n_params=1e9, tokens=2e10)
    assert why is not None and "1.904" in why
    assert beaten_by_a_run(runs, 1.915, rmse=0.005, n_params=1e9, tokens=2e10) is None  # noise
    assert beaten_by_a_run(runs, 2.5, rmse=0.005, n_params=1e5, tokens=2e10) is None  # smaller N
    assert beaten_by_a_run(runs, 2.5, rmse=0.005, compute=1e13) is not None
    assert beaten_by_a_run(runs, 2.5, rmse=0.005, compute=1e12) is None


def test_an_allocation_outside_published_ratios_or_shrinking_is_flagged() -> None:
    assert absurd_allocation(1e9, 2e10, 0.5, 0.5) is None
    assert "tokens per parameter" in absurd_allocation(4.6e12, 3.7e7, 0.5, 0.5)
    assert "exponents" in absurd_allocation(1e9, 2e10, 1.1, -0.1)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):
    csv = write_csv(tmp_path_factory.mktemp("runs") / "runs.csv")
    return fit_table(read_csv_table(csv), experiment="syn", law="chinchilla", n_resamples=8)


def test_answers_are_checked_against_the_fitted_runs(stored) -> None:
    assert stored.data["frontier"]  # stored with the fit
    fine = stored.answer(params=1e9, tokens=2e10)
    assert fine.unsupported == [] and fine.to_dict()["supported"] is True
    # A small run that already beat what the law predicts for a far larger model.
    beaten = replace(stored, data={**stored.data, "frontier": [[1e4, 1e6, 6e10, 0.5]]})
    answer = beaten.answer(params=1e9, tokens=2e10)
    assert answer.unsupported and answer.to_dict()["supported"] is False
    assert beaten.answer(compute=1e21).unsupported
    assert any(line.startswith("  NOT SUPPORTED") for line in answer.lines())


def test_predict_prints_the_fits_warnings_and_uses_the_newest_fit(stored, tmp_path) -> None:
    ws = Workspace(tmp_path)
    store = FitStore(ws)
    store.save(replace(stored, experiment="older"))
    warned = replace(stored.boot, warnings=("beta is at its upper bound 5",))
    store.save(replace(stored, experiment="newer", boot=warned))
    done = run_cli(["predict", "--params", "1e9", "--tokens", "2e10"], ws)
    assert done.returncode == 0, done.stderr
    assert "latest fit in the workspace: experiment 'newer'" in done.stderr
    assert "warning: fit: beta is at its upper bound 5" in done.stderr  # plain text, not only JSON
    as_json = run_cli(["predict", "--experiment", "older", "--compute", "1e15", "--json"], ws)
    assert json.loads(as_json.stdout.splitlines()[-1])["warnings"] == []
    empty = run_cli(["predict", "--compute", "1e15"], Workspace(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no fit in the workspace" in empty.stderr
    assert "Traceback" not in empty.stderr
