"""What a user meets in the MLflow UI: model-training experiments, and a quiet ``scalelab ui``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from scalelab.results import tracking
from scalelab.workspace import Workspace


def test_experiments_are_marked_as_model_training(workspace: Workspace) -> None:
    client = tracking.client(workspace)
    made = tracking.ensure_experiment("ladder", workspace)
    untagged = client.create_experiment("older")  # made before scalelab tagged experiments
    chosen = client.create_experiment("chosen", tags={tracking.EXPERIMENT_KIND_TAG: "finetuning"})
    for name in ("older", "chosen"):
        tracking.ensure_experiment(name, workspace)

    def kind(experiment_id: str) -> str:
        return client.get_experiment(experiment_id).tags.get(tracking.EXPERIMENT_KIND_TAG)

    assert kind(made) == kind(untagged) == "custom_model_development"
    assert kind(chosen) == "finetuning"  # a kind someone chose is left alone


@pytest.mark.slow
def test_ui_keeps_the_request_log_in_the_workspace(workspace: Workspace) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalelab", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SCALELAB_HOME": str(workspace.root)},
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        for _ in range(3):
            with urllib.request.urlopen(url + "/", timeout=10) as response:
                assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    log = workspace.root / "mlflow-ui.log"
    assert "GET / " in log.read_text()
    assert "GET" not in out + err and "HTTP/1.1" not in out + err
    assert f"server log: {log}" in out and "'Model training'" in out
