"""Run untrusted programs (a model's completions) in a locked-down child interpreter.

Generated text is data in this process: it is executed only in a child ``python -I -S`` that,
before it runs anything, caps its own address space (``RLIMIT_AS``), CPU seconds
(``RLIMIT_CPU``), file size (``RLIMIT_FSIZE`` 0: no byte can be written to a file) and new
processes (``RLIMIT_NPROC`` 0), then installs an audit hook (PEP 578) that refuses every event
but compiling and executing code: ``open`` (so no file can be read or written and no new module
imported), ``socket.*``, ``subprocess.Popen``, ``os.*``, ``sys._getframe``, ``gc.*`` and the
attribute accesses (``object.__getattr__``) that lead from an object to a module's globals. It
runs in an empty temporary directory, with ``SIGPROF`` ending each program at its CPU-time
limit, and the parent kills the whole child when it overruns (a program stuck in C code never
sees the signal); the programs after a killed one run in a fresh child.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "error", "timeout", "refused", "killed"]
SILENCE = 300.0  # wall-clock seconds without a result before the child is killed (blocked)
_POLL = 0.2  # seconds between checks of a silent child's CPU time

# The child: set limits, read every program from stdin, lock itself down, run them one by one.
_CHILD = r"""
import builtins, json, resource, signal, sys


class Timeout(BaseException):
    pass


def main():
    # Everything a program could use to forge a result (the nonce, the output stream) is a
    # local of this frame, and frames are out of reach once the audit hook is on.
    nonce, seconds, memory, programs = json.loads(sys.stdin.read())
    out = sys.stdout
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(seconds * len(programs)) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    refused = []
    allowed = frozenset({"compile", "exec"})

    def hook(event, args):
        if event not in allowed:
            refused.append(event)
            raise PermissionError(f"sandbox: {event} refused")

    def on_alarm(signum, frame):
        raise Timeout

    signal.signal(signal.SIGPROF, on_alarm)
    hidden = {"open", "input", "breakpoint", "help", "exit", "quit", "__import__", "globals",
              "vars", "locals", "__loader__", "__spec__"}
    safe = {k: v for k, v in vars(builtins).items() if k not in hidden}
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = None
    sys.addaudithook(hook)
    for i, source in enumerate(programs):
        refused.clear()
        status, detail = "ok", ""
        signal.setitimer(signal.ITIMER_PROF, seconds)
        try:
            exec(compile(source, "<program>", "exec"), {"__builtins__": dict(safe)})
        except Timeout:
            status = "timeout"
        except BaseException as err:
            status, detail = "error", type(err).__name__
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        if refused:
            status, detail = "refused", refused[0]
        out.write(json.dumps([nonce, i, status, detail]) + "\n")
        out.flush()


main()
"""


@dataclass(frozen=True)
class Outcome:
    """How one program ended: ``ok`` (ran to the end), ``error`` (raised; ``detail`` names the
    exception, e.g. ``AssertionError``), ``timeout`` (its time limit), ``refused`` (it tried
    an operation the sandbox forbids; ``detail`` names the audit event) or ``killed`` (the
    child died or overran while running it)."""

    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_programs(
    programs: Sequence[str],
    *,
    seconds: float = 1.0,
    memory_bytes: int = 512 << 20,
    grace: float = 2.0,
) -> list[Outcome]:
    """Run each of ``programs`` (Python source) in the sandbox; one ``Outcome`` per program.

    A program gets ``seconds`` of CPU time (CPU, not wall-clock, so that a busy machine does
    not fail a program) and the child ``memory_bytes`` of address space; a child that spends
    ``seconds + grace`` CPU seconds, or ``SILENCE`` wall-clock seconds, without reporting is
    killed, and its program is ``killed``.
    """
    outcomes: dict[int, Outcome] = {}
    pending = list(range(len(programs)))
    while pending:
        done = _run_child([programs[i] for i in pending], seconds, memory_bytes, grace)
        for j, outcome in done.items():
            outcomes[pending[j]] = outcome
        if len(done) == len(pending):
            break
        # The child died or was killed running its first unreported program: that program
        # is marked killed, and the rest run in a new child.
        stuck = min(set(range(len(pending))) - set(done))
        outcomes[pending[stuck]] = Outcome("killed")
        pending = pending[stuck + 1 :]
    return [outcomes[i] for i in range(len(programs))]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_child(
    programs: list[str], seconds: float, memory_bytes: int, grace: float
) -> dict[int, Outcome]:
    """Outcomes the child reported before it finished, died or overran (then it is killed)."""
    nonce = secrets.token_hex(16)  # a program cannot forge result lines without it
    done: dict[int, Outcome] = {}
    with tempfile.TemporaryDirectory() as empty:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=empty,
            env={},
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            # The child reads all of its input before it writes: no deadlock.
            child.stdin.write(json.dumps([nonce, seconds, memory_bytes, programs]).encode())
            child.stdin.close()
            buffer = b""
            cpu_mark, wall_mark = _cpu_seconds(child.pid), time.monotonic()
            while len(done) < len(programs):
                ready, _, _ = select.select([child.stdout], [], [], _POLL)
                if not ready:
                    overran = _cpu_seconds(child.pid) - cpu_mark > seconds + grace
                    if overran or time.monotonic() - wall_mark > SILENCE:
                        break
                    continue
                chunk = os.read(child.stdout.fileno(), 1 << 16)
                if not chunk:
                    break  # the child exited
                cpu_mark, wall_mark = _cpu_seconds(child.pid), time.monotonic()
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    tag, i, status, detail = json.loads(line)
                    if tag == nonce:
                        done[int(i)] = Outcome(status, detail)
        except (BrokenPipeError, ValueError):
            pass  # the child died early: its unreported programs count as killed
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
    return done
