"""Gather what a dashboard shows: each source's runs, fit, allocations, backtest and study.

Fits are not redone when a stored one saw the same data: the latest ``scalelab fit`` of an
experiment, or an earlier dashboard's fit of the same CSV (both in ``<workspace>/fits/``).
A panel whose data is missing (no training curves, no study, no IsoFLOP minimum) or would
carry no information (one trial per study, no parameter searched) is left out, and the page
says which and why in one line, instead of failing the dashboard or drawing an empty panel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab.dashboard.definition import (
    OPTUNA_PANELS,
    DashboardDefinition,
    OptunaStudy,
    Source,
)
from scalelab.forecast.answer import Fit
from scalelab.forecast.forms import law_for_key
from scalelab.results.fits import FitStore, fit_table, write_json_atomic
from scalelab.results.runs import RunTable
from scalelab.vocab import AUTO_LAW
from scalelab.workspace import Workspace

CURVE_PANELS = ("curves_tokens", "curves_compute")
FIT_USERS = frozenset({"loss_vs_params", "loss_vs_compute", "frontier", "residuals"})


@dataclass
class SourceView:
    """One source with everything derived from it (``None`` where it could not be made)."""

    label: str
    source: Source
    table: RunTable
    fit: Fit | None = None
    isoflop: Any = None  # AllocationFit (Approach 2)
    envelope: Any = None  # AllocationFit (Approach 1)
    backtest: Any = None  # BacktestResult
    studies: list[Any] = field(default_factory=list)  # optuna.Study objects
    optuna: OptunaStudy | None = None
    fit_reused: bool = False
    problems: Any = None  # per-problem evaluation results (scalelab.results.evals.per_problem)


@dataclass
class Panel:
    """One figure of the dashboard."""

    key: str
    title: str
    figure: Any  # plotly.graph_objects.Figure


@dataclass
class Dashboard:
    """The panels, the problems met on the way, the panels left out (with why), and the
    sources they came from."""

    definition: DashboardDefinition
    views: list[SourceView]
    panels: list[Panel] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """Problems, then one ``panel 'KEY' left out: WHY`` line per panel left out."""
        return self.problems + [f"panel '{k}' left out: {why}" for k, why in self.left_out.items()]

    def left_out_line(self) -> str | None:
        """The panels left out and why, in one line (``None`` when every panel was drawn)."""
        if not self.left_out:
            return None
        return "Left out: " + "; ".join(f"{k} ({why})" for k, why in self.left_out.items()) + "."


def load_table(source: Source, workspace: Workspace, *, curves: bool) -> RunTable:
    """The runs of ``source`` (CSV or MLflow experiment), restricted to one corpus/tokenizer."""
    from scalelab.results.runs import read_csv_table, read_mlflow_table

    if source.csv is not None:
        table = read_csv_table(
            source.csv, format=source.format, rename=source.rename or None, query=source.query
        )
    else:
        table = read_mlflow_table(source.experiment, workspace, curves=curves, best_of_cell=True)
    return table.select(source.corpus, source.tokenizer)


def _fit_for(
    view: SourceView,
    definition: DashboardDefinition,
    store: FitStore,
    n_jobs: int,
    say: Callable[[str], None],
) -> Fit:
    table, law, cut = view.table, definition.law, definition.exclude_before
    fingerprint = table.fingerprint(cut)
    if view.source.experiment is not None:
        latest = store.latest(view.source.experiment, law)
        if (
            latest is not None
            and latest.data.get("fingerprint") == fingerprint
            and latest.exclude_before == cut
        ):
            view.fit_reused = True
            return latest
    cached = store.for_data(fingerprint, law, cut)
    if cached is not None:
        view.fit_reused = True
        return cached
    say(f"fitting {law} to {view.label} ({definition.resamples} bootstrap resamples)")
    fit = fit_table(
        table,
        experiment=view.source.experiment or view.label,
        law=law,
        exclude_before=cut,
        n_resamples=definition.resamples,
        level=definition.level,
        n_jobs=n_jobs,
    )
    store.save_for_data(fit)
    return fit


def _backtest_for(
    view: SourceView,
    definition: DashboardDefinition,
    store: FitStore,
    n_jobs: int,
    say: Callable[[str], None],
) -> Any:
    from scalelab.forecast import BacktestResult, backtest

    settings = definition.backtest
    key = {
        "data": view.table.fingerprint(),
        "law": definition.law,
        "ratios": settings.ratios,
        "resamples": settings.resamples,
        "level": definition.level,
    }
    path = store.json_cache("backtest", key)
    if path.is_file():
        import json

        return BacktestResult.from_dict(json.loads(path.read_text()))
    say(
        f"backtesting {definition.law} on {view.label} at ratios "
        f"{', '.join(f'{r:g}' for r in settings.ratios)}"
    )
    result = backtest(
        view.table.runs,
        laws={
            definition.law: definition.law
            if definition.law == AUTO_LAW
            else law_for_key(definition.law, view.table.runs)
        },
        factors=settings.ratios,
        n_resamples=settings.resamples,
        level=definition.level,
        n_jobs=n_jobs,
    )
    write_json_atomic(path, result.to_dict())
    return result


def _load_studies(spec: OptunaStudy) -> list[Any]:
    """The study named ``spec.study``, or, for a sweep, the per-cell studies ``<name>/<cell>``
    (a sweep keeps one study per size and budget); studies without trials are skipped."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage: Any = spec.storage
    if storage.startswith("journal:"):  # the sweep's URL for an Optuna journal file
        from scalelab.sweep.storage import open_storage

        storage = open_storage(storage)
    names = optuna.get_all_study_names(storage)
    # In the order the storage created them: a sweep creates its cells in its spec's order.
    wanted = [n for n in names if n == spec.study] + [
        n for n in names if n.startswith(f"{spec.study}/")
    ]
    studies = [optuna.load_study(study_name=n, storage=storage) for n in wanted]
    studies = [s for s in studies if s.trials]
    if not studies:
        raise ValueError(
            f"no Optuna study {spec.study!r} (or {spec.study}/<cell>) with trials in {spec.storage}"
        )
    return studies


def gather(
    definition: DashboardDefinition,
    workspace: Workspace,
    *,
    preloaded: dict[int, tuple[RunTable, Fit | None]] | None = None,
    n_jobs: int = 2,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[list[SourceView], list[str]]:
    """Load each source and derive what the requested panels need; returns views and notes.

    ``preloaded`` maps a source index to runs (and a fit) the caller already has, e.g. the
    fit ``scalelab fit`` just made.
    """
    from scalelab.forecast import envelope_fit, isoflop_fit

    panels = set(definition.panels)
    store = FitStore(workspace)
    curves = bool(panels & {*CURVE_PANELS, "frontier"}) or definition.exclude_before is not None
    views, notes = [], []
    for i, source in enumerate(definition.sources):
        if preloaded and i in preloaded:
            table, fit = preloaded[i]
        else:
            table, fit = load_table(source, workspace, curves=curves), None
        view = SourceView(source.name, source, table, fit=fit, optuna=source.optuna)
        views.append(view)
        if view.fit is None and panels & FIT_USERS:
            try:
                view.fit = _fit_for(view, definition, store, n_jobs, say)
            except (ValueError, RuntimeError) as err:
                notes.append(f"{view.label}: no {definition.law} fit ({err})")
        if panels & {"isoflop", "frontier"}:
            try:
                view.isoflop = isoflop_fit(
                    table.runs, budget=source.budget_column, level=definition.level
                )
            except ValueError as err:
                notes.append(f"{view.label}: no IsoFLOP analysis ({err})")
        if "frontier" in panels and table.curves is not None:
            try:
                view.envelope = envelope_fit(table.curves, level=definition.level)
            except ValueError as err:
                notes.append(f"{view.label}: no training-curve envelope ({err})")
        if "backtest" in panels:
            try:
                view.backtest = _backtest_for(view, definition, store, n_jobs, say)
            except (ValueError, RuntimeError) as err:
                notes.append(f"{view.label}: no backtest ({err})")
        if "capability" in panels:
            if source.experiment is None:
                notes.append(
                    f"{view.label}: no per-problem results (they are read from the "
                    "eval-<suite>.csv artifacts of MLflow runs)"
                )
            else:
                from scalelab.results.evals import per_problem

                view.problems = per_problem(workspace, table.runs)
        if panels & set(OPTUNA_PANELS):
            if source.optuna is None:
                notes.append(
                    f"{view.label}: no Optuna study given (set optuna: {{storage, "
                    "study}} in the definition, or --storage and --study)"
                )
            else:
                try:
                    view.studies = _load_studies(source.optuna)
                except ValueError as err:
                    notes.append(f"{view.label}: {err}")
    return views, notes


def build_dashboard(
    definition: DashboardDefinition,
    workspace: Workspace,
    *,
    preloaded: dict[int, tuple[RunTable, Fit | None]] | None = None,
    n_jobs: int = 2,
    say: Callable[[str], None] = lambda _: None,
) -> Dashboard:
    """Load the sources of ``definition`` and draw its panels."""
    from scalelab.dashboard import figures

    logging.getLogger("optuna").setLevel(logging.WARNING)
    views, notes = gather(definition, workspace, preloaded=preloaded, n_jobs=n_jobs, say=say)
    dashboard = Dashboard(definition, views, problems=notes)
    for key in definition.panels:
        try:
            made = figures.PANELS[key](views, definition)
        except figures.NoData as err:  # no data, or nothing a reader would learn from it
            dashboard.left_out[key] = str(err)
            continue
        dashboard.panels += [Panel(key, title, fig) for title, fig in made]
    return dashboard


def output_path(definition: DashboardDefinition, name: str, workspace: Workspace) -> Path:
    """Where a dashboard is written by default: ``<workspace>/dashboards/<name>.html``.

    Never outside that folder: a definition is data, and its ``output`` only names a file.
    """
    folder = workspace.dashboards_dir.resolve()
    target = (folder / (definition.output or f"{Path(name).name}.html")).resolve()
    if not target.is_relative_to(folder):
        raise ValueError(f"dashboard output {target} is outside {folder}")
    return target
