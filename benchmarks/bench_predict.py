"""What one ``scalelab predict`` on a stored fit costs, beside the interpreter it starts.

A query is a fresh process: its cost is mostly imports. Rows (median of ``--repeats``
processes each, CPU = user + system time of the child, and wall time):

- ``python -c pass``: the interpreter alone;
- ``import numpy``: the floor for anything that evaluates a law;
- ``import numpy, pandas, scipy.optimize``: what the query would cost if it loaded the
  fitting stack (it loads those only on first use);
- ``predict --experiment``: a loss and a compute-optimal allocation from a stored fit, as a user
  runs it, in text and in ``--json``.

The goal (forecast-engine issue) is under 1.5 s of CPU for the query. The fit is made once, on
synthetic Chinchilla-shaped runs, in a temporary workspace. The machine may be shared; the load
average is printed so the numbers can be read against it.

Run: ``python benchmarks/bench_predict.py [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_runs(path: Path) -> Path:
    """A 5 x 4 grid of runs on a known Chinchilla law, with 0.5% noise."""
    rng = np.random.default_rng(0)
    rows = [
        {"n_params": n, "tokens": d, "loss": (1.7 + 400 * n**-0.34 + 400 * d**-0.28)}
        for n in (1e5, 3e5, 1e6, 3e6, 1e7)
        for d in (1e7, 3e7, 1e8, 3e8)
    ]
    runs = pd.DataFrame(rows)
    runs["loss"] *= np.exp(rng.normal(0, 0.005, len(runs)))
    runs.to_csv(path, index=False)
    return path


def measure(cmd: list[str], env: dict[str, str], repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``repeats`` runs of ``cmd``."""
    cpus, walls = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(cpus), statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SCALELAB_HOME": tmp}
        env.pop("MLFLOW_TRACKING_URI", None)
        csv = synthetic_runs(Path(tmp) / "bench.csv")
        fit = [py, "-m", "scalelab", "fit", "--csv", str(csv), "--law", "chinchilla"]
        subprocess.run([*fit, "--resamples", "100", "--no-log"], env=env, check=True)
        query = [py, "-m", "scalelab", "predict", "--experiment", "bench", "--compute", "1e21"]
        rows = {
            "python -c pass": [py, "-c", "pass"],
            "import numpy": [py, "-c", "import numpy"],
            "import numpy, pandas, scipy.optimize": [
                py,
                "-c",
                "import numpy, pandas, scipy.optimize",
            ],
            "predict --experiment (text)": query,
            "predict --experiment --json": [*query, "--json"],
        }
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'command':40s} {'CPU s':>7s} {'wall s':>7s}   (median of {args.repeats})")
        for name, cmd in rows.items():
            cpu, wall = measure(cmd, env, args.repeats)
            print(f"{name:40s} {cpu:7.2f} {wall:7.2f}")


if __name__ == "__main__":
    main()
