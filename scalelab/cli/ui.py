"""``scalelab ui``: the MLflow UI on the workspace's tracking store.

Only typer is imported here; the server runs MLflow in a subprocess of its own session, which
the command stops as a whole group. Its output (a line per HTTP request) goes to
``<workspace>/mlflow-ui.log``, not the terminal.
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
SERVER_LOG = "mlflow-ui.log"  # in the workspace
# MLflow 3's UI opens every experiment in its GenAI mode until the browser has chosen "Model
# training" once (it remembers the choice), whatever the experiment's kind tag says.
MODE_HINT = (
    "scalelab's runs are under 'Model training' (top left; the browser remembers the choice)"
)


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


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host in LOOPBACK


def allowed_hosts(host: str, given: str | None) -> list[str]:
    """The Host headers MLflow may answer: ``given``, else loopback, private addresses and
    this machine's names (MLflow's own default answers 403 to a name such as ``gpu-box:5000``).

    Entries are fnmatch patterns on the whole header, port included.
    """
    import socket

    if given:
        return [h.strip() for h in given.split(",") if h.strip()]
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host)
    out = ["[[]::1]:*", "192.168.*", "10.*", *[f"172.{i}.*" for i in range(16, 32)]]
    for name in sorted(n for n in names if n):
        out += [name, f"{name}:*"]
    return out


def ui(
    host: Annotated[
        str, typer.Option(help="Interface to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    allowed: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="Comma-separated Host headers the server answers, e.g. 'box.lab:*' "
            "(default: loopback, private addresses and this machine's names).",
        ),
    ] = None,
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
    if not _is_loopback(host):
        typer.echo(
            f"warning: --host {host} serves every run, parameter and artifact of {ws.root} "
            "without a login to anyone who can reach this machine; the server answers only "
            "the Host headers in --allowed-hosts",
            err=True,
        )
    ws.ensure()
    command = _server_command(ws, host, port) + [
        "--allowed-hosts",
        ",".join(allowed_hosts(host, allowed)),
    ]
    log_path = ws.root / SERVER_LOG
    with open(log_path, "a") as log:
        # Its own session: Ctrl+C reaches us, and we stop the server's whole group.
        proc = subprocess.Popen(
            command, start_new_session=True, cwd=ws.root, stdout=log, stderr=subprocess.STDOUT
        )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"MLflow UI: http://{shown}:{port}  (store {uri}; Ctrl+C stops it)")
    typer.echo(f"{MODE_HINT}; server log: {log_path}")

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
        typer.echo(
            f"error: the MLflow server exited with code {code}; its log: {log_path}", err=True
        )
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
