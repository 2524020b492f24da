"""What every ``scalelab`` command shares: workspace options, the workspace itself, and
one-line errors for bad input.

Only typer is imported here (pydantic inside the error formatter, MLflow and Optuna inside
:func:`quiet_tracking_logs`), so the command modules can import it at module level without
slowing ``scalelab --help``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from scalelab.workspace import Workspace

__all__ = [
    "TrackingOpt",
    "UsageError",
    "WorkspaceOpt",
    "at_least",
    "fail",
    "quiet_tracking_logs",
    "user_input",
    "workspace",
]

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        envvar="SCALELAB_HOME",
        help="Folder for runs, caches and stores (default: ./scalelab-runs).",
    ),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: SQLite store in the workspace).",
    ),
]


class UsageError(Exception):
    """Bad user input: reported as one line with exit code 2."""


def workspace(path: Path | None, tracking_uri: str | None, *, quiet: bool = False) -> Workspace:
    """The workspace of ``--workspace``, with ``--tracking-uri`` exported for MLflow (and for
    worker subprocesses, which inherit it).

    ``quiet`` also quietens MLflow's and Optuna's loggers (see :func:`quiet_tracking_logs`),
    for commands whose own lines say what happens; it imports both.
    """
    from scalelab.workspace import Workspace

    if quiet:
        quiet_tracking_logs()
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return Workspace.resolve(path)


def quiet_tracking_logs() -> None:
    """Optuna and MLflow at WARNING, and no run links printed by MLflow."""
    import optuna

    from scalelab.results import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracking.quiet_logs()


def show_progress() -> None:
    """Print the engine's progress lines (a fit or bootstrap past a few seconds) on stderr."""
    import logging

    engine = logging.getLogger("scalelab.forecast")
    if not any(getattr(h, "scalelab_progress", False) for h in engine.handlers):
        handler = logging.StreamHandler()  # stderr: --json keeps stdout for its answer
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.scalelab_progress = True  # type: ignore[attr-defined]
        engine.addHandler(handler)
        engine.setLevel(logging.INFO)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _one_line(err: Exception, flags: dict[str, str] | None) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "config"
        if flags is not None:  # name the option the user typed, not the config field
            field = flags.get(field, "--" + field.replace("_", "-"))
        return f"{field}: {first['msg']}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


@contextmanager
def user_input(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn validation errors raised while reading user input into exit code 2.

    ``flags`` maps config fields to command-line options, for commands whose options fill a
    config; errors then name the option.
    """
    try:
        yield
    except (ValueError, UsageError) as err:
        fail(_one_line(err, flags))


def at_least(flag: str, value: int, minimum: int) -> None:
    """Refuse ``flag`` below ``minimum`` (a :class:`UsageError` naming it)."""
    if value < minimum:
        raise UsageError(f"{flag} must be at least {minimum}; got {value}")
