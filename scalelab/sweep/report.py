"""What a finished sweep prints and records: the best run of each cell, and a scaling-law fit."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from scalelab.sweep.study import Sweep

DEFAULT_LAW = "chinchilla"


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
    """Fit the default law to the best run of each cell, print it, log it to the parent run.

    Returns the ``FitResult``, or None when the fit is impossible (the reason is printed).
    """
    from scalelab.results import tracking

    parent = sweep.attrs.get("mlflow_parent_run_id")
    client = sweep.client
    if parent and len(results):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.csv"
            results.to_csv(path, index=False)
            client.log_artifact(parent, str(path))
    try:
        from scalelab.analysis import fit_law

        fit = fit_law(results, DEFAULT_LAW)
    except Exception as err:  # too few points, one distinct size...: say why, keep the table
        echo(f"no {DEFAULT_LAW} fit: {str(err).splitlines()[0] if str(err) else err!r}")
        return None
    echo(f"{DEFAULT_LAW} fit to the best run of each of {len(results)} cells:")
    echo(fit.summary())
    if parent:
        tracking.log_json_artifact(client, parent, fit.to_dict(), "fit.json")
        for key, value in fit.params.items():
            client.log_metric(parent, f"fit/{key}", float(value))
        client.log_metric(parent, "fit/rmse", float(fit.residuals["rmse"]))
    return fit
