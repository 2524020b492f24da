"""Approaches 1 and 2 of Hoffmann et al. (2022, Sec. 3) for compute-optimal allocation.

- Approach 1 (:func:`envelope_fit`): from training curves (intermediate checkpoints), the run
  with the lowest loss at each compute forms the envelope; power laws are fitted to its N and D.
- Approach 2 (:func:`isoflop_fit`): at each fixed budget ("IsoFLOP profile") a parabola in
  log N (or a smoothing spline) locates the loss-minimising N*; power laws are fitted to the
  minima.

Approach 3, the closed form of a parametric fit, is ``allocation.compute_optimal``. Both
functions here bootstrap over runs (within each budget for Approach 2) for their intervals.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from scalelab.forecast.allocation import AllocationFit, power_fit
from scalelab.forecast.blas import with_single_threaded_blas
from scalelab.forecast.intervals import DEFAULT_LEVEL, check_level
from scalelab.forecast.runs import FLOPS_PER_PARAM_TOKEN, prepare_runs
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")
interpolate = lazy_module("scipy.interpolate")

IsoflopMethod = Literal["parabola", "spline"]
_SPLINE_GRID = 512


def _allocation_from_optima(log_c: np.ndarray, log_n: np.ndarray) -> np.ndarray:
    """(log n_coef, a, log d_coef, b) from optima (log C, log N*), with D* = C/(6·N*)."""
    log_d = log_c - math.log(FLOPS_PER_PARAM_TOKEN) - log_n
    ln, a = power_fit(log_c, log_n)
    ld, b = power_fit(log_c, log_d)
    return np.array([ln, a, ld, b])


def _make_fit(
    approach: str,
    point: np.ndarray,
    samples: list[np.ndarray],
    n_resamples: int,
    level: float,
    points: pd.DataFrame,
    warnings: list[str],
) -> AllocationFit:
    if len(samples) < 2:
        raise ValueError(f"{approach}: only {len(samples)} resamples gave two or more optima")
    failed = n_resamples - len(samples)
    if failed:
        warnings.append(f"{failed} of {n_resamples} resamples had fewer than two usable optima")
    return AllocationFit(
        approach=approach,
        n_coef=math.exp(point[0]),
        a=float(point[1]),
        d_coef=math.exp(point[2]),
        b=float(point[3]),
        samples=np.array(samples),
        level=level,
        points=points,
        warnings=tuple(warnings),
    )


# ---- Approach 1 ----------------------------------------------------------------------------
def _envelope_matrix(df: pd.DataFrame, n_grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log loss of every run interpolated on a log-compute grid (inf outside its range)."""
    runs = []
    for run_id, g in df.groupby("run_id", sort=True):
        g = g.sort_values("compute")
        if g["n_params"].nunique() != 1:
            raise ValueError(f"run {run_id!r} has more than one n_params")
        if len(g) < 2:
            continue
        runs.append(
            (
                run_id,
                float(g["n_params"].iloc[0]),
                np.log(g["compute"].to_numpy()),
                np.log(g["loss"].to_numpy()),
            )
        )
    if len(runs) < 2:
        raise ValueError(
            "the envelope needs training curves (two or more checkpoints) of at least two runs"
        )
    starts = np.array([r[2][0] for r in runs])
    ends = np.array([r[2][-1] for r in runs])
    # Use budgets that at least two runs reach, so the minimum is a choice between runs.
    lo = np.sort(starts)[1]
    hi = np.sort(ends)[-2]
    if not hi > lo:
        raise ValueError("the training curves do not overlap in compute")
    grid = np.linspace(lo, hi, n_grid)
    mat = np.full((len(runs), n_grid), np.inf)
    for i, (_, _, lc, ll) in enumerate(runs):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        mat[i, inside] = np.interp(grid[inside], lc, ll)
    return grid, mat, np.array([r[1] for r in runs])


@with_single_threaded_blas
def envelope_fit(
    checkpoints: pd.DataFrame,
    *,
    n_grid: int = 250,
    n_resamples: int = 200,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> AllocationFit:
    """Approach 1: power laws for N_opt(C), D_opt(C) from the minimum-loss envelope.

    ``checkpoints`` needs ``run_id``, ``n_params``, ``loss`` and ``tokens_seen`` (compute per
    checkpoint = 6·N·tokens_seen) or, without ``tokens_seen``, a per-checkpoint ``compute``. A
    ``compute`` column next to ``tokens_seen`` is ignored: in a table of checkpoints (e.g. from
    ``scalelab.results.runs`` curves) it holds the whole run's compute. The envelope is taken
    on ``n_grid``
    log-spaced budgets (Hoffmann et al. used 1,500) reached by at least two runs. Intervals
    resample runs.
    """
    level = check_level(level)
    df = checkpoints.copy()
    if "run_id" not in df.columns:
        raise ValueError("the envelope needs a 'run_id' column to tell training curves apart")
    if "tokens_seen" in df.columns:
        df = prepare_runs(
            df.drop(columns="compute", errors="ignore"),
            ("n_params", "tokens_seen"),
            context="the envelope",
        )
        df["compute"] = FLOPS_PER_PARAM_TOKEN * df["n_params"] * df["tokens_seen"]
    elif "compute" in df.columns:
        df = prepare_runs(df, ("n_params", "compute"), context="the envelope")
    else:
        raise ValueError("the envelope needs 'tokens_seen' (or 'compute') per checkpoint")
    grid, mat, n_params = _envelope_matrix(df, n_grid)

    def optima(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log C, log N*) at the budgets covered by the runs ``rows``."""
        best = np.argmin(mat[rows], axis=0)
        covered = np.isfinite(mat[rows][best, np.arange(len(grid))])
        return grid[covered], np.log(n_params[rows][best[covered]])

    all_rows = np.arange(len(n_params))
    log_c, log_n = optima(all_rows)
    point = _allocation_from_optima(log_c, log_n)
    best = np.argmin(mat, axis=0)
    points = pd.DataFrame(
        {
            "compute": np.exp(grid),
            "n_params": n_params[best],
            "tokens": np.exp(grid) / (FLOPS_PER_PARAM_TOKEN * n_params[best]),
            "loss": np.exp(mat[best, np.arange(len(grid))]),
        }
    )
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        rows = np.unique(rng.integers(0, len(n_params), size=len(n_params)))
        lc, ln = optima(rows)
        if len(np.unique(lc)) >= 2 and len(np.unique(ln)) >= 2:
            samples.append(_allocation_from_optima(lc, ln))
    warnings = []
    if points["n_params"].nunique() < 3:
        warnings.append(
            f"the envelope visits only {points['n_params'].nunique()} model "
            "sizes; the exponents rest on very few points"
        )
    return _make_fit("envelope", point, samples, n_resamples, level, points, warnings)


# ---- Approach 2 ----------------------------------------------------------------------------
def _budgets(df: pd.DataFrame, budget: str | None, rtol: float) -> pd.Series:
    """The IsoFLOP budget (FLOPs) of each run."""
    if budget is not None:
        if budget not in df.columns:
            raise ValueError(f"no budget column {budget!r} (columns: {', '.join(df.columns)})")
        values = pd.to_numeric(df[budget], errors="coerce")
        if values.isna().any() or (values <= 0).any():
            raise ValueError(f"budget column {budget!r} must hold positive FLOP counts")
        return values.astype(float)
    # Cluster runs whose compute lies within a factor (1 + rtol) of the previous one.
    log_c = np.log(df["compute"].to_numpy())
    order = np.argsort(log_c)
    cluster = np.zeros(len(df), dtype=int)
    cluster[order] = np.concatenate([[0], np.cumsum(np.diff(log_c[order]) > math.log1p(rtol))])
    centre = pd.Series(log_c).groupby(cluster).transform("mean").to_numpy()
    return pd.Series(np.exp(centre), index=df.index)


def _profile_minimum(
    log_n: np.ndarray, loss: np.ndarray, method: IsoflopMethod
) -> tuple[float, float, float] | None:
    """(log N*, loss at N*, curvature) of one IsoFLOP profile; None without an interior minimum."""
    if len(np.unique(log_n)) < 3:
        return None
    if method == "parabola":
        c2, c1, c0 = np.polyfit(log_n, loss, 2)
        if c2 <= 0:
            return None
        x = -c1 / (2 * c2)
        if not log_n.min() <= x <= log_n.max():
            return None
        return float(x), float(c0 - c1 * c1 / (4 * c2)), float(2 * c2)
    # Smoothing spline with its penalty chosen by generalised cross-validation; ties in N are
    # averaged first since the spline needs increasing abscissae.
    frame = pd.DataFrame({"x": log_n, "y": loss}).groupby("x", sort=True)["y"].mean()
    if len(frame) < 5:
        return None
    spline = interpolate.make_smoothing_spline(frame.index.to_numpy(), frame.to_numpy())
    xs = np.linspace(frame.index[0], frame.index[-1], _SPLINE_GRID)
    ys = spline(xs)
    i = int(np.argmin(ys))
    if i in (0, len(xs) - 1):
        return None
    return float(xs[i]), float(ys[i]), float(spline(xs[i], 2))


@with_single_threaded_blas
def isoflop_fit(
    runs: pd.DataFrame,
    *,
    budget: str | None = None,
    method: IsoflopMethod = "parabola",
    rtol: float = 0.25,
    n_resamples: int = 200,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> AllocationFit:
    """Approach 2: IsoFLOP minima N*(C), D*(C) = C/(6·N*) and their power laws.

    Args:
        runs: ``n_params``, ``loss`` and ``compute`` (or ``tokens``) per run.
        budget: column holding each run's nominal budget in FLOPs; by default runs are grouped
            by compute, a new group starting where compute jumps by more than ``1 + rtol``.
        method: ``"parabola"`` in log N (Hoffmann et al.) or ``"spline"`` (smoothing spline,
            which does not assume the profile is symmetric in log N).
        n_resamples, level, seed: intervals from resampling runs within each budget.

    Budgets whose profile has no interior minimum (curvature ≤ 0, or the minimum outside the
    sampled N) are left out, with a warning.
    """
    level = check_level(level)
    if method not in ("parabola", "spline"):
        raise ValueError(f"method must be 'parabola' or 'spline'; got {method!r}")
    df = prepare_runs(runs, ("n_params", "compute"), context="an IsoFLOP fit")
    df = df.assign(_budget=_budgets(df, budget, rtol).to_numpy())
    groups = [
        (float(c), np.log(g["n_params"].to_numpy()), g["loss"].to_numpy())
        for c, g in df.groupby("_budget", sort=True)
    ]
    rows, warnings = [], []
    for c, log_n, loss in groups:
        found = _profile_minimum(log_n, loss, method)
        if found is None:
            warnings.append(
                f"budget {c:.3g} FLOPs: no interior minimum in {len(loss)} runs; left out"
            )
            continue
        x, lmin, curv = found
        n_opt = math.exp(x)
        rows.append(
            {
                "compute": c,
                "n_params": n_opt,
                "tokens": c / (FLOPS_PER_PARAM_TOKEN * n_opt),
                "loss": lmin,
                "curvature": curv,
                "n_runs": len(loss),
            }
        )
    if len(rows) < 2:
        raise ValueError(
            f"an IsoFLOP fit needs minima at two or more budgets; found {len(rows)} "
            f"among {len(groups)} budgets"
        )
    points = pd.DataFrame(rows)
    point = _allocation_from_optima(
        np.log(points["compute"].to_numpy()), np.log(points["n_params"].to_numpy())
    )
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        lc, ln = [], []
        for c, log_n, loss in groups:
            pick = rng.integers(0, len(loss), size=len(loss))
            found = _profile_minimum(log_n[pick], loss[pick], method)
            if found is not None:
                lc.append(math.log(c))
                ln.append(found[0])
        if len(set(lc)) >= 2:
            samples.append(_allocation_from_optima(np.array(lc), np.array(ln)))
    return _make_fit(f"isoflop-{method}", point, samples, n_resamples, level, points, warnings)
