"""``scalelab fit|predict|backtest|ui`` as a user runs them: output and exit codes, in this
process (:mod:`in_process`), and in real processes where the process is the point (its exit,
its imports, a server)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from in_process import scalelab
from test_query_data import KNOWN, make_experiment, shared_sweep, synthetic_runs, write_csv

from scalelab.workspace import Workspace

SCALELAB = [sys.executable, "-m", "scalelab"]
HEAVY = ("torch", "lightning", "mlflow")


def run_cli(args: list[str], ws: Workspace) -> subprocess.CompletedProcess:
    """``scalelab ARGS`` on workspace ``ws``, in this process."""
    return scalelab(args, ws.root)


def run_process(
    args: list[str], ws: Workspace, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``scalelab ARGS`` on workspace ``ws``, in a process of its own."""
    env = {**os.environ, "SCALELAB_HOME": str(ws.root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        SCALELAB + args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    """The workspace of the synthetic sweep and the run id of its logged fit."""
    sweep = shared_sweep(tmp_path_factory)
    return sweep.ws, sweep.fit_run_id


def test_fit_recovers_the_known_law_and_logs_a_fit_run(fitted: tuple[Workspace, str]) -> None:
    import mlflow

    from scalelab.results.runs import mlflow_runs

    ws, run_id = fitted
    run = mlflow.MlflowClient(ws.tracking_uri).get_run(run_id)
    assert run.data.tags["kind"] == "fit" and run.info.status == "FINISHED"
    for name, value in KNOWN.params.items():
        assert run.data.metrics[f"law/{name}"] == pytest.approx(value, rel=1e-3)
        assert run.data.metrics[f"law/{name}_lo"] <= run.data.metrics[f"law/{name}_hi"]
    artifacts = {a.path for a in mlflow.MlflowClient(ws.tracking_uri).list_artifacts(run_id)}
    assert {"fit.json", "law.json", "parameters.csv", "dashboard.html"} <= artifacts
    law = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="law.json", tracking_uri=ws.tracking_uri
            )
        ).read_text()
    )
    assert law["params"] == pytest.approx(KNOWN.params, rel=1e-3)
    # The fit run has no 'loss' metric, so it is not mistaken for a training run.
    assert len(mlflow_runs("syn", ws)) == 15


def test_fit_prints_the_parameter_table_and_allocation(tmp_path: Path, workspace: Workspace):
    csv = write_csv(tmp_path / "runs.csv")
    args = ["fit", "--csv", str(csv), "--law", "chinchilla", "--resamples", "4", "--jobs", "1"]
    result = run_cli([*args, "--no-log"], workspace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("chinchilla: L(N, D) = 1.5 + 40·N^-0.3 + 120·D^-0.3")
    table = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.startswith("  ") and line.split()[0] in KNOWN.params
    }
    assert {k: float(v) for k, v in table.items()} == pytest.approx(KNOWN.params, rel=1e-3)
    assert any("N_opt(C) = " in line for line in lines)
    assert any("D_opt(C) = " in line for line in lines)


@pytest.mark.parametrize(
    ("args", "key", "expected"),
    [
        (
            ["--params", "1e6", "--tokens", "2e8"],
            "loss",
            float(KNOWN.predict(n_params=1e6, tokens=2e8)),
        ),
        (["--compute", "1e15"], "n_params", float(KNOWN.optimal_allocation(1e15)[0])),
        (["--compute", "1e15"], "loss", float(KNOWN.loss_at_compute(1e15))),
        (["--loss", "3.0"], "compute", KNOWN.compute_for_loss(3.0)),
    ],
)
def test_predict_returns_the_known_law_value(fitted, args, key, expected) -> None:
    ws, run_id = fitted
    out = last_json(run_cli(["predict", "--experiment", "syn", *args, "--json"], ws))
    pred = out["predictions"][key]
    assert pred["value"] == pytest.approx(expected, rel=1e-3)
    # Exact data: the bootstrap interval is a hair wide, up to float round-off around the value.
    assert pred["lo"] <= pred["value"] * (1 + 1e-9) and pred["hi"] >= pred["value"] * (1 - 1e-9)
    assert out["fit"]["run_id"] == run_id
    assert out["warnings"] == []


def test_predict_from_a_fit_run_id_and_from_a_csv(fitted, tmp_path: Path) -> None:
    ws, run_id = fitted
    query = ["--params", "1e6", "--tokens", "2e8", "--json"]
    expected = float(KNOWN.predict(n_params=1e6, tokens=2e8))
    by_run = last_json(run_cli(["predict", "--fit", run_id, *query], ws))
    assert by_run["predictions"]["loss"]["value"] == pytest.approx(expected, rel=1e-3)
    csv = write_csv(tmp_path / "runs.csv")
    query += ["--law", "chinchilla"]
    first = run_cli(["predict", "--csv", str(csv), *query], ws)
    assert "fitting chinchilla" in first.stderr  # fitted once...
    assert last_json(first)["predictions"]["loss"]["value"] == pytest.approx(expected, rel=1e-3)
    again = run_cli(["predict", "--csv", str(csv), *query], ws)
    assert "fitting" not in again.stderr  # ...then read from the cache
    assert last_json(again) == last_json(first)


def test_predict_warns_past_1000x_the_largest_fitted_compute(fitted) -> None:
    ws, _ = fitted
    result = run_cli(["predict", "--experiment", "syn", "--compute", "1e19"], ws)
    assert result.returncode == 0, result.stderr
    assert "warning: extrapolates" in result.stderr and "past the largest fitted compute" in (
        result.stderr
    )
    assert "N_opt" in result.stdout and "loss" in result.stdout


def test_predict_on_a_stored_fit_loads_numpy_not_the_fitting_stack(fitted) -> None:
    """A query evaluates a stored law: no torch, MLflow, pandas or scipy.optimize is executed.

    Importing those is most of what a query would cost (benchmarks/bench_predict.py measures it);
    pandas and scipy are bound lazily, so a module counts only once it has been executed.
    """
    ws, _ = fitted
    env = {**os.environ, "SCALELAB_HOME": str(ws.root)}
    argv = ["scalelab", "predict", "--experiment", "syn", "--compute", "1e15", "--json"]
    banned = (*HEAVY, "pandas", "pyarrow", "scipy.optimize", "scipy.interpolate")
    probe = (
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    runpy.run_module('scalelab', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "loaded = sorted(name for name, mod in list(sys.modules.items())\n"
        f"    if any(name == b or name.startswith(b + '.') for b in {banned!r})\n"
        "    and type(mod).__name__ != '_LazyModule')\n"
        "print(loaded, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(done.stdout)["predictions"]["loss"]["value"] > 0
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_help_imports_nothing_heavy(workspace: Workspace) -> None:
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "scalelab", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for command in ("fit", "predict", "backtest", "dashboard", "ui"):
        assert command in done.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {*HEAVY, "pandas", "plotly", "optuna", "scipy"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--params", "-7e9", "--tokens", "1e12"], "--params must be positive"),
        (["--compute", "0"], "--compute must be positive"),
        (["--compute", "1e24", "--params", "7e9"], "give --compute alone"),
        (["--params", "7e9"], "needs --params and --tokens"),
        (["--loss", "2", "--compute", "1e20"], "--loss cannot be combined"),
        (
            ["--experiment", "nothing-here", "--compute", "1e24"],
            "no fit found for experiment 'nothing-here'",
        ),
        (["--law", "kaplan", "--compute", "1e24"], "no fit found for experiment 'syn' with law"),
        (["--law", "quadratic", "--compute", "1e24"], "--law must be one of"),
        (["--fit", "0123abcd", "--compute", "1e24"], "no MLflow run '0123abcd'"),
        (
            ["--experiment", "syn", "--fit", "0123abcd", "--compute", "1e24"],
            "give one of --experiment, --fit and --csv",
        ),
    ],
)
def test_predict_bad_arguments_exit_2_with_one_line(fitted, args, needle, monkeypatch) -> None:
    # In-process (typer's runner) for speed; the subprocess test below checks the real exit.
    from typer.testing import CliRunner

    from scalelab.cli import app

    ws, _ = fitted
    monkeypatch.setenv("SCALELAB_HOME", str(ws.root))
    if "--experiment" not in args and "--fit" not in args:
        args = [*args, "--experiment", "syn"]
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_predict_bad_arguments_exit_2_in_a_real_process(fitted) -> None:
    ws, _ = fitted
    for args, needle in (
        (["--params", "-7e9", "--tokens", "1e12"], "--params must be positive"),
        (["--compute", "1e24", "--params", "7e9"], "give --compute alone"),
    ):
        result = run_process(["predict", "--experiment", "syn", *args], ws)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--law", "cubic"], "--law must be one of"),
        (["--exclude-before", "0.5"], "final losses only"),
        (["--resamples", "1"], "--resamples must be at least 2"),
    ],
)
def test_fit_bad_arguments_exit_2(tmp_path: Path, workspace: Workspace, args, needle) -> None:
    csv = write_csv(tmp_path / "runs.csv")
    result = run_cli(["fit", "--csv", str(csv), "--no-log", *args], workspace)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_fit_of_an_experiment_takes_the_best_trial_of_each_cell(workspace: Workspace) -> None:
    """As a sweep's own fit does; --all-trials fits every run with a loss."""
    from mlflow.entities import Metric, Param

    from scalelab.results import tracking

    make_experiment(workspace, name="trials")
    # A second, worse trial in the first cell (another learning rate, say).
    best = synthetic_runs().iloc[0]
    client = tracking.client(workspace)
    exp_id = tracking.ensure_experiment("trials", workspace)
    run = client.create_run(exp_id, tags={"sweep": "trials", "cell": best.run_id, "trial": "15"})
    params = {"n_params": int(best.n_params), "tokens": best.tokens, "compute": best.compute}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("loss", best.loss + 0.5, 0, 10)],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id)
    args = ["fit", "--experiment", "trials", "--law", "chinchilla", "--no-log"]
    args += ["--resamples", "4", "--jobs", "1"]
    cells = last_json(run_cli([*args, "--json"], workspace))
    assert cells["data"]["n_runs"] == 15
    fitted = {k: v["estimate"] for k, v in cells["params"].items()}
    assert fitted == pytest.approx(KNOWN.params, rel=1e-3)
    every = last_json(run_cli([*args, "--all-trials", "--json"], workspace))
    assert every["data"]["n_runs"] == 16


def _plateau_csv(path: Path, *, unigram: bool) -> Path:
    """Runs on the plateau law L(C) = E + (L0 - E)/(1 + (C/C0)^alpha), L0 = 3.2."""
    import pandas as pd

    rows = []
    for i, c in enumerate(np.geomspace(1e11, 1e15, 15)):
        n = 1e4 * (1 + i)
        rows.append(
            {"run_id": f"p{i}", "n_params": n, "tokens": c / (6 * n), "compute": c}
            | {"loss": 1.6 + (3.2 - 1.6) / (1 + (c / 1e13) ** 0.5)}
            | ({"unigram": 3.2} if unigram else {})
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_plateau_law_needs_the_unigram_entropy(tmp_path: Path, workspace: Workspace) -> None:
    args = ["fit", "--law", "plateau", "--no-log", "--resamples", "4", "--jobs", "1"]
    csv = _plateau_csv(tmp_path / "plateau.csv", unigram=True)
    out = last_json(run_cli([*args, "--csv", str(csv), "--json"], workspace))
    fitted = {k: v["estimate"] for k, v in out["params"].items()}
    assert fitted == pytest.approx({"E": 1.6, "C0": 1e13, "alpha": 0.5}, rel=1e-2)
    bare = _plateau_csv(tmp_path / "bare.csv", unigram=False)
    result = run_cli([*args, "--csv", str(bare)], workspace)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unigram" in lines[0] and "Traceback" not in result.stderr


def test_backtest_prints_the_table(tmp_path: Path, workspace: Workspace) -> None:
    csv = write_csv(tmp_path / "runs.csv")
    args = [
        "backtest",
        "--csv",
        str(csv),
        "--ratio",
        "10",
        "--law",
        "chinchilla",
        "--resamples",
        "4",
        "--jobs",
        "1",
    ]
    result = run_cli(args, workspace)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "median |err|" in line)
    assert "coverage" in header
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["10"]]
    assert {row[2] for row in rows} == {"chinchilla", "best_so_far"}
    # Fitted on the runs below C_max/10 of an exact law, the law predicts the rest exactly.
    summary = last_json(run_cli([*args, "--json"], workspace))["summary"]
    law = next(s for s in summary if s["law"] == "chinchilla")
    assert law["n_train"] == 10 and law["n_test"] == 5
    assert law["max_abs_rel_error"] < 1e-3
    assert next(s for s in summary if s["law"] == "best_so_far")["max_abs_rel_error"] > 0.01


def test_backtest_bad_ratio_exits_2(tmp_path: Path, workspace: Workspace) -> None:
    csv = write_csv(tmp_path / "runs.csv")
    result = run_cli(["backtest", "--csv", str(csv), "--ratio", "0.5"], workspace)
    assert result.returncode == 2 and "--ratio must be greater than 1" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_processes(port: int) -> list[int]:
    """Pids of MLflow/uvicorn/gunicorn processes started with ``port`` on their command line."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if str(port) in argv and any(
            k in " ".join(argv) for k in ("mlflow", "uvicorn", "gunicorn")
        ):
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_ui_answers_on_localhost_and_stops_cleanly(workspace: Workspace) -> None:
    port = _free_port()
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root)}
    proc = subprocess.Popen(
        [*SCALELAB, "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert url in proc.stdout.readline()
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert _server_processes(port)  # the probe below sees the server while it runs
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)  # to scalelab only: it must stop the server's group
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"port {port} still answers after scalelab ui stopped")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Nothing of the server (it ran in its own process group) is left behind.
    assert _server_processes(port) == []


def test_ui_refuses_a_port_in_use(workspace: Workspace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # A real process: were the port not checked, the server would start and not return.
        result = run_process(["ui", "--port", str(port)], workspace)
    assert result.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in result.stderr


def test_law_auto_is_the_default_and_says_which_law_and_why(
    tmp_path: Path, workspace: Workspace
) -> None:
    from scalelab.forecast.chooser import stored_rule

    csv = write_csv(tmp_path / "runs.csv")
    args = ["fit", "--csv", str(csv), "--resamples", "4", "--jobs", "1", "--no-log"]
    text = run_cli(args, workspace)
    assert text.returncode == 0, text.stderr
    line = text.stdout.splitlines()[0]
    assert line.startswith("law auto: ") and "because" in line and stored_rule().describe() in line
    out = last_json(run_cli([*args, "--json"], workspace))
    choice = out["choice"]
    assert out["requested"] == "auto" and out["law_key"] == choice["law_key"]
    assert choice["form"] in line and choice["reason"] in line
    # predict answers from the auto fit with the same line, its interval widened by the
    # benchmark's form error beyond the fitted compute, and says so in --json.
    query = ["predict", "--csv", str(csv), "--compute", "1e17"]
    said = run_cli(query, workspace)
    assert said.returncode == 0, said.stderr
    assert line in said.stdout.splitlines()
    answer = last_json(run_cli([*query, "--json"], workspace))
    assert answer["fit"]["choice"] == choice
    assert answer["calibration"]["decades"] > 0 and answer["calibration"]["per_decade"] > 0


def test_backtest_auto_chooses_on_each_cut(tmp_path: Path, workspace: Workspace) -> None:
    csv = write_csv(tmp_path / "runs.csv")
    args = ["backtest", "--csv", str(csv), "--ratio", "10", "--resamples", "4", "--jobs", "1"]
    result = run_cli(args, workspace)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("ratio 10: law auto chose ") for line in result.stdout.splitlines())
    summary = last_json(run_cli([*args, "--json"], workspace))["summary"]
    auto = next(s for s in summary if s["law"] == "auto")
    assert auto["chosen"] and "rule" in auto["reason"]
