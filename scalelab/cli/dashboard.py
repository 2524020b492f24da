"""``scalelab dashboard``: one self-contained HTML dashboard of runs, fits and a sweep.

Only typer is imported here: the dashboard package (plotly, pandas), MLflow and Optuna are
imported inside the command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, UsageError, WorkspaceOpt, at_least, user_input
from scalelab.cli.fits import CsvOpt, ExperimentOpt

if TYPE_CHECKING:
    from scalelab.dashboard.definition import DashboardDefinition
    from scalelab.workspace import Workspace

DASHBOARD_EXAMPLE = (
    "Examples: scalelab dashboard --experiment lr-tuning --study lr-tuning | "
    "scalelab dashboard --definition chinchilla --out chinchilla.html"
)


def dashboard(
    definition: Annotated[
        str | None,
        typer.Option(
            help="Dashboard definition: a YAML path or a name in ./dashboards or "
            "<workspace>/dashboards."
        ),
    ] = None,
    experiment: ExperimentOpt = None,
    csv: CsvOpt = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL of the sweep (default: the workspace's sweep journal)."
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Optuna study, or sweep name for all its cells' studies.")
    ] = None,
    law: Annotated[
        str | None, typer.Option(help="Law to fit (default: the definition's, else auto).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file (default: <workspace>/dashboards/<name>.html)."),
    ] = None,
    resamples: Annotated[
        int | None, typer.Option(help="Bootstrap resamples of new fits and backtests.")
    ] = None,
    log: Annotated[
        bool,
        typer.Option(help="Also log the HTML (and PNGs) on the stored MLflow fit run it used."),
    ] = True,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write one self-contained HTML dashboard (works offline) of runs, fits and the sweep."""
    import time

    with user_input():
        from scalelab.dashboard import build_dashboard
        from scalelab.forecast.forms import check_law_key

        if resamples is not None:
            at_least("--resamples", resamples, 2)
        ws = common.workspace(workspace, tracking_uri)
        spec, name = _definition(ws, definition, experiment, csv, storage, study)
        updates: dict[str, Any] = {}
        if law is not None:
            updates["law"] = check_law_key(law)
        if resamples is not None:
            updates["resamples"] = resamples
            updates["backtest"] = spec.backtest.model_copy(update={"resamples": resamples})
        spec = spec.model_copy(update=updates)
        started = time.perf_counter()
        board = build_dashboard(spec, ws, say=lambda m: typer.echo(m, err=True))
    from scalelab.dashboard import write_html
    from scalelab.dashboard.build import output_path

    target = write_html(board, out or output_path(spec, name, ws))
    seconds = time.perf_counter() - started
    size = target.stat().st_size / 1e6
    typer.echo(f"dashboard: {target} ({len(board.panels)} panels, {size:.1f} MB, {seconds:.1f} s)")
    for note in board.problems:
        typer.echo(f"note: {note}", err=True)
    if (line := board.left_out_line()) is not None:
        typer.echo(f"note: {line}", err=True)
    if log:
        _log_dashboard(board, target, ws)


def _definition(
    ws: Workspace,
    definition: str | None,
    experiment: str | None,
    csv: Path | None,
    storage: str | None,
    study: str | None,
) -> tuple[DashboardDefinition, str]:
    """The dashboard's definition and name: ``--definition``'s, or one of ``--experiment`` or
    ``--csv`` with the Optuna study of ``--study``."""
    from scalelab.dashboard import find_definition, load_definition
    from scalelab.dashboard.definition import DashboardDefinition, OptunaStudy, Source

    if storage is not None and study is None:
        raise UsageError("--storage needs --study (a study or sweep name)")
    optuna = None
    if study is not None:
        if storage is None:
            from scalelab.sweep.storage import default_storage_url

            storage = default_storage_url(ws)  # where `scalelab sweep run` keeps studies
        optuna = OptunaStudy(storage=storage, study=study)
    if definition is not None:
        if experiment is not None or csv is not None or optuna is not None:
            raise UsageError(
                "--definition names its own sources; drop --experiment, "
                "--csv, --storage and --study"
            )
        path = find_definition(definition, [Path("dashboards"), ws.dashboards_dir])
        return load_definition(path), path.stem
    if experiment is not None and csv is None:
        source = Source(experiment=experiment, optuna=optuna)
        name = experiment
    elif csv is not None and experiment is None:
        source = Source(csv=csv.resolve(), optuna=optuna)
        name = csv.stem
    else:
        raise UsageError("give --experiment NAME, --csv FILE or --definition NAME")
    return DashboardDefinition(title=f"scalelab: {name}", sources=[source]), name


@contextmanager
def board_artifacts(board: Any, path: Path) -> Iterator[tuple[list[Path], str | None]]:
    """The dashboard written at ``path`` (as ``dashboard.html``) and its figures as PNGs, in a
    temporary folder, to log on a run; with why the PNGs are missing, if they are."""
    import tempfile

    from scalelab.dashboard import write_pngs

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "dashboard.html"
        html.write_bytes(path.read_bytes())
        pngs, why = write_pngs(board, Path(tmp) / "figures")
        yield [html] + ([Path(tmp) / "figures"] if pngs else []), why


def _log_dashboard(board: Any, path: Path, ws: Workspace) -> None:
    """Attach the dashboard to the MLflow fit runs it drew on (as ``dashboard.html``)."""
    from scalelab.results.fits import log_fit_artifacts

    run_ids = sorted({v.fit.run_id for v in board.views if v.fit is not None and v.fit.run_id})
    if not run_ids:
        return
    with board_artifacts(board, path) as (files, why):
        for run_id in run_ids:
            log_fit_artifacts(run_id, ws, files)
    typer.echo(f"logged on MLflow fit run(s) {', '.join(run_ids)}" + (f" ({why})" if why else ""))
