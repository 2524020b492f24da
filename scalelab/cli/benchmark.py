"""``scalelab benchmark forecasts``: rerun the forecasting benchmark from a clone.

It fits every form to the published ladders of ``analysis/data``, scores them one source out,
writes ``analysis/forecast-benchmark.md`` and stores the default ``--law auto`` reads (package
data). Pure numpy/scipy/pandas: no torch, MLflow or Optuna.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scalelab.cli.common import WorkspaceOpt, at_least, user_input

BENCHMARK_EXAMPLE = "Example: scalelab benchmark forecasts --data analysis/data"

app = typer.Typer(
    help="Benchmarks that set the project's defaults from published data.",
    no_args_is_help=True,
    rich_markup_mode=None,  # as the top-level app (see scalelab.cli)
)


@app.command(epilog=BENCHMARK_EXAMPLE)
def forecasts(
    data: Annotated[
        Path,
        typer.Option(help="The benchmark's ladders: a clone's analysis/data folder."),
    ] = Path("analysis/data"),
    report: Annotated[
        Path,
        typer.Option(help="Where the report is written (its figure goes beside it)."),
    ] = Path("analysis/forecast-benchmark.md"),
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples per forecast.")] = 40,
    workspace: WorkspaceOpt = None,
) -> None:
    """Score every law form, average and rule on published ladders, one source out, and
    store the default that --law auto uses."""
    from scalelab.forecast.benchmark.run import run_benchmark
    from scalelab.workspace import Workspace

    with user_input():
        at_least("--resamples", resamples, 2)
        ws = Workspace.resolve(workspace)
        run_benchmark(
            data,
            ws.root / "forecast-benchmark-cache",
            report,
            resamples=resamples,
            echo=lambda line: typer.echo(line, err=True),
        )
