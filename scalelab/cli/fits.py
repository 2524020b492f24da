"""``scalelab fit|predict|backtest``: scaling laws fitted to runs, and the questions asked of
them.

The three commands read runs the same way (``--experiment`` or ``--csv``, see
:class:`RunSource`). Only typer is imported here: the analysis (numpy, scipy, pandas), MLflow
and plotly are imported inside the commands that use them, so ``scalelab --help`` stays
instant and ``scalelab predict`` on a stored fit never imports MLflow, torch or Lightning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, UsageError, WorkspaceOpt, at_least, user_input
from scalelab.vocab import AUTO_LAW, DEFAULT_LAW

if TYPE_CHECKING:
    from scalelab.forecast.answer import Fit
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
AllTrialsOpt = Annotated[
    bool,
    typer.Option(
        "--all-trials",
        help="Fit every MLflow run with a loss, not only the best trial of each sweep cell.",
    ),
]
LawOpt = Annotated[
    str,
    typer.Option(
        help="Scaling law: auto (the form chosen from the runs by the forecasting benchmark's "
        "rule; it says which and why), or e.g. chinchilla (E+A/N^a+B/D^b), compute (E+A/C^a), "
        "odds (L0/(1+(C/C0)^a)); a wrong name lists them all."
    ),
]
CorpusOpt = Annotated[str | None, typer.Option(help="Keep runs on this corpus hash only.")]
TokenizerOpt = Annotated[str | None, typer.Option(help="Keep runs with this tokenizer only.")]
ResamplesOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")]
LevelOpt = Annotated[float, typer.Option(help="Interval level, e.g. 0.9.")]
JobsOpt = Annotated[int, typer.Option(help="Bootstrap worker processes.")]
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


# ---- reading runs ---------------------------------------------------------------------------
def has_store(ws: Workspace) -> bool:
    """Whether the tracking store exists (opening a missing SQLite store would create it)."""
    uri = ws.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


@dataclass(frozen=True)
class RunSource:
    """Where a command reads runs: ``--csv`` or ``--experiment`` (exactly one).

    From MLflow only the best trial of each sweep cell is read, the points a sweep's own
    end-of-run fit uses, unless ``all_trials``; runs outside any sweep cell are all read.
    """

    experiment: str | None = None
    csv: Path | None = None
    csv_format: str = "auto"
    corpus: str | None = None
    tokenizer: str | None = None
    all_trials: bool = False

    @property
    def name(self) -> str:
        """The experiment a fit of these runs is filed under."""
        return self.experiment or (self.csv.stem if self.csv is not None else "scalelab")

    def read(self, ws: Workspace, *, curves: bool) -> RunTable:
        from scalelab.results.runs import read_csv_table, read_mlflow_table

        if self.csv is not None:
            table = read_csv_table(self.csv, format=self._csv_format())  # type: ignore[arg-type]
        elif self.experiment is not None:
            if not has_store(ws):
                raise UsageError(
                    f"no MLflow store at {ws.tracking_uri} (experiment {self.experiment!r})"
                )
            table = read_mlflow_table(
                self.experiment, ws, curves=curves, best_of_cell=not self.all_trials
            )
        else:
            raise UsageError("give --experiment NAME or --csv FILE")
        return table.select(self.corpus, self.tokenizer)

    def _csv_format(self) -> str:
        if self.csv_format != "auto" or self.csv is None:
            return self.csv_format
        header = self.csv.open(errors="replace").readline() if self.csv.is_file() else ""
        epoch = "Model Size" in header and "Training FLOP" in header
        return "epoch_chinchilla" if epoch else "runs"


def _open_runs(
    source: RunSource,
    workspace: Path | None,
    tracking_uri: str | None,
    *,
    resamples: int,
    jobs: int,
    curves: bool,
) -> tuple[Workspace, RunTable]:
    """The checks ``fit`` and ``backtest`` share, then the workspace and the runs."""
    at_least("--resamples", resamples, 2)
    at_least("--jobs", jobs, 1)
    ws = common.workspace(workspace, tracking_uri)
    return ws, source.read(ws, curves=curves)


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
    all_trials: AllTrialsOpt = False,
    law: LawOpt = DEFAULT_LAW,
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
    jobs: JobsOpt = 2,
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

    From an experiment it fits the best trial of each sweep cell (the sweep's own fit), or
    every run with --all-trials. The fit is logged as an MLflow run (tag kind=fit) of the
    experiment, with the law as JSON and a dashboard of its figures, and cached in the
    workspace so that predict need not refit.
    """
    source = RunSource(experiment, csv, csv_format, corpus, tokenizer, all_trials)
    with user_input():
        from scalelab.forecast.forms import check_law_key
        from scalelab.results.fits import fit_table

        check_law_key(law)
        ws, table = _open_runs(
            source, workspace, tracking_uri, resamples=resamples, jobs=jobs, curves=True
        )
        common.show_progress()
        stored = fit_table(
            table,
            experiment=source.name,
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
        _echo_json(_fit_payload(stored, dashboard_path))
        return
    if stored.choice is not None:
        typer.echo(stored.choice.line())
    for line in stored.summary_lines():
        typer.echo(line)
    if stored.run_id:
        typer.echo(f"MLflow fit run {stored.run_id} in experiment {stored.experiment!r}")
    if dashboard_path is not None:
        typer.echo(f"dashboard: {dashboard_path}")
    _echo_notes(notes)


def _fit_payload(stored: Fit, dashboard_path: Path | None) -> dict[str, Any]:
    """``scalelab fit --json``: the law, its parameters with intervals, and what it fitted."""
    table_df = stored.param_table()
    return {
        "experiment": stored.experiment,
        "run_id": stored.run_id,
        "law": stored.law.to_dict(),
        "law_key": stored.law_key,
        "requested": stored.key,
        "choice": None if stored.choice is None else stored.choice.to_dict(),
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


def _echo_notes(notes: list[str]) -> None:
    """Notes on stderr; panels left out for lack of data are summed up in one line."""
    import re

    left_out = [m.group(1) for n in notes if (m := re.match(r"panel '(\w+)' left out", n))]
    for note in notes:
        if not re.match(r"panel '\w+' left out", note):
            typer.echo(f"note: {note}", err=True)
    if left_out:
        typer.echo(f"note: no data for the panel(s) {', '.join(left_out)}; left out", err=True)


def _log_fit(stored: Fit, table: RunTable, ws: Workspace) -> tuple[Fit, Path, list[str]]:
    """Draw the fit's panels, log the fit run with them; returns (fit, dashboard path, notes)."""
    from scalelab.cli.dashboard import board_artifacts
    from scalelab.dashboard import FIT_PANELS, build_dashboard, write_html
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
    with board_artifacts(board, path) as (artifacts, why):
        if why:
            notes.append(why)
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
        str | None,
        typer.Option(help="Use the latest fit of this experiment (default: the newest fit)."),
    ] = None,
    fit_id: Annotated[str | None, typer.Option("--fit", help="Use this MLflow fit run.")] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Fit this CSV of runs (once; cached).")
    ] = None,
    law: Annotated[
        str | None,
        typer.Option(
            help="Use the latest fit with this law, or auto (default: the latest fit; "
            "auto for --csv)."
        ),
    ] = None,
    level: Annotated[
        float | None, typer.Option(help="Interval level (default: the fit's).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="A capability at --compute from the experiment's runs: pass_rate.SUITE or "
            "pass_at_1.SUITE (a sigmoid in log compute), or mean_log_pass.SUITE (the GPT-4 "
            "form over the problems the smallest runs solve); bootstrapped."
        ),
    ] = None,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Predict a loss, a compute-optimal model, or the compute a loss needs, with intervals.

    Example: scalelab predict --metric pass_rate.copy --compute 1e15 --experiment quickstart
    """
    if metric is not None:
        _predict_metric(metric, compute, experiment, level, json_out, workspace, tracking_uri)
        return
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
        ws = common.workspace(workspace, tracking_uri)
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
            "law_key": stored.law_key,
            "choice": None if stored.choice is None else stored.choice.to_dict(),
            "created": stored.created,
            "max_compute": stored.data["max_compute"],
            "warnings": list(stored.boot.warnings),
        }
        _echo_json(payload)
    else:
        for line in answer.lines():
            typer.echo(line)
        if stored.choice is not None:
            typer.echo(stored.choice.line())
        origin = f"run {stored.run_id}" if stored.run_id else "not logged"
        typer.echo(f"fit: {stored.law} ({stored.experiment}, {origin}, {stored.created})")
    for warning in answer.warnings:
        _warn(warning)


def _predict_metric(
    metric: str,
    compute: float | None,
    experiment: str | None,
    level: float | None,
    json_out: bool,
    workspace: Path | None,
    tracking_uri: str | None,
) -> None:
    """``predict --metric``: a capability of a run of ``compute`` FLOPs, fitted afresh."""
    with user_input():
        from scalelab.evals.suites import SUITES
        from scalelab.vocab import EVAL_METRIC_PREFIXES, MEAN_LOG_PASS

        kind, _, suite = metric.partition(".")
        known = metric.startswith(EVAL_METRIC_PREFIXES) or kind == MEAN_LOG_PASS
        if not known or suite not in SUITES:
            raise UsageError(
                f"--metric must be pass_rate.SUITE, pass_at_1.SUITE or {MEAN_LOG_PASS}.SUITE "
                f"with SUITE one of {', '.join(sorted(SUITES))}; got {metric!r}"
            )
        if compute is None or not compute > 0:
            raise UsageError("--metric needs --compute (FLOPs of the planned run, e.g. 1e15)")
        if experiment is None:
            raise UsageError("--metric needs --experiment (whose runs logged the metric)")
        if level is not None and not 0 < level < 1:
            raise UsageError(f"--level must be in (0, 1); got {level}")
        from scalelab.forecast.capability import forecast_pass_rate
        from scalelab.results.runs import mlflow_runs

        ws = common.workspace(workspace, tracking_uri)
        runs = mlflow_runs(experiment, ws)
        column = metric if kind != MEAN_LOG_PASS else f"pass_at_1.{suite}"
        if column not in runs.columns or runs[column].notna().sum() < 3:
            raise UsageError(
                f"--metric: fewer than 3 runs of experiment {experiment!r} were evaluated on "
                f"{suite}; add eval: [{suite}] to the sweep's spec and run it"
            )
        problems: list[str] = []
        if kind == MEAN_LOG_PASS:
            from scalelab.forecast.capability import forecast_mean_log_pass
            from scalelab.results.evals import per_problem

            table = per_problem(ws, runs[runs[column].notna()], [suite])
            pred, fit, problems = forecast_mean_log_pass(table, compute, level=level or 0.9)
        else:
            pred, fit = forecast_pass_rate(runs, metric, compute, level=level or 0.9)
    if json_out:
        payload = {**pred.to_dict(), "law": fit.law.to_dict(), "experiment": experiment}
        _echo_json(payload | ({"problems": problems} if problems else {}))
        return
    typer.echo(
        f"{metric} at C={compute:.3g}: {float(pred.value):.3f} "
        f"({pred.level:.0%} interval {float(pred.lo):.3f}-{float(pred.hi):.3f})"
    )
    over = f", over the {len(problems)} problems the smallest runs solve" if problems else ""
    typer.echo(f"fit: {fit.law} ({experiment}, {fit.n_points} runs{over})")


def _find_fit(
    ws: Workspace,
    *,
    experiment: str | None,
    fit_id: str | None,
    csv: Path | None,
    law: str | None,
) -> Fit:
    from scalelab.forecast.forms import check_law_key
    from scalelab.results.fits import FitStore

    if law is not None:
        check_law_key(law)
    store = FitStore(ws)
    if fit_id is not None:
        if not has_store(ws):
            raise UsageError(f"no MLflow store at {ws.tracking_uri}")
        from scalelab.results.fits import load_fit_run

        return load_fit_run(fit_id, ws)
    if csv is not None:
        from scalelab.results.fits import fit_table

        table = RunSource(csv=csv).read(ws, curves=False)
        key = law or DEFAULT_LAW
        cached = store.for_data(table.fingerprint(), key, None)
        if cached is not None:
            return cached
        typer.echo(
            f"fitting {key} to {csv} (first query of this file; cached for the next)", err=True
        )
        common.show_progress()
        stored = fit_table(table, experiment=csv.stem, law=key)
        store.save_for_data(stored)
        return stored
    if experiment is None:
        stored = store.newest(law)
        if stored is None:
            with_law = f" with law {law}" if law else ""
            raise UsageError(
                f"no fit{with_law} in the workspace {ws.root}; run a sweep (it fits at the end) "
                "or scalelab fit --experiment NAME, or give --experiment, --fit or --csv"
            )
        typer.echo(
            f"using the latest fit in the workspace: experiment {stored.experiment!r} "
            f"({stored.law_key}, {stored.created}); --experiment picks another",
            err=True,
        )
        return stored
    name = experiment
    stored = store.latest(name, law)
    if stored is not None:
        return stored
    if has_store(ws):
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
    all_trials: AllTrialsOpt = False,
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
            help="Laws to test (repeatable); auto chooses the form on each cut's runs and "
            "calibrates its intervals as predict does (default: auto)."
        ),
    ] = None,
    resamples: ResamplesOpt = 200,
    level: LevelOpt = 0.9,
    jobs: JobsOpt = 2,
    corpus: CorpusOpt = None,
    tokenizer: TokenizerOpt = None,
    json_out: JsonOpt = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Backtest: fit on the cheap runs, predict the expensive ones, score the predictions."""
    source = RunSource(experiment, csv, csv_format, corpus, tokenizer, all_trials)
    with user_input():
        from scalelab.forecast import backtest as run_backtest
        from scalelab.forecast.forms import law_for_key

        for r in ratio or ():
            if not r > 1:
                raise UsageError(f"--ratio must be greater than 1; got {r:g}")
        ws, table = _open_runs(
            source, workspace, tracking_uri, resamples=resamples, jobs=jobs, curves=False
        )
        keys = law or [DEFAULT_LAW]
        laws = {k: k if k == AUTO_LAW else law_for_key(k, table.runs) for k in keys}
        result = run_backtest(
            table.runs, laws=laws, factors=ratio, n_resamples=resamples, level=level, n_jobs=jobs
        )
    if json_out:
        _echo_json(
            {
                "source": table.source,
                "level": result.level,
                "summary": result.summary.to_dict(orient="records"),
                "warnings": list(result.warnings),
            }
        )
        return
    typer.echo(
        f"backtest of {table.source}: fit at or below C_max/ratio, predict every run "
        f"above it ({result.level:.0%} prediction intervals)"
    )
    typer.echo(_backtest_table(result.summary))
    for _, row in result.summary.iterrows():
        if row.get("reason"):
            typer.echo(f"ratio {row['factor']:g}: law auto chose {row['chosen']}: {row['reason']}")
    for warning in result.warnings:
        _warn(warning)


# The summary's columns as the table shows them; the errors and the width are percentages.
_BACKTEST_COLUMNS = {
    "factor": "ratio",
    "cut": "cut (FLOPs)",
    "law": "law",
    "n_train": "train",
    "n_test": "test",
    "median_abs_rel_error": "median |err|",
    "max_abs_rel_error": "max |err|",
    "mean_rel_error": "bias",
    "coverage": "coverage",
    "mean_rel_width": "width",
}
_PERCENT_COLUMNS = ("median_abs_rel_error", "max_abs_rel_error", "mean_rel_error", "mean_rel_width")


def _backtest_table(summary: Any) -> str:
    """The backtest summary (a DataFrame) as a text table, one row per ratio and law."""
    if "chosen" in summary:
        chosen = summary["chosen"].fillna("")
        summary = summary.assign(
            law=summary["law"].where(chosen == "", summary["law"] + " → " + chosen)
        )
    shown = summary.assign(
        factor=summary["factor"].map(lambda f: f"{f:g}"),
        cut=summary["cut"].map(lambda c: f"{c:.3g}"),
        coverage=summary["coverage"].map(lambda v: f"{v:.0%}"),
        **{col: (100 * summary[col]).map(lambda v: f"{v:.2f}%") for col in _PERCENT_COLUMNS},
    )[list(_BACKTEST_COLUMNS)]
    return shown.rename(columns=_BACKTEST_COLUMNS).to_string(index=False)
