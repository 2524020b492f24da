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

Checkpoint-level data: ``--rows 100000 1000000`` times instead, for each row count, what
``scalelab fit`` runs on a table of that size: the default Chinchilla fit (with its
identifiability check) and a seeded bootstrap with the CLI's defaults (200 resamples on 2
processes; ``--resamples``, ``--jobs``), on synthetic runs of ``--checkpoints`` checkpoints each
(1,000 runs x 100 checkpoints for 10^5 rows) with 1% log-normal noise. It prints every repeat,
the medians, the load average before and after, and the fitted law, so that two versions can be
compared: to time the code before a change, run the same command with ``PYTHONPATH`` pointing
at a copy of the old package (e.g. ``git worktree add /tmp/old <commit>``, then
``PYTHONPATH=/tmp/old python benchmarks/bench_fit.py --rows 100000``); the first line names the
package timed. Progress lines of long fits go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

import scalelab
from scalelab.forecast import Chinchilla, bootstrap, fit_law, load_epoch_chinchilla
from scalelab.forecast.blas import single_threaded_blas

DATA = Path(__file__).resolve().parents[1] / "analysis" / "data"
# Hoffmann et al.'s fit, the law the synthetic checkpoints follow.
TRUE_LAW = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
CLI_RESAMPLES = 200  # `scalelab fit --resamples` default (scalelab/cli/fits.py)


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


def checkpoint_runs(n_rows: int, checkpoints: int, noise: float, seed: int = 0) -> pd.DataFrame:
    """``n_rows // checkpoints`` runs (N in [1e7, 1e10], final D in [1e9, 1e12], log-uniform),
    each validated at ``checkpoints`` evenly spaced token counts, loss from ``TRUE_LAW`` with
    log-normal noise of ``noise``."""
    rng = np.random.default_rng(seed)
    n_runs = max(1, n_rows // checkpoints)
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n_runs))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n_runs))
    steps = np.arange(1, checkpoints + 1)
    runs = pd.DataFrame(
        {
            "run_id": np.repeat(np.arange(n_runs), checkpoints),
            "step": np.tile(steps, n_runs),
            "n_params": np.repeat(n, checkpoints),
            "tokens": (d[:, None] * steps[None, :] / checkpoints).ravel(),
        }
    )
    clean = TRUE_LAW.predict(n_params=runs["n_params"].to_numpy(), tokens=runs["tokens"].to_numpy())
    runs["loss"] = clean * np.exp(noise * rng.normal(size=len(runs)))
    return runs


def bench_rows(n_rows: int, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """Time fit + bootstrap on ``n_rows`` checkpoint rows; returns medians and the load."""
    runs = checkpoint_runs(n_rows, args.checkpoints, args.noise)
    resamples = args.resamples or CLI_RESAMPLES
    print(
        f"\n{len(runs):,} rows = {runs['run_id'].nunique():,} runs x {args.checkpoints} "
        f"checkpoints, noise {args.noise:.0%}; fit_law(runs) + bootstrap(n_resamples="
        f"{resamples}, n_jobs={args.jobs}, seed=0)",
        flush=True,
    )
    fits, boots, loads = [], [], []
    for repeat in range(args.repeats or 3):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        fit = fit_law(runs)
        t1 = time.perf_counter()
        boot = bootstrap(fit, runs, n_resamples=resamples, seed=0, n_jobs=args.jobs)
        t2 = time.perf_counter()
        fits.append(t1 - t0)
        boots.append(t2 - t1)
        loads += [load, os.getloadavg()[0]]
        print(
            f"  repeat {repeat + 1}: fit {t1 - t0:7.1f} s, bootstrap {t2 - t1:7.1f} s, "
            f"total {t2 - t0:7.1f} s  (load average {load:.2f} -> {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    print(f"  {fit.law}  objective {fit.value:.10e}")
    table = boot.param_intervals(level=0.9)
    print(
        "  90% intervals: "
        + ", ".join(f"{p} [{r.lo:.5g}, {r.hi:.5g}]" for p, r in table.iterrows())
        + f"; {boot.n_failed} failed, {boot.n_unconverged} unconverged"
    )
    total = [f + b for f, b in zip(fits, boots, strict=True)]
    return (
        statistics.median(fits),
        statistics.median(boots),
        statistics.median(total),
        statistics.median(loads),
    )


def main_rows(args: argparse.Namespace) -> None:
    logging.basicConfig(stream=sys.stderr, format="  progress: %(message)s")
    logging.getLogger("scalelab.forecast").setLevel(logging.INFO)
    print(
        f"scalelab from {Path(scalelab.__file__).parent}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    rows = [(n, *bench_rows(n, args)) for n in args.rows]
    print(
        f"\n{'rows':>10} {'fit (s)':>9} {'bootstrap (s)':>14} {'total (s)':>10} "
        f"{'load avg':>9}  (medians of {args.repeats or 3})"
    )
    for n, fit_s, boot_s, total_s, load in rows:
        print(f"{n:>10,} {fit_s:>9.1f} {boot_s:>14.1f} {total_s:>10.1f} {load:>9.2f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run the naive loop on --subset random starts and extrapolate",
    )
    parser.add_argument("--subset", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=None, help="default 5, or 3 with --rows")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--resamples", type=int, default=None, help="default 1,000, or 200 (the CLI's) with --rows"
    )
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        help="time fit + bootstrap on synthetic checkpoint-level data of these many rows",
    )
    parser.add_argument("--checkpoints", type=int, default=100, help="checkpoints per run")
    parser.add_argument("--noise", type=float, default=0.01, help="log-normal loss noise")
    args = parser.parse_args()
    if args.rows:
        main_rows(args)
        return
    args.repeats = args.repeats or 5
    args.resamples = args.resamples or 1000

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
