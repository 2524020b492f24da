"""What a finished sweep prints and records: the best run of each cell, and a scaling-law fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from scalelab.vocab import DEFAULT_LAW

if TYPE_CHECKING:
    import pandas as pd

    from scalelab.sweep.study import Sweep


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("n_params", "tokens"):
        return f"{int(value):,}"
    if column == "compute":
        return f"{value:.3g}"
    if column == "loss":
        return f"{value:.4f}"
    if column in ("lr", "warmup"):
        return f"{value:.3g}"
    return str(value)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned table (stable in logs and tests, readable in a terminal)."""
    cells = [[_cell(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = {"n_params", "tokens", "compute", "loss", "lr", "warmup", "batch_size", "trial"}
    lines = [
        "  ".join(
            c.rjust(w) if c in numeric else c.ljust(w) for c, w in zip(columns, widths, strict=True)
        )
    ]
    for r in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if c in numeric else v.ljust(w)
                for c, v, w in zip(columns, r, widths, strict=True)
            )
        )
    return "\n".join(line.rstrip() for line in lines)


RESULT_COLUMNS = ("cell", "n_params", "tokens", "compute", "loss", "lr", "batch_size", "run_id")
STATUS_COLUMNS = (
    "cell",
    "trial",
    "state",
    "n_params",
    "tokens",
    "compute",
    "loss",
    "lr",
    "run_id",
    "reason",
)


def fit_and_log(sweep: Sweep, results: pd.DataFrame, echo: Callable[[str], None]) -> Any:
    """Fit the default law to the best run of each cell, print it, and store it as
    ``scalelab fit --experiment`` does (a ``kind=fit`` run and the workspace's fit cache), so
    ``scalelab predict`` answers from it at once; the parent run gets the same record.

    Returns the ``Fit``, or None when the fit is impossible (the reason is printed).
    """
    from scalelab.results import fits, runs, tracking

    parent = sweep.attrs.get("mlflow_parent_run_id")
    workspace = sweep.workspace
    if parent and len(results):
        tracking.log_table_artifact(tracking.client(workspace), parent, results, "results.csv")
    experiment = sweep.spec.experiment_name
    try:
        table = runs.read_mlflow_table(
            experiment, workspace, sweeps=[sweep.name], best_of_cell=True
        )
        fit = fits.fit_table(table, experiment=experiment, law=DEFAULT_LAW)
    except Exception as err:  # too few points, one distinct size, no compute...: say why
        echo(f"no {DEFAULT_LAW} fit: {str(err).splitlines()[0] if str(err) else err!r}")
        return None
    fit = fits.log_fit_run(fit, workspace)
    fits.FitStore(workspace).save(fit)
    if parent:
        fits.log_fit_summary(parent, fit, workspace)
    echo(f"{fit.law_key} fit to the best run of each of {len(table.runs)} cells:")
    if fit.choice is not None:
        echo(fit.choice.line())
    for line in fit.summary_lines():
        echo(line)
    for line in next_steps(fit, sweep.name, workspace.tracking_uri):
        echo(line)
    return fit


def next_steps(fit: Any, study: str, tracking_uri: str) -> list[str]:
    """What a user can do with a finished sweep: one example forecast with its interval, and
    the commands that show the fit, the dashboard and the MLflow UI."""
    experiment = fit.experiment
    lines = [f"stored as MLflow fit run {fit.run_id} ({tracking_uri})"]
    data = fit.data
    if fit.law.variables == ("n_params", "tokens"):
        # A planned model 10x the ladder's largest N on 10x its largest D: 100x the compute.
        query = {"params": 10 * data["max_n_params"], "tokens": 10 * data["max_tokens"]}
        what = "a planned model of 10x the largest N and D"
    elif fit.law.variables == ("compute",):
        query = {"compute": 100 * data["max_compute"]}
        what = "a compute-optimal model at 100x the largest run's C"
    else:  # a law of N or D alone answers no planned model
        query = {}
    if query:
        answer = fit.answer(**query)
        flags = " ".join(f"--{k} {v:.3g}" for k, v in query.items())
        lines.append(f"example forecast, {what}:")
        lines += answer.lines()
        lines += [f"  warning: {w}" for w in answer.warnings]
        lines.append(f"  (scalelab predict --experiment {experiment} {flags})")
    lines += [
        "next:",
        f"  scalelab predict --experiment {experiment} --params N --tokens D   # any planned size",
        f"  scalelab dashboard --experiment {experiment} --study {study}       # offline HTML",
        "  scalelab ui                      # MLflow UI at http://127.0.0.1:5000 (runs, metrics)",
    ]
    return lines
