"""``scalelab sweep run|worker|status``.

Only typer and pydantic at import: ``scalelab --help`` must not pay for Optuna, MLflow or
Lightning. Bad input (a malformed spec, a conflicting sweep, an unknown name) ends with one
line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, WorkspaceOpt, user_input

if TYPE_CHECKING:
    from scalelab.workspace import Workspace

app = typer.Typer(
    help="Launch, join and inspect sweeps: Optuna studies that train GPTs across sizes and "
    "budgets, every trial an MLflow run.",
    no_args_is_help=True,
    rich_markup_mode=None,  # as the top-level app (see scalelab.cli)
)

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="SCALELAB_STORAGE",
        show_envvar=True,
        help="Optuna storage: journal:PATH, sqlite:///PATH or postgresql://USER@HOST/DB "
        "(default: the spec's, else journal:<workspace>/optuna-journal.log). Keep passwords "
        "out of it (others see command lines in ps): use PGPASSFILE or PGPASSWORD, or put "
        "the URL in the environment variable.",
    ),
]


def _storage_url(given: str | None, spec_storage: str | None, workspace: Workspace) -> str:
    from scalelab.sweep.storage import default_storage_url, storage_kind

    url = given or spec_storage or default_storage_url(workspace)
    storage_kind(url)  # raises ValueError for something that is not a storage URL
    return url


@app.command(
    epilog="Example: scalelab sweep run sweeps/quickstart.yaml --workers 2",
)
def run(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML), e.g. sweeps/quickstart.yaml.")],
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Local worker processes; 0 only watches workers started elsewhere with "
            "`scalelab sweep worker`.",
        ),
    ] = 1,
    name: Annotated[
        str | None, typer.Option(help="Run the spec as a new sweep of this name.")
    ] = None,
    storage: StorageOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Torch threads per worker (default: its share of the cores free now; "
            "OMP_NUM_THREADS also sets it).",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Create or resume a sweep and train every cell; finished cells are not trained again."""
    with user_input():
        from scalelab.sweep.coordinator import open_sweep, run_sweep

        ws = common.workspace(workspace, tracking_uri, quiet=True)
        # A conflict with the stored sweep is bad input too: refused before any training.
        sweep = open_sweep(spec, ws, workers=workers, storage=storage, name=name)
    try:
        summary = run_sweep(sweep, workers=workers, echo=typer.echo, threads=threads)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except RuntimeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if not summary.complete:
        raise typer.Exit(1)


@app.command(
    epilog="Example: scalelab sweep worker quickstart --storage "
    "postgresql://scalelab@head-node:5432/optuna",
)
def worker(
    spec: Annotated[
        str,
        typer.Argument(help="The sweep's spec file, or the name of a sweep in the storage."),
    ],
    storage: StorageOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch threads (default: the cores free now)."),
    ] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the sweep to be created.")
    ] = 120.0,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many trials.")
    ] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Join a sweep (from this or another machine) and train its queued trials until done."""
    from scalelab.sweep.worker import (
        print_line,
        quiet_training_logs,
        set_threads,
        terminate_as_interrupt,
        work,
        worker_prefix,
    )

    with user_input():
        from scalelab.sweep.spec import load_spec
        from scalelab.sweep.study import Sweep

        ws = common.workspace(workspace, tracking_uri, quiet=True).ensure()
        from_file = Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file()
        sweep_spec = load_spec(spec) if from_file else None
        name = sweep_spec.name if sweep_spec else spec
        url = _storage_url(storage, sweep_spec.storage if sweep_spec else None, ws)
        sweep = Sweep.load(name, url, ws, wait=wait)
        if sweep_spec is not None:
            sweep.check_identity(sweep.attrs, None)
        from scalelab.data import prepare

        # This machine's corpus must be the one the sweep started with (same content hash).
        prepare(
            sweep.spec.corpus,
            sweep.spec.tokenizer,
            cache_dir=ws.cache_dir,
            expect_hash=sweep.attrs.get("corpus_hash"),
        )
    set_threads(threads)
    quiet_training_logs()
    terminate_as_interrupt()
    prefix = worker_prefix()
    print_line(f"{prefix} joined sweep {sweep.name} ({len(sweep.cells)} cells)")
    try:
        outcomes = work(
            sweep, on_trial=lambda o: print_line(f"{prefix} {o.line()}"), max_trials=max_trials
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    print_line(f"{prefix} done: {len(outcomes)} trials run here | {sweep.progress().line()}")


@app.command(epilog="Example: scalelab sweep status quickstart")
def status(
    name: Annotated[str, typer.Argument(help="Sweep name (the spec's name:).")],
    storage: StorageOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Print a table of the sweep's cells and trials: state, N, D, C, loss, MLflow run id."""
    from scalelab.sweep.report import STATUS_COLUMNS, text_table

    with user_input():
        from scalelab.sweep.study import Sweep

        ws = common.workspace(workspace, tracking_uri, quiet=True).ensure()
        url = _storage_url(storage, None, ws)
        sweep = Sweep.load(name, url, ws)
    rows = sweep.trial_rows()
    progress = sweep.progress()
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "sweep": sweep.name,
                    "done": progress.done,
                    "cells": progress.total,
                    "trials": rows,
                }
            )
        )
        return
    typer.echo(f"sweep {sweep.name} | {progress.line()}")
    typer.echo(text_table(rows, STATUS_COLUMNS))


@app.command(epilog="Example: scalelab sweep repair scalelab-runs/optuna-journal.log")
def repair(
    journal: Annotated[
        str, typer.Argument(help="The journal file (or its journal:PATH storage URL).")
    ],
) -> None:
    """Cut a torn Optuna journal (a crash or a full disk mid-write) back to its last complete
    record, keeping a backup of the whole file next to it."""
    with user_input():
        from scalelab.sweep.storage import JOURNAL_PREFIX, journal_path, repair_journal

        path = journal_path(
            journal if journal.startswith(JOURNAL_PREFIX) else JOURNAL_PREFIX + journal
        )
        repaired = repair_journal(path)
    if repaired is None:
        typer.echo(f"{path}: every record is complete; nothing to repair")
        return
    kept, backup = repaired
    typer.echo(
        f"{path}: kept {kept} complete records; the torn file is saved as {backup}. "
        "Resume with the same `scalelab sweep run`: cut trials are queued again."
    )
