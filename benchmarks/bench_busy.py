"""The quickstart's first cells on an idle machine and beside a CPU hog: the slowdown ratio.

A sweep picks its torch threads from the cores free when it starts (``resources.
pick_threads``). Without that, OpenMP threads spin-wait for a core the hog holds: on a loaded
2-core machine the quickstart took 49 minutes against 2m20s idle. The aim: a slowdown no
worse than the share of cores the hog takes (one hog of two cores: at most 2x).

    .venv/bin/python benchmarks/bench_busy.py            # 2 cells, hogs on half the cores

Each run is ``scalelab sweep run`` in a fresh process, as a user starts it, in a scratch
workspace (the token cache is built once, before timing). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def first_cells_spec(folder: Path, cells: int) -> Path:
    """The quickstart spec cut to its first ``cells`` sizes at its first budget."""
    spec = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    spec["sizes"] = spec["sizes"][:cells]
    spec["budgets"] = {"tokens": spec["budgets"]["tokens"][:1]}
    path = folder / "first-cells.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def timed_sweep(spec: Path, name: str, home: Path, *extra: str) -> dict[str, float]:
    """Wall and CPU seconds of one ``sweep run`` (a new sweep each time)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["SCALELAB_HOME"] = str(home)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "scalelab", "sweep", "run", str(spec), "--name", name, *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"sweep {name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    threads = next(
        (
            line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.startswith("torch threads per worker")
        ),
        "?",
    )
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2, help="first quickstart sizes to run")
    parser.add_argument("--hogs", type=int, default=None, help="busy-loop processes")
    args = parser.parse_args()
    n_cores = len(os.sched_getaffinity(0))
    hogs = args.hogs if args.hogs is not None else max(1, n_cores // 2)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "ws"
        spec = first_cells_spec(Path(tmp), args.cells)
        from scalelab.data import prepare

        prepare("stdlib", "byte", cache_dir=home / "cache")  # built once, before timing
        load_idle = os.getloadavg()[0]
        idle = timed_sweep(spec, "bench-idle", home)
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            time.sleep(2.0)
            busy = timed_sweep(spec, "bench-busy", home)
            load_busy = os.getloadavg()[0]
            # What a sweep did before it looked at the free cores: one thread per core.
            every_core = timed_sweep(spec, "bench-busy-all", home, "--threads", str(n_cores))
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    share = hogs / n_cores
    report = {
        "cells": args.cells,
        "cores": n_cores,
        "hogs": hogs,
        "idle": idle,
        "busy": busy,
        "busy_threads_on_every_core": every_core,
        "slowdown": round(busy["wall_s"] / idle["wall_s"], 2),
        "slowdown_threads_on_every_core": round(every_core["wall_s"] / idle["wall_s"], 2),
        "aim": round(1 / max(1e-9, 1 - share), 2) if share < 1 else None,
        "load_1min_before_idle_run": round(load_idle, 2),
        "load_1min_after_busy_run": round(load_busy, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
