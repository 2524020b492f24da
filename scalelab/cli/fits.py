"""``scalelab fit|predict|backtest|dashboard|ui``: questions asked of fitted scaling laws.

Only typer is imported here: the analysis (numpy, scipy, pandas), MLflow, plotly and Optuna
are imported inside the commands that use them, so ``scalelab --help`` stays instant and
``scalelab predict`` on a stored fit never imports MLflow, torch or Lightning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scalelab.cli_common import TrackingOpt, WorkspaceOpt

if TYPE_CHECKING:
    from scalelab.results.fits import StoredFit
    from scalelab.results.runs import RunTable
    from scalelab.workspace import Workspace

ExperimentOpt = Annotated[
    str | None, typer.Option(help="MLflow experiment holding the runs (a sweep's experiment).")
]
CsvOpt = Annotated[
    Path | None, typer.Option("--csv", help="Read runs from this CSV file instead of MLflow.")
]
CsvFormatOpt = Annotated[
    str,
    typer.Option(
        "--csv-format", help="runs (project vocabulary), epoch_chinchilla, or auto (detect)."
    ),
]
LawOpt = Annotated[
    str,
    typer.Option(
        help="Scaling law, e.g. chinchilla (E+A/N^a+B/D^b) or compute (E+A/C^a); "
        "a wrong name lists them all."
    ),
]
CorpusOpt = Annotated[str | None, typer.Option(help="Keep runs on this corpus hash only.")]
TokenizerOpt = Annotated[str | None, typer.Option(help="Keep runs with this tokenizer only.")]
ResamplesOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")]
LevelOpt = Annotated[float, typer.Option(help="Interval level, e.g. 0.9.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

FIT_EXAMPLE = (
    "Examples: scalelab fit --experiment my-sweep | "
    "scalelab fit --csv runs.csv --law compute --resamples 500"
)
PREDICT_EXAMPLE = (
    "Examples: scalelab predict --params 7e9 --tokens 1.4e12 | "
    "scalelab predict --compute 1e24 --json | scalelab predict --loss 2.0 --experiment my-sweep"
)
BACKTEST_EXAMPLE = "Example: scalelab backtest --experiment my-sweep --ratio 100 --ratio 10"
DASHBOARD_EXAMPLE = (
    "Examples: scalelab dashboard --experiment lr-tuning --study lr-tuning | "
    "scalelab dashboard --definition chinchilla --out chinchilla.html"
)
UI_EXAMPLE = "Example: scalelab ui --port 5000"


# ---- shared helpers --------------------------------------------------------------------------
def _workspace(path: Path | None, tracking_uri: str | None) -> Workspace:
    import os

    from scalelab.workspace import Workspace

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return Workspace.resolve(path)


def _has_store(ws: Workspace) -> bool:
    """Whether the tracking store exists (opening a missing SQLite store would create it)."""
    uri = ws.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def _load_table(
    ws: Workspace,
    *,
    experiment: str | None,
    csv: Path | None,
    csv_format: str,
    corpus: str | None,
    tokenizer: str | None,
    curves: bool,
) -> RunTable:
    """The runs of ``--csv`` or ``--experiment`` (exactly one), as a RunTable."""
    from scalelab.cli_common import UsageError
    from scalelab.results.runs import read_csv_table, read_mlflow_table

    if csv is not None:
        if csv_format == "auto":
            header = csv.open().readline() if csv.is_file() else ""
            csv_format = (
                "epoch_chinchilla"
                if "Model Size" in header and "Training FLOP" in header
                else "runs"
            )
        table = read_csv_table(csv, format=csv_format)  # type: ignore[arg-type]
    elif experiment is not None:
        if not _has_store(ws):
            raise UsageError(f"no MLflow store at {ws.tracking_uri} (experiment {experiment!r})")
        table = read_mlflow_table(experiment, ws, curves=curves)
    else:
        raise UsageError("give --experiment NAME or --csv FILE")
    return table.select(corpus, tokenizer)


def _echo_json(payload: dict[str, Any]) -> None:
    from scalelab.results.fits import json_default

    typer.echo(json.dumps(payload, default=json_default))


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


# ---- fit ------------------------------------------------------------------------------------
def fit(
    experiment: ExperimentOpt = None,
    csv: CsvOpt = None,
    csv_format: CsvFormatOpt = "auto",
    law: LawOpt = "chinchilla",
    exclude_before: Annotated[
        float | None,
        typer.Option(
            help="Fit validation checkpoints from this fraction of each run's tokens "
            "on (e.g. 0.5) instead of final losses only."
        ),
    ] = None,
    resamples: ResamplesOpt = 200,
    level: LevelOpt = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    jobs: Annotated[int, typer.Option(help="Bootstrap worker processes.")] = 2,
    corpus: CorpusOpt = None,
    tokenizer: TokenizerOpt = None,
    log: Annotated[
        bool, typer.Option(help="Log the fit as an MLflow run with its dashboard.")
    ] = True,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Fit a scaling law to a sweep's runs, print it with intervals, and store the fit.

    The fit is logged as an MLflow run (tag kind=fit) of the experiment, with the law as JSON
    and a dashboard of its figures, and cached in the workspace so that predict need not refit.
    """
    from scalelab.cli_common import UsageError, user_input

    with user_input():
        from scalelab.analysis.laws import check_law_key

        check_law_key(law)
        if resamples < 2:
            raise UsageError(f"--resamples must be at least 2; got {resamples}")
        if jobs < 1:
            raise UsageError(f"--jobs must be at least 1; got {jobs}")
        ws = _workspace(workspace, tracking_uri)
        table = _load_table(
            ws,
            experiment=experiment,
            csv=csv,
            csv_format=csv_format,
            corpus=corpus,
            tokenizer=tokenizer,
            curves=True,
        )
        from scalelab.results.fits import fit_table

        name = experiment or (csv.stem if csv is not None else "scalelab")
        stored = fit_table(
            table,
            experiment=name,
            law=law,
            exclude_before=exclude_before,
            n_resamples=resamples,
            level=level,
            seed=seed,
            n_jobs=jobs,
        )
    dashboard_path = None
    notes: list[str] = []
    if log:
        stored, dashboard_path, notes = _log_fit(stored, table, ws)
    from scalelab.results.fits import FitStore

    FitStore(ws).save(stored)
    if json_out:
        table_df = stored.param_table()
        _echo_json(
            {
                "experiment": stored.experiment,
                "run_id": stored.run_id,
                "law": stored.law.to_dict(),
                "formula": str(stored.law),
                "params": {
                    k: {"estimate": r.estimate, "lo": r.lo, "hi": r.hi, "se": r.se}
                    for k, r in table_df.iterrows()
                },
                "level": stored.boot.level,
                "allocation": None
                if stored.allocation is None
                else stored.allocation.summary().drop(columns="level").to_dict(orient="index"),
                "data": stored.data,
                "warnings": list(stored.boot.warnings),
                "dashboard": None if dashboard_path is None else str(dashboard_path),
            }
        )
        return
    for line in stored.summary_lines():
        typer.echo(line)
    if stored.run_id:
        typer.echo(f"MLflow fit run {stored.run_id} in experiment {stored.experiment!r}")
    if dashboard_path is not None:
        typer.echo(f"dashboard: {dashboard_path}")
    _echo_notes(notes)


def _echo_notes(notes: list[str]) -> None:
    """Notes on stderr; panels left out for lack of data are summed up in one line."""
    import re

    left_out = [m.group(1) for n in notes if (m := re.match(r"panel '(\w+)' left out", n))]
    for note in notes:
        if not re.match(r"panel '\w+' left out", note):
            typer.echo(f"note: {note}", err=True)
    if left_out:
        typer.echo(f"note: no data for the panel(s) {', '.join(left_out)}; left out", err=True)


def _log_fit(
    stored: StoredFit, table: RunTable, ws: Workspace
) -> tuple[StoredFit, Path, list[str]]:
    """Draw the fit's panels, log the fit run with them; returns (fit, dashboard path, notes)."""
    import tempfile

    from scalelab.dashboard import FIT_PANELS, build_dashboard, write_html, write_pngs
    from scalelab.dashboard.definition import DashboardDefinition, Source
    from scalelab.results.fits import log_fit_run, slug

    source = (
        Source(experiment=stored.experiment)
        if table.source.startswith("experiment ")
        else Source(csv=Path(table.source), label=stored.experiment)
    )
    definition = DashboardDefinition(
        title=f"Fit of the {stored.law_key} law to {stored.experiment}",
        sources=[source],
        law=stored.law_key,
        exclude_before=stored.exclude_before,
        level=stored.boot.level,
        panels=list(FIT_PANELS),
    )
    board = build_dashboard(definition, ws, preloaded={0: (table, stored)})
    ws.dashboards_dir.mkdir(parents=True, exist_ok=True)
    path = write_html(board, ws.dashboards_dir / f"{slug(stored.experiment)}-fit.html")
    notes = list(board.notes)
    with tempfile.TemporaryDirectory() as tmp:
        html_artifact = Path(tmp) / "dashboard.html"
        html_artifact.write_bytes(path.read_bytes())
        pngs, why = write_pngs(board, Path(tmp) / "figures")
        if why:
            notes.append(why)
        artifacts = [html_artifact] + ([Path(tmp) / "figures"] if pngs else [])
        stored = log_fit_run(stored, ws, artifacts)
    return stored, path, notes


# ---- predict --------------------------------------------------------------------------------
def predict(
    params: Annotated[float | None, typer.Option(help="Parameters N of the planned model.")] = None,
    tokens: Annotated[float | None, typer.Option(help="Training tokens D.")] = None,
    compute: Annotated[
        float | None,
        typer.Option(help="Compute budget C in FLOPs: the compute-optimal N, D and their loss."),
    ] = None,
    loss: Annotated[
        float | None, typer.Option(help="Target loss: the compute needed to reach it.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="Use the latest fit of this experiment (default: scalelab).")
    ] = None,
    fit_id: Annotated[str | None, typer.Option("--fit", help="Use this MLflow fit run.")] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Fit this CSV of runs (once; cached).")
    ] = None,
    law: Annotated[
        str | None,
        typer.Option(
            help="Use the latest fit with this law (default: the latest fit; chinchilla for --csv)."
        ),
    ] = None,
    level: Annotated[
        float | None, typer.Option(help="Interval level (default: the fit's).")
    ] = None,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Predict a loss, a compute-optimal model, or the compute a loss needs, with intervals."""
    from scalelab.cli_common import UsageError, user_input

    with user_input():
        import math

        for flag, value in (
            ("--params", params),
            ("--tokens", tokens),
            ("--compute", compute),
            ("--loss", loss),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} must be positive and finite; got {value:g}")
        if compute is not None and (params is not None or tokens is not None):
            raise UsageError("give --compute alone, or --params with --tokens; not both")
        if sum(x is not None for x in (experiment, fit_id, csv)) > 1:
            raise UsageError("give one of --experiment, --fit and --csv")
        if level is not None and not 0 < level < 1:
            raise UsageError(f"--level must be in (0, 1); got {level}")
        ws = _workspace(workspace, tracking_uri)
        stored = _find_fit(ws, experiment=experiment, fit_id=fit_id, csv=csv, law=law)
        answer = stored.answer(
            params=params, tokens=tokens, compute=compute, loss=loss, level=level
        )
    if json_out:
        payload = answer.to_dict()
        payload["fit"] = {
            "experiment": stored.experiment,
            "run_id": stored.run_id,
            "law": stored.law.to_dict(),
            "created": stored.created,
            "max_compute": stored.data["max_compute"],
            "warnings": list(stored.boot.warnings),
        }
        _echo_json(payload)
    else:
        for line in answer.lines():
            typer.echo(line)
        origin = f"run {stored.run_id}" if stored.run_id else "not logged"
        typer.echo(f"fit: {stored.law} ({stored.experiment}, {origin}, {stored.created})")
    for warning in answer.warnings:
        _warn(warning)


def _find_fit(
    ws: Workspace,
    *,
    experiment: str | None,
    fit_id: str | None,
    csv: Path | None,
    law: str | None,
) -> StoredFit:
    from scalelab.analysis.laws import check_law_key
    from scalelab.cli_common import UsageError
    from scalelab.results.fits import FitStore
    from scalelab.vocab import DEFAULT_LAW

    if law is not None:
        check_law_key(law)
    store = FitStore(ws)
    if fit_id is not None:
        if not _has_store(ws):
            raise UsageError(f"no MLflow store at {ws.tracking_uri}")
        from scalelab.results.fits import load_fit_run

        return load_fit_run(fit_id, ws)
    if csv is not None:
        from scalelab.results.fits import fit_table

        table = _load_table(
            ws,
            experiment=None,
            csv=csv,
            csv_format="auto",
            corpus=None,
            tokenizer=None,
            curves=False,
        )
        key = law or DEFAULT_LAW
        cached = store.for_data(table.fingerprint(), key, None)
        if cached is not None:
            return cached
        typer.echo(
            f"fitting {key} to {csv} (first query of this file; cached for the next)", err=True
        )
        stored = fit_table(table, experiment=csv.stem, law=key)
        store.save_for_data(stored)
        return stored
    name = experiment or "scalelab"
    stored = store.latest(name, law)
    if stored is not None:
        return stored
    if _has_store(ws):
        # Not fitted in this workspace: perhaps on a shared tracking server (slower path).
        from scalelab.results.fits import find_fit_run, load_fit_run

        run_id = find_fit_run(name, ws, law)
        if run_id is not None:
            return load_fit_run(run_id, ws)
    with_law = f" with law {law}" if law else ""
    raise UsageError(
        f"no fit found for experiment {name!r}{with_law}; run: scalelab fit "
        f"--experiment {name}" + (f" --law {law}" if law else "")
    )


# ---- backtest -------------------------------------------------------------------------------
def backtest(
    experiment: ExperimentOpt = None,
    csv: CsvOpt = None,
    csv_format: CsvFormatOpt = "auto",
    ratio: Annotated[
        list[float] | None,
        typer.Option(
            help="Fit runs below C_max/RATIO, predict those above (repeatable) "
            "(default: 10, 100, 1000)."
        ),
    ] = None,
    law: Annotated[
        list[str] | None,
        typer.Option(
            help="Laws to test (repeatable) (default: chinchilla and chinchilla without E)."
        ),
    ] = None,
    resamples: ResamplesOpt = 200,
    level: LevelOpt = 0.9,
    jobs: Annotated[int, typer.Option(help="Bootstrap worker processes.")] = 2,
    corpus: CorpusOpt = None,
    tokenizer: TokenizerOpt = None,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Backtest: fit on the cheap runs, predict the expensive ones, score the predictions."""
    from scalelab.cli_common import UsageError, user_input

    with user_input():
        from scalelab.analysis import backtest as run_backtest
        from scalelab.analysis.laws import law_for_key

        if resamples < 2:
            raise UsageError(f"--resamples must be at least 2; got {resamples}")
        for r in ratio or ():
            if not r > 1:
                raise UsageError(f"--ratio must be greater than 1; got {r:g}")
                ws = _workspace(workspace, tracking_uri)
        table = _load_table(
            ws,
            experiment=experiment,
            csv=csv,
            csv_format=csv_format,
            corpus=corpus,
            tokenizer=tokenizer,
            curves=False,
        )
        laws = None if not law else {k: law_for_key(k, table.runs) for k in law}
        result = run_backtest(
            table.runs, laws=laws, factors=ratio, n_resamples=resamples, level=level, n_jobs=jobs
        )
    summary = result.summary
    if json_out:
        _echo_json(
            {
                "source": table.source,
                "level": result.level,
                "summary": summary.to_dict(orient="records"),
                "warnings": list(result.warnings),
            }
        )
        return
    typer.echo(
        f"backtest of {table.source}: fit at or below C_max/ratio, predict every run "
        f"above it ({result.level:.0%} prediction intervals)"
    )
    shown = summary.assign(
        ratio=summary["factor"].map(lambda f: f"{f:g}"),
        cut=summary["cut"].map(lambda c: f"{c:.3g}"),
        **{
            col: (100 * summary[col]).map(lambda v: f"{v:.2f}%")
            for col in (
                "median_abs_rel_error",
                "max_abs_rel_error",
                "mean_rel_error",
                "mean_rel_width",
            )
        },
        coverage=summary["coverage"].map(lambda v: f"{v:.0%}"),
    )[
        [
            "ratio",
            "cut",
            "law",
            "n_train",
            "n_test",
            "median_abs_rel_error",
            "max_abs_rel_error",
            "mean_rel_error",
            "coverage",
            "mean_rel_width",
        ]
    ]
    shown.columns = [
        "ratio",
        "cut (FLOPs)",
        "law",
        "train",
        "test",
        "median |err|",
        "max |err|",
        "bias",
        "coverage",
        "width",
    ]
    typer.echo(shown.to_string(index=False))
    for warning in result.warnings:
        _warn(warning)


# ---- dashboard ------------------------------------------------------------------------------
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
        str | None, typer.Option(help="Law to fit (default: the definition's, else chinchilla).")
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
    from scalelab.cli_common import UsageError, user_input

    with user_input():
        from scalelab.analysis.laws import check_law_key
        from scalelab.dashboard import build_dashboard, find_definition, load_definition
        from scalelab.dashboard.build import output_path
        from scalelab.dashboard.definition import DashboardDefinition, OptunaStudy, Source

        ws = _workspace(workspace, tracking_uri)
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
            spec = load_definition(path)
            name = path.stem
        else:
            if (experiment is None) == (csv is None):
                raise UsageError("give --experiment NAME, --csv FILE or --definition NAME")
            source = (
                Source(experiment=experiment, optuna=optuna)
                if experiment is not None
                else Source(csv=csv.resolve(), optuna=optuna)
            )
            name = experiment or csv.stem
            spec = DashboardDefinition(title=f"scalelab: {name}", sources=[source])
        updates: dict[str, Any] = {}
        if law is not None:
            updates["law"] = check_law_key(law)
        if resamples is not None:
            if resamples < 2:
                raise UsageError(f"--resamples must be at least 2; got {resamples}")
            updates["resamples"] = resamples
            updates["backtest"] = spec.backtest.model_copy(update={"resamples": resamples})
        spec = spec.model_copy(update=updates)
        import time

        started = time.perf_counter()
        board = build_dashboard(spec, ws, say=lambda m: typer.echo(m, err=True))
    from scalelab.dashboard import write_html

    target = write_html(board, out or output_path(spec, name, ws))
    seconds = time.perf_counter() - started
    size = target.stat().st_size / 1e6
    typer.echo(f"dashboard: {target} ({len(board.panels)} panels, {size:.1f} MB, {seconds:.1f} s)")
    for note in board.notes:
        typer.echo(f"note: {note}", err=True)
    if log:
        _log_dashboard(board, target, ws)


def _log_dashboard(board: Any, path: Path, ws: Workspace) -> None:
    """Attach the dashboard to the MLflow fit runs it drew on (as ``dashboard.html``)."""
    import tempfile

    from scalelab.dashboard import write_pngs
    from scalelab.results.fits import log_fit_artifacts

    run_ids = sorted({v.fit.run_id for v in board.views if v.fit is not None and v.fit.run_id})
    if not run_ids:
        return
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "dashboard.html"
        artifact.write_bytes(path.read_bytes())
        pngs, why = write_pngs(board, Path(tmp) / "figures")
        files = [artifact] + ([Path(tmp) / "figures"] if pngs else [])
        for run_id in run_ids:
            log_fit_artifacts(run_id, ws, files)
    typer.echo(f"logged on MLflow fit run(s) {', '.join(run_ids)}" + (f" ({why})" if why else ""))


# ---- ui -------------------------------------------------------------------------------------
def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _stop_group(proc: Any, timeout: float = 15.0) -> None:
    """SIGTERM the server's whole process group (its workers too), SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no worker of its group survives it.
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def ui(
    host: Annotated[
        str, typer.Option(help="Interface to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Start the MLflow UI on the workspace's tracking store; Ctrl+C stops it."""
    import signal
    import subprocess

    from scalelab.cli_common import UsageError, user_input

    with user_input():
        ws = _workspace(workspace, tracking_uri)
        uri = ws.tracking_uri
        if uri.startswith(("http://", "https://")):
            typer.echo(f"the tracking store is a server already: open {uri}")
            return
        if not 0 < port < 65536:
            raise UsageError(f"--port must be in 1..65535; got {port}")
        if not _port_free(host, port):
            raise UsageError(f"port {port} on {host} is in use; choose another with --port")
    ws.ensure()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--artifacts-destination",
        str(ws.artifacts_dir),
    ]
    # Its own session: Ctrl+C reaches us, and we stop the server's whole group.
    proc = subprocess.Popen(cmd, start_new_session=True, cwd=ws.root)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"MLflow UI: http://{shown}:{port}  (store {uri}; Ctrl+C stops it)")

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    code = None
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(proc)
    if code:
        typer.echo(f"error: the MLflow server exited with code {code}", err=True)
        raise typer.Exit(1)
    typer.echo("MLflow UI stopped")


def register(app: typer.Typer) -> None:
    """Add the query commands to ``app``."""
    app.command(epilog=FIT_EXAMPLE)(fit)
    app.command(epilog=PREDICT_EXAMPLE)(predict)
    app.command(epilog=BACKTEST_EXAMPLE)(backtest)
    app.command(epilog=DASHBOARD_EXAMPLE)(dashboard)
    app.command(epilog=UI_EXAMPLE)(ui)
