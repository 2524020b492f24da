"""The command line as a user meets it: exit codes and messages, and real processes where the
process is the point (training, DDP, help)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from scalelab.workspace import Workspace

SCALELAB = [sys.executable, "-m", "scalelab"]
# Validated once, at the end: ten validations of the default 65k tokens would cost several
# times the training itself, and the final loss is the same.
TINY = [
    *("--corpus", "stdlib-notests", "--context", "64", "--batch-size", "8"),
    *("--val-every", "1e6"),
]


def run_cli(
    args: list[str], workspace: Workspace, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root)}
    return subprocess.run(
        SCALELAB + args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--tokens", "1e5"], "--preset NAME or --params N"),
        (["train", "--preset", "n10k", "--params", "1e5"], "exactly one of preset"),
        (["train", "--preset", "n10k", "--tokens", "-5"], "tokens"),
        (["train", "--preset", "n10k", "--variant", "gpt9"], "variant"),
        (["train", "--preset", "nope"], "nope"),
        (["train", "--params", "-3"], "--params: Input should be greater than 0"),
        (["train", "--preset", "n10k", "--corpus", "/no/such/place"], "/no/such/place"),
        (["train", "--preset", "n10k", "--lr", "abc"], "--lr"),
        (
            ["train", "--preset", "n10k", "--corpus", "stdlib-notests", "--tokens", "1e9"],
            "passes over the",
        ),
        (["train", "--preset", "n10k", "--data-order", "sorted"], "--data-order"),
        (["rlhf", "dance", "--preset", "n10k"], "stage must be one of sft, reward, ppo"),
        (["rlhf", "sft", "--preset", "n10k", "--set", "kl_coef"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    args: list[str], needle: str, workspace: Workspace, scalelab_cli
) -> None:
    result = scalelab_cli(args, workspace.root)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_help_lists_commands_with_examples(workspace: Workspace) -> None:
    result = run_cli(["train", "--help"], workspace)
    assert result.returncode == 0
    assert "Example: scalelab train" in result.stdout


@pytest.mark.slow
def test_train_end_to_end_creates_a_queryable_mlflow_run(workspace: Workspace) -> None:
    result = run_cli(
        ["train", "--preset", "n10k", "--tokens", "2e4", "--experiment", "e2e", "--json", *TINY],
        workspace,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    mlflow.set_tracking_uri(workspace.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e2e"])
    assert list(runs.run_id) == [out["run_id"]]
    assert runs.iloc[0]["metrics.loss"] == pytest.approx(out["loss"])
    assert runs.iloc[0].status == "FINISHED"


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(workspace: Workspace, tmp_path: Path) -> None:
    """Same global batch and budget on 1 and 2 CPU processes (gloo): the same loss, within 2%."""
    common = ["train", "--preset", "n30k", "--tokens", "6e4", "--json", "--accelerator", "cpu"]
    single = run_cli([*common, "--experiment", "one", *TINY], workspace)
    assert single.returncode == 0, single.stderr
    double = run_cli(
        [*common, "--experiment", "two", "--devices", "2", "--strategy", "ddp", *TINY], workspace
    )
    assert double.returncode == 0, double.stderr
    loss_1 = json.loads(single.stdout.strip().splitlines()[-1])["loss"]
    loss_2 = json.loads(double.stdout.strip().splitlines()[-1])["loss"]
    assert abs(loss_2 - loss_1) / loss_1 < 0.02, (loss_1, loss_2)
    mlflow.set_tracking_uri(workspace.tracking_uri)
    assert len(mlflow.search_runs(experiment_names=["two"])) == 1  # rank 0 logs, once


def test_rlhf_stage_runs_from_the_command_line(workspace: Workspace) -> None:
    result = run_cli(
        ["rlhf", "classify", "--preset", "n10k", "--steps", "5", "--json", "--experiment", "rl"],
        workspace,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["stage"] == "classify" and out["metric_name"] == "eval_accuracy"
    mlflow.set_tracking_uri(workspace.tracking_uri)
    assert list(mlflow.search_runs(experiment_names=["rl"]).run_id) == [out["run_id"]]
