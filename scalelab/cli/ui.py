"""``scalelab ui``: the MLflow UI on the workspace's tracking store.

Only typer is imported here; the server runs MLflow in a subprocess of its own session, which
the command stops as a whole group.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, UsageError, WorkspaceOpt, user_input

if TYPE_CHECKING:
    from scalelab.workspace import Workspace

UI_EXAMPLE = "Example: scalelab ui --port 5000"


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

    with user_input():
        ws = common.workspace(workspace, tracking_uri)
        uri = ws.tracking_uri
        if uri.startswith(("http://", "https://")):
            typer.echo(f"the tracking store is a server already: open {uri}")
            return
        if not 0 < port < 65536:
            raise UsageError(f"--port must be in 1..65535; got {port}")
        if not _port_free(host, port):
            raise UsageError(f"port {port} on {host} is in use; choose another with --port")
    ws.ensure()
    # Its own session: Ctrl+C reaches us, and we stop the server's whole group.
    proc = subprocess.Popen(_server_command(ws, host, port), start_new_session=True, cwd=ws.root)
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


def _server_command(ws: Workspace, host: str, port: int) -> list[str]:
    """``mlflow server`` on the workspace's store and artifacts, one worker."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        ws.tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--artifacts-destination",
        str(ws.artifacts_dir),
    ]
