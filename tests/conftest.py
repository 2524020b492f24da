"""Shared fixtures: a fresh workspace per test, with one token cache for the whole session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalelab.workspace import Workspace

# Tests run on the CPU with two threads (the CI machine's cores), deterministically.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep one test's MLflow store from leaking into the next.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which the workspace honours.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of tokenized corpora shared by every test (building stdlib takes seconds)."""
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture
def workspace(tmp_path: Path, token_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A fresh workspace (own MLflow and Optuna stores) that shares the session token cache."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SCALELAB_HOME", str(tmp_path / "ws"))
    ws = Workspace.resolve(tmp_path / "ws").ensure()
    ws.cache_dir.rmdir()
    ws.cache_dir.symlink_to(token_cache, target_is_directory=True)
    return ws


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a test: tiny models gain nothing from more, and on a busy machine
    threads beyond the free cores spin-wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ScalelabCli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def scalelab_cli() -> ScalelabCli:
    """``scalelab ARGS`` run in this process by typer's runner, for tests of what a command
    says and exits with: a fresh interpreter costs seconds of imports per call.

    ``run(args, home, cwd=None)`` returns a completed process. An exception that escapes the
    command ends as in a real process: exit 1 and its traceback on stderr, so checks for exit 2
    and for "Traceback" keep their meaning. Tests of the process itself (signals, imports,
    banners, races) start real ones.
    """
    from typer.testing import CliRunner

    from scalelab.cli import app

    def run(args: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {"SCALELAB_HOME": str(home), "MLFLOW_TRACKING_URI": None, "SCALELAB_VERBOSE": None}
        with contextlib.chdir(cwd or Path.cwd()):
            result = CliRunner().invoke(app, args, env=env)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return subprocess.CompletedProcess(
            ["scalelab", *args], result.exit_code, result.stdout, stderr
        )

    return run
