"""Shared fixtures: a fresh workspace per test, with one token cache for the whole session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalelab.workspace import Workspace

# Tests run on the CPU, deterministically, in two worker processes (pytest-xdist, pyproject's
# addopts) on the CI machine's two cores: one torch thread each, since threads beyond the free
# cores spin-wait for each other; run in one process (-n 0), two threads.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``longest`` first, so that the workers end together rather than one
    waiting on a long test it reached late."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


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


@pytest.fixture
def scalelab_cli() -> Callable[..., subprocess.CompletedProcess]:
    """:func:`in_process.scalelab`: ``run(args, home, cwd=None)``, a command run in this process."""
    from in_process import scalelab

    return scalelab
