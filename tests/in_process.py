"""``scalelab ARGS`` run in the test process by typer's runner, for tests of what a command
says and exits with: a fresh interpreter costs seconds of imports per call.

An exception that escapes the command ends as in a real process: exit 1 and its traceback on
stderr, so checks for exit 2 and for "Traceback" keep their meaning. Tests of the process itself
(signals, imports, banners, servers, races) start real ones.
"""

from __future__ import annotations

import contextlib
import subprocess
import traceback
from pathlib import Path


def scalelab(args: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``scalelab ARGS`` with workspace ``home`` (and no inherited MLflow URI or
    ``--verbose``), in ``cwd``, as a completed process."""
    from typer.testing import CliRunner

    from scalelab.cli import app

    env = {"SCALELAB_HOME": str(home), "MLFLOW_TRACKING_URI": None, "SCALELAB_VERBOSE": None}
    with contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(app, args, env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["scalelab", *args], result.exit_code, result.stdout, stderr)
