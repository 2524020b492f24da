"""What every ``scalelab`` command shares: workspace options and one-line errors for bad input.

Only typer is imported here (pydantic inside the error formatter), so the command modules can
import it at module level without slowing ``scalelab --help``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

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
