"""What ``train`` and ``rlhf`` print: results and progress, not the libraries' banners, unless
``--verbose``; and the budget they really trained."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scalelab.workspace import Workspace

# 9 steps of 8 x 64 tokens, validated once at the end: seconds.
TINY_TRAIN = [
    *("train", "--preset", "n10k", "--tokens", "5e3", "--corpus", "stdlib-notests"),
    *("--context", "64", "--batch-size", "8", "--val-every", "1e6"),
]
BANNERS = ("GPU available", "TPU available", "litlogger", "LeafSpec", "max_steps=", "Epoch ")


def _scalelab(args: list[str], workspace: Workspace) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCALELAB_HOME": str(workspace.root)}
    env.pop("SCALELAB_VERBOSE", None)
    return subprocess.run(
        [sys.executable, "-m", "scalelab", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_train_prints_progress_and_the_real_budget_without_banners(workspace: Workspace) -> None:
    done = _scalelab(TINY_TRAIN, workspace)
    assert done.returncode == 0, done.stderr
    for banner in BANNERS:
        assert banner not in done.stderr + done.stdout, banner
    assert "v_num" not in done.stderr + done.stdout
    # Not a terminal: one progress line, at the end, on stderr.
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("step 9/9 (100%) | 4.61k/4.61k tokens | loss ")
    assert "--tokens 5,000 trained as D=4,608: whole steps of 512 tokens" in done.stdout
    assert "D=4,608 " in done.stdout


@pytest.mark.slow
def test_verbose_shows_the_libraries_messages(workspace: Workspace) -> None:
    done = _scalelab(["--verbose", *TINY_TRAIN], workspace)
    assert done.returncode == 0, done.stderr
    assert "GPU available" in done.stderr and "`max_steps=9` reached" in done.stderr


def test_an_rlhf_stage_counts_its_own_steps_quietly(workspace: Workspace) -> None:
    done = _scalelab(["rlhf", "classify", "--preset", "n10k", "--steps", "3"], workspace)
    assert done.returncode == 0, done.stderr
    for banner in BANNERS:
        assert banner not in done.stderr, banner
    assert done.stderr.startswith("classify step 3/3 (100%) | loss ")
