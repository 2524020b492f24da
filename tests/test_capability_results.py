"""Per-problem evaluation results read back from MLflow (``scalelab.results.evals``), the
dashboard's capability panel, and the capability study's forecast and scoring pieces
(``scalelab.studies.capability``), on runs whose pass rates follow a known law."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from in_process import scalelab
from test_query_data import make_experiment, synthetic_runs

from scalelab.dashboard import build_dashboard
from scalelab.dashboard.definition import DashboardDefinition, Source
from scalelab.results import tracking
from scalelab.results.evals import per_problem, run_suites, suite_table
from scalelab.studies.capability import actual_values, problem_flags, suite_forecast
from scalelab.workspace import Workspace

ALPHA, K = 300.0, 0.25  # −mean log pass rate = ALPHA·C^-K over the solvable problems
PROBLEMS = 20


def known_rates(compute: float) -> np.ndarray:
    """Pass rates of ``PROBLEMS`` problems whose −mean log is exactly ALPHA·C^-K: each
    problem's −log rate is the mean scaled by a fixed factor (factors average to 1)."""
    factors = np.linspace(0.5, 1.5, PROBLEMS)
    return np.exp(-ALPHA * compute**-K * factors)


def suite_rows(compute: float, inverse: bool = False) -> pd.DataFrame:
    """One suite's table at ``compute``; with ``inverse`` one more problem that the smallest
    runs (1e12) never solve, so it stays outside the aggregate, and whose pass rate falls
    from 0.5 at 1e13 to 0.2 at 1e14 (inverse scaling)."""
    rates = known_rates(compute)
    if inverse:
        rates = np.append(rates, {12: 0.0, 13: 0.5, 14: 0.2}[round(math.log10(compute))])
    return pd.DataFrame(
        {
            "problem": np.arange(len(rates)),
            "passed": rates > 0.5,
            "pass_rate": rates,
            "completion": "x",
        }
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, list[str]]:
    """The synthetic sweep in MLflow, each run with an ``eval-brackets.csv`` of known rates
    (one store for the module's readers: a new one costs seconds)."""
    workspace = Workspace.resolve(tmp_path_factory.mktemp("cap") / "ws").ensure()
    ids = make_experiment(workspace, "cap")
    client = tracking.client(workspace)
    for run_id, compute in zip(ids, synthetic_runs()["compute"], strict=True):
        table = suite_rows(float(compute), inverse=True)
        tracking.log_table_artifact(client, run_id, table, "eval-brackets.csv")
        client.log_metric(run_id, "pass_at_1.brackets", float(table["pass_rate"].mean()))
    return workspace, ids


def test_per_problem_tables_come_back_from_mlflow(evaluated) -> None:
    ws, ids = evaluated
    assert run_suites(ws, ids[0]) == ["brackets"]
    runs = synthetic_runs().assign(run_id=ids)
    table = per_problem(ws, runs)
    assert len(table) == len(ids) * (PROBLEMS + 1)
    assert set(table.columns) == {"run_id", "compute", "suite", "problem", "passed", "pass_rate"}
    first = table[table["run_id"] == ids[0]]["pass_rate"].to_numpy()
    assert np.allclose(first[:-1], known_rates(float(runs["compute"].iloc[0])))
    with pytest.raises(ValueError, match="without the copy suite"):
        suite_table(ws, ids[0], "copy")


def test_predict_answers_a_capability_with_an_interval(evaluated) -> None:
    ws, _ = evaluated
    args = ["predict", "--experiment", "cap", "--compute", "1e16", "--json"]
    out = scalelab([*args, "--metric", "mean_log_pass.brackets"], ws.root)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    truth = ALPHA * 1e16**-K  # 100x beyond the largest run
    assert answer["value"] == pytest.approx(truth, rel=1e-3)
    # Exact data: the bootstrap's interval may shrink to the point (within rounding).
    assert answer["lo"] <= answer["value"] * (1 + 1e-9)
    assert answer["value"] <= answer["hi"] * (1 + 1e-9)
    assert answer["problems"] == list(range(PROBLEMS))  # the inverse one is never solved
    out = scalelab([*args, "--metric", "pass_at_1.brackets"], ws.root)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert 0 <= answer["lo"] <= answer["value"] <= answer["hi"] <= 1
    assert answer["value"] > float(known_rates(1e14).mean())  # more compute, more passes
    out = scalelab(args[:-1] + ["--metric", "mean_log_pass.copy"], ws.root)
    assert out.returncode == 2 and "evaluated on copy" in out.stderr


def test_the_dashboard_draws_problem_curves_and_the_fitted_aggregate(evaluated) -> None:
    ws, _ = evaluated
    definition = DashboardDefinition(
        title="capabilities", sources=[Source(experiment="cap")], panels=["capability"]
    )
    board = build_dashboard(definition, ws)
    assert board.notes == []
    [panel] = board.panels
    assert panel.title.startswith(f"brackets: {PROBLEMS + 1} problems, 1 non-monotone")
    names = [trace.name for trace in panel.figure.data]
    assert names.count(None) == PROBLEMS + 1  # one curve per problem
    fitted = [t for t in panel.figure.data if t.name and t.name.startswith("power_law")]
    assert len(fitted) == 1 and "0.25" in fitted[0].name  # the known exponent K


def test_the_capability_panel_says_why_it_is_left_out(workspace: Workspace, tmp_path) -> None:
    make_experiment(workspace, "plain")  # runs trained without evaluation suites
    csv = tmp_path / "runs.csv"
    synthetic_runs().to_csv(csv, index=False)
    definition = DashboardDefinition(
        title="t",
        sources=[Source(experiment="plain"), Source(csv=csv)],
        panels=["capability", "loss_vs_compute"],
    )
    board = build_dashboard(definition, workspace)
    assert "evaluation results" in board.left_out["capability"]
    assert any("eval-<suite>.csv" in note for note in board.problems)
    assert [p.key for p in board.panels] == ["loss_vs_compute"]


def _ladder(computes: list[float]) -> pd.DataFrame:
    frames = [
        suite_rows(c).assign(run_id=f"r{i}", compute=c, suite="s") for i, c in enumerate(computes)
    ]
    return pd.concat(frames, ignore_index=True)


def test_the_gpt4_form_forecast_recovers_a_known_law_100x_out() -> None:
    ladder = _ladder([1e9, 2e9, 4e9, 8e9, 1.6e10])
    target = 1.6e12
    result = suite_forecast(ladder, target)
    truth = ALPHA * target**-K
    assert result["problems"] == list(range(PROBLEMS))
    assert result["gpt4"]["value"] == pytest.approx(truth, rel=1e-3)
    # Exact data: every resample refits the same law, so the interval may shrink to a point.
    assert result["gpt4"]["lo"] <= truth * (1 + 1e-9)
    assert truth <= result["gpt4"]["hi"] * (1 + 1e-9)
    measured = actual_values(suite_rows(target), result["problems"])
    assert measured["gpt4"] == pytest.approx(truth, rel=1e-9)
    assert measured["sigmoid"] == pytest.approx(known_rates(target).mean())


def test_a_suite_nothing_solves_gets_no_forecast_and_says_why() -> None:
    ladder = _ladder([1e9, 2e9, 4e9]).assign(pass_rate=0.0, passed=False)
    result = suite_forecast(ladder, 1e12)
    assert "solve no problem" in result["gpt4"]["error"]
    assert "solve nothing yet" in result["sigmoid"]["error"]


def test_problem_flags_mark_inverse_and_abrupt_problems() -> None:
    rows = []
    for c, rates in [(1e9, [0.1, 0.8, 0.0]), (1e10, [0.2, 0.5, 0.1]), (1e11, [0.3, 0.4, 0.9])]:
        rows += [
            {"run_id": f"r{c:g}", "compute": c, "suite": "s", "problem": p, "pass_rate": r}
            for p, r in enumerate(rates)
        ]
    flags = problem_flags(pd.DataFrame(rows)).set_index("problem")
    assert flags["non_monotone"].tolist() == [False, True, False]
    assert flags["abrupt"].tolist() == [False, False, True]
    assert flags.loc[1, "first"] == 0.8 and flags.loc[1, "last"] == 0.4
