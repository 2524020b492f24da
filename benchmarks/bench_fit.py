"""Fit and bootstrap timings on Epoch AI's 240 Chinchilla runs, side by side.

Rows (median of ``--repeats`` runs each, with the final objective):

- ``lbfgs``: the default engine, Epoch's 4,500-point grid screened in one vectorised pass,
  L-BFGS-B with the analytic gradient from the 16 best starts;
- ``lbfgs + E check``: the same with the default identifiability check (32 warm resamples);
- ``varpro``: exponent grid with NNLS coefficients, L-BFGS-B from the 4 best candidates;
- ``lbfgs, all starts``: L-BFGS-B with the analytic gradient from every one of the 4,500 starts
  (separates what the gradient buys from what screening buys);
- ``naive loop``: ``scipy.optimize.minimize(method="L-BFGS-B")`` with finite-difference
  gradients from each of the 4,500 starts, the way the published notebooks do it. With
  ``--quick`` it runs on a random subset of starts and its time is extrapolated (and says so).

Then a seeded 1,000-resample bootstrap of the default fit, on ``--jobs`` worker processes.

Run: ``python benchmarks/bench_fit.py [--quick] [--repeats 5] [--jobs 2]``. The machine may be
shared; the load average is printed so that numbers can be read against it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from scalelab.forecast import Chinchilla, bootstrap, fit_law, load_epoch_chinchilla
from scalelab.forecast.blas import single_threaded_blas

DATA = Path(__file__).resolve().parents[1] / "analysis" / "data"


def naive_objective(params: np.ndarray, n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> float:
    """Epoch's objective as their notebook writes it: no gradient, plain numpy."""
    a, b, e, alpha, beta = params
    pred = np.log(np.exp(a - alpha * np.log(n)) + np.exp(b - beta * np.log(d)) + np.exp(e))
    return float(np.sum(huber(1e-3, np.log(loss) - pred)))


def naive_loop(runs, starts: np.ndarray) -> tuple[float, float]:
    """(seconds, best objective) of minimize() from every start, finite-difference gradients."""
    n, d, loss = (runs[c].to_numpy() for c in ("n_params", "tokens", "loss"))
    best = np.inf
    t0 = time.perf_counter()
    with np.errstate(all="ignore"), single_threaded_blas():
        for x0 in starts:
            res = minimize(naive_objective, x0, args=(n, d, loss), method="L-BFGS-B")
            if np.isfinite(res.fun) and res.fun < best:
                best = float(res.fun)
    return time.perf_counter() - t0, best


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run the naive loop on --subset random starts and extrapolate",
    )
    parser.add_argument("--subset", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    runs = load_epoch_chinchilla(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    grid = Chinchilla().theta_grid()
    print(
        f"{len(runs)} runs, {len(grid)} grid starts, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    rows = []
    for label, kwargs, repeats in (
        ("lbfgs (default)", {"check_identifiability": False}, args.repeats),
        ("lbfgs + E check", {}, args.repeats),
        ("varpro", {"engine": "varpro", "check_identifiability": False}, args.repeats),
        ("lbfgs, all starts", {"n_refine": None, "check_identifiability": False}, 1),
    ):
        seconds, fit = timed(lambda kw=kwargs: fit_law(runs, **kw), repeats)
        rows.append((label, seconds, fit.value, f"median of {repeats}"))

    if args.quick:
        rng = np.random.default_rng(0)
        subset = grid[rng.choice(len(grid), size=args.subset, replace=False)]
        seconds, best = naive_loop(runs, subset)
        rows.append(
            (
                "naive loop",
                seconds * len(grid) / len(subset),
                best,
                f"EXTRAPOLATED from {args.subset} random starts ({seconds:.1f} s)",
            )
        )
    else:
        seconds, best = naive_loop(runs, grid)
        rows.append(("naive loop", seconds, best, "all 4,500 starts, 1 run"))

    naive_seconds = rows[-1][1]
    print(f"\n{'engine':<20} {'time (s)':>10} {'speed-up':>9} {'objective':>16}  note")
    for label, seconds, value, note in rows:
        print(
            f"{label:<20} {seconds:>10.3f} {naive_seconds / seconds:>8.0f}x {value:>16.10e}  {note}"
        )

    fit = fit_law(runs)
    t0 = time.perf_counter()
    boot = bootstrap(fit, runs, n_resamples=args.resamples, seed=0, n_jobs=args.jobs)
    seconds = time.perf_counter() - t0
    print(
        f"\nbootstrap: {args.resamples} resamples on {args.jobs} processes in {seconds:.1f} s "
        f"({boot.n_failed} failed, {boot.n_unconverged} unconverged), seed 0"
    )
    print(boot.param_intervals(level=0.95).to_string(float_format=lambda x: f"{x:.4g}"))
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
