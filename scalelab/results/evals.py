"""Evaluation results of training runs: the per-problem tables a run logs for each suite of
``scalelab.evals`` (``eval-<suite>.csv`` artifacts), read back as one long table."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from scalelab.results import tracking
from scalelab.workspace import Workspace

PREFIX, SUFFIX = "eval-", ".csv"


def run_suites(workspace: Workspace, run_id: str) -> list[str]:
    """The suites ``run_id`` was evaluated on (its ``eval-<suite>.csv`` artifacts)."""
    names = [a.path for a in tracking.client(workspace).list_artifacts(run_id)]
    return sorted(
        n.removeprefix(PREFIX).removesuffix(SUFFIX)
        for n in names
        if n.startswith(PREFIX) and n.endswith(SUFFIX)
    )


def suite_table(workspace: Workspace, run_id: str, suite: str) -> pd.DataFrame:
    """The per-problem table ``run_id`` logged for ``suite``."""
    try:
        path = tracking.artifact_file(f"runs:/{run_id}/{PREFIX}{suite}{SUFFIX}", workspace)
    except ValueError:
        raise ValueError(
            f"run {run_id} has no {PREFIX}{suite}{SUFFIX}: it was trained without the {suite} "
            "suite (eval: in its spec, --eval on train)"
        ) from None
    return pd.read_csv(path)


def per_problem(
    workspace: Workspace,
    runs: pd.DataFrame,
    suites: Sequence[str] | None = None,
    compute: str = "compute",
) -> pd.DataFrame:
    """One row per (run, suite, problem) of ``runs`` (``run_id`` and the ``compute`` column):
    ``run_id``, ``compute``, ``suite``, ``problem``, ``passed`` and ``pass_rate``. ``suites``
    None reads every suite each run has; a named suite a run lacks is an error."""
    frames = []
    for run_id, value in zip(runs["run_id"], runs[compute], strict=True):
        for suite in run_suites(workspace, run_id) if suites is None else suites:
            table = suite_table(workspace, run_id, suite)
            frames.append(
                table[["problem", "passed", "pass_rate"]].assign(
                    run_id=run_id, compute=float(value), suite=suite
                )
            )
    columns = ["run_id", "compute", "suite", "problem", "passed", "pass_rate"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
