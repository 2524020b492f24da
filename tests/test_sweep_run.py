"""Sweeps as users run them: real processes, SIGKILL mid-trial, resume, several workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from in_process import scalelab
from optuna.trial import TrialState

from scalelab.sweep.storage import open_storage
from scalelab.workspace import Workspace

# Heartbeats and their retry callback are marked experimental in Optuna; they are what we use.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SCALELAB = [sys.executable, "-m", "scalelab"]


def write_spec(path: Path, name: str, sizes: list[str], steps: int, **extra: object) -> Path:
    spec = {
        "name": name,
        "corpus": "stdlib-notests",
        "context": 64,
        "sizes": sizes,
        "budgets": {"tokens": [64 * 8 * steps]},
        "search": {
            "sampler": "random",
            "trials": 2,
            "lr": {"low": 1e-3, "high": 1e-2},
            "batch_size": 8,
        },
        "validations": 2,
        "train": {"val_tokens": 64 * 32},
        "heartbeat": {"interval": 1, "grace": 4, "max_retry": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(args: list[str], workspace: Workspace, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root), "OMP_NUM_THREADS": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(SCALELAB + args, env=env, text=True, **kwargs)


def cell_trials(url: str, sweep: str) -> dict[str, list]:
    """Every cell study of ``sweep`` and its trials, read straight from the storage."""
    storage = open_storage(url)
    try:
        return {
            study.study_name: storage.get_all_trials(study._study_id)
            for study in storage.get_all_studies()
            if study.study_name.startswith(f"{sweep}/")
        }
    finally:
        # Polled every 0.3 s: an RDB storage left open keeps its connection pool, and
        # PostgreSQL refuses clients past max_connections ("too many clients already").
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


def child_runs(tracking_uri: str, experiment: str):
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.sweep_role"].isna()] if "tags.sweep_role" in runs else runs


def assert_sweep_exact(url: str, sweep: str, cells: int, trials: int, tracking_uri: str):
    """Exactly ``trials`` completed trials per cell, each with one finished MLflow run, and no
    run left RUNNING."""
    studies = cell_trials(url, sweep)
    assert len(studies) == cells
    complete = {}
    for name, ts in studies.items():
        done = [t for t in ts if t.state == TrialState.COMPLETE]
        assert len(done) == trials, (name, [(t.number, t.state.name) for t in ts])
        assert sorted(t.user_attrs["slot"] for t in done) == list(range(trials))
        assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        complete.update({t.user_attrs["mlflow_run_id"]: (name, t.number) for t in done})
    runs = child_runs(tracking_uri, sweep)
    assert not (runs.status == "RUNNING").any(), runs[["run_id", "status"]]
    finished = runs[runs.status == "FINISHED"]
    assert sorted(finished.run_id) == sorted(complete)  # one run per completed trial
    for _, run in finished.iterrows():
        name, number = complete[run.run_id]
        assert name == f"{sweep}/{run['tags.cell']}"
        assert int(run["tags.trial"]) == number
    parent = mlflow.search_runs(
        experiment_names=[sweep], filter_string="tags.sweep_role = 'parent'"
    )
    assert list(parent.status) == ["FINISHED"]
    return studies, runs


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["one-at-a-time", "grouped"])
def test_sigkill_mid_trial_then_resume_trains_exactly_what_was_asked(
    workspace: Workspace, tmp_path: Path, group: bool
) -> None:
    """Killed mid-trial, then resumed: every trial the worker held (one, or a whole group:
    a size's two trials) is retried with its parameters, and nothing else is."""
    spec = write_spec(tmp_path / "kill.yaml", "killme", ["n10k", "n30k"], steps=200, group=group)
    url = f"journal:{workspace.root / 'optuna-journal.log'}"
    log = (tmp_path / "first.log").open("w")
    first = cli(["sweep", "run", str(spec)], workspace, stdout=log, stderr=subprocess.STDOUT)
    victims: list = []
    deadline = time.monotonic() + 240
    while not victims and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
        if not Path(url.removeprefix("journal:")).exists():
            continue
        running = [
            (name, t)
            for name, ts in cell_trials(url, "killme").items()
            for t in ts
            if t.state == TrialState.RUNNING
        ]
        if any(t.intermediate_values for _, t in running):  # past a first validation
            victims = running
    assert victims, (tmp_path / "first.log").read_text()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert len(victims) == (2 if group else 1)
    client = mlflow.MlflowClient(workspace.tracking_uri)
    for _, victim in victims:
        assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "RUNNING"

    second = cli(
        ["sweep", "run", str(spec)], workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    assert "cells 2/2 done" in out
    studies, runs = assert_sweep_exact(url, "killme", 2, 2, workspace.tracking_uri)
    trials = [t for ts in studies.values() for t in ts]
    assert Counter(t.state for t in trials) == {
        TrialState.COMPLETE: 4,
        TrialState.FAIL: len(victims),
    }
    for study, victim in victims:
        retry = next(
            t
            for t in studies[study]
            if t.system_attrs.get("failed_trial") == victim.number
            and t.user_attrs["slot"] == victim.user_attrs["slot"]
        )
        assert retry.params == victim.params  # the same trial again, not a new one
        killed = runs[runs.run_id == victim.user_attrs["mlflow_run_id"]].iloc[0]
        assert killed.status == "KILLED"
        assert "queued again" in killed["tags.failure_reason"]

    # A third run finds every cell done: it trains nothing and logs no new run.
    third = cli(
        ["sweep", "run", str(spec)], workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out
    assert "(2 cells done)" in out and "trial 0:" not in out
    assert sum(len(ts) for ts in cell_trials(url, "killme").values()) == 4 + len(victims)
    assert len(child_runs(workspace.tracking_uri, "killme")) == len(runs)


@pytest.mark.slow
def test_two_local_workers_complete_exactly_the_requested_trials(
    workspace: Workspace, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "two.yaml", "two", ["n10k", "n30k", "n100k"], steps=12)
    url = f"journal:{workspace.root / 'optuna-journal.log'}"
    run = cli(
        ["sweep", "run", str(spec), "--workers", "2"],
        workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    assert out.count("joined sweep two") == 2
    studies, runs = assert_sweep_exact(url, "two", 3, 2, workspace.tracking_uri)
    assert len(runs) == 6
    assert all(t.state == TrialState.COMPLETE for ts in studies.values() for t in ts)
    # Every trial trained the cell's budget: one D per cell, whatever its batch size.
    assert set(runs["params.tokens"]) == {str(64 * 8 * 12)}


def test_status_of_an_unknown_sweep_exits_2(workspace: Workspace) -> None:
    result = scalelab(["sweep", "status", "nothing-here"], workspace.root)
    assert result.returncode == 2
    assert "no sweep named 'nothing-here'" in result.stderr


# --- Several machines: Optuna on PostgreSQL, MLflow behind a tracking server ---------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with databases ``optuna`` and ``mlflow``;
    yields its URL without a database."""
    import psycopg2

    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (.ci/run installs the postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="scalelab-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run(
            [
                *as_owner,
                bindir / "initdb",
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *as_owner,
                bindir / "pg_ctl",
                "-D",
                data,
                "-l",
                root / "log",
                "-w",
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE optuna")
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_owner, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tracking_server(postgres: str, tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 storing runs in PostgreSQL; yields its URI once /health
    answers (the first answer takes 13-17 s here)."""
    port = _free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [
            Path(sys.executable).parent / "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; name the installed driver.
            f"{postgres.replace('postgresql://', 'postgresql+psycopg2://')}/mlflow",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "mlflow server did not start:\n"
                    + (tmp_path / "mlflow-server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_workers_on_two_machines_share_postgres_and_a_tracking_server(
    postgres: str,
    tracking_server: str,
    workspace: Workspace,
    token_cache: Path,
    tmp_path: Path,
) -> None:
    """A coordinator watching (``--workers 0``) and two ``sweep worker`` processes, each with
    its own workspace as on separate machines; one worker is SIGKILLed mid-trial and the
    other finishes the sweep, retrying the lost trial."""
    # One trial at a time, so the killed worker held exactly one.
    spec = write_spec(tmp_path / "dist.yaml", "dist", ["n10k", "n30k"], steps=200, group=False)
    storage = f"{postgres}/optuna"
    machines = []
    for name in ("machine-a", "machine-b"):
        root = tmp_path / name
        root.mkdir()
        (root / "cache").symlink_to(token_cache, target_is_directory=True)
        machines.append(root)

    def start(args: list[str], home: Path, log: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "SCALELAB_HOME": str(home),
            "MLFLOW_TRACKING_URI": tracking_server,
            "OMP_NUM_THREADS": "1",
        }
        out = (tmp_path / log).open("w")
        return subprocess.Popen(
            SCALELAB + args, env=env, text=True, stdout=out, stderr=subprocess.STDOUT
        )

    coordinator = start(
        ["sweep", "run", str(spec), "--workers", "0", "--storage", storage],
        workspace.root,
        "coordinator.log",
    )
    doomed = start(
        ["sweep", "worker", str(spec), "--storage", storage, "--threads", "1"],
        machines[0],
        "worker-a.log",
    )
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.3)
        for ts in cell_trials(storage, "dist").values():
            for t in ts:
                if t.state == TrialState.RUNNING and t.intermediate_values:
                    victim = t
    assert victim is not None, (tmp_path / "worker-a.log").read_text()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    survivor = start(
        ["sweep", "worker", "dist", "--storage", storage, "--threads", "1"],
        machines[1],
        "worker-b.log",
    )
    assert survivor.wait(timeout=600) == 0, (tmp_path / "worker-b.log").read_text()
    assert coordinator.wait(timeout=300) == 0, (tmp_path / "coordinator.log").read_text()

    studies, runs = assert_sweep_exact(
        storage, "dist", cells=2, trials=2, tracking_uri=tracking_server
    )
    killed = runs[runs.run_id == victim.user_attrs["mlflow_run_id"]].iloc[0]
    assert killed.status == "KILLED"
    trials = [t for ts in studies.values() for t in ts]
    assert sum(t.state == TrialState.FAIL for t in trials) == 1
    assert "cells 2/2 done" in (tmp_path / "coordinator.log").read_text()
    # The worker that finished ran where the first one could not.
    assert "trial" in (tmp_path / "worker-b.log").read_text()
