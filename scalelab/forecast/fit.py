"""Fitting a law to runs: multi-start L-BFGS on a robust objective, or variable projection.

The default follows Hoffmann et al. (2022, App. D.2) and Epoch AI's replication (Besiroglu et
al. 2024): the sum of Huber(δ=1e-3) over log residuals of the log-sum-exp parametrisation,
minimised with L-BFGS-B from a grid of starts, keeping the best converged result. Two changes
make it fast without changing what is minimised:

- the gradient is analytic (each law supplies its Jacobian), not finite differences;
- the objective is first evaluated at every grid start in one vectorised pass, and L-BFGS runs
  from the ``n_refine`` best starts only (``n_refine=None`` runs it from every start, the
  exhaustive loop of the published notebooks).

``engine="varpro"`` replaces the grid by a search over exponents only (see ``varpro``).

Large tables (checkpoint-level data: 10^5-10^6 rows) add two changes, neither of which changes
the minimum found beyond the optimiser's tolerance:

- the start search (screening, then L-BFGS from the best starts) runs on a fixed random
  subsample of ``_SEARCH_ROWS`` rows, and each distinct optimum it finds is then refined by
  L-BFGS on all rows. The search only has to land in the right basins; the minimum itself is
  that of the full objective;
- the objective and its gradient are evaluated in blocks of ``_ROW_BLOCK`` rows. Temporaries of
  a whole 10^5-row column were allocated and returned to the system at every evaluation, and
  the page faults took three quarters of the time (measured: 9.7 ms per evaluation at 10^5
  rows, 2.3 ms in blocks). A Chinchilla law is evaluated in its natural form (two exponentials
  and a logarithm per row, where the log-sum-exp form takes six and one), the same value and
  gradient up to rounding, in about 1 ms.

A fit that runs longer than a few seconds reports its progress (``Progress``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from scalelab.forecast.blas import with_single_threaded_blas
from scalelab.forecast.laws import Chinchilla, Law, make_law
from scalelab.forecast.objectives import Objective
from scalelab.forecast.runs import prepare_runs, resample_units
from scalelab.forecast.varpro import varpro_candidates
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")
optimize = lazy_module("scipy.optimize")

Engine = Literal["lbfgs", "varpro"]

# L-BFGS-B tolerances. scipy's ftol is relative to max(|f|, 1); a Huber sum with δ=1e-3 is
# ~1e-3, so the default (2.2e-9) would stop at a relative precision of ~1e-6 only.
_LBFGS_OPTIONS = {"ftol": 1e-13, "gtol": 1e-10, "maxiter": 5000}
_BATCH = 512  # starts evaluated per vectorised chunk (at most)
# Elements of one (starts × rows) temporary while screening: the law and objective make about a
# dozen such arrays; at 2**16 doubles (512 KB) each they stay in cache and are reused, not
# page-faulted in afresh (2**21 screened 4,500 starts on 8,192 rows in 2.8 s, 2**16 in 0.9 s).
_SCREEN_ELEMENTS = 2**16
# Rows per block of an evaluation of the objective and its gradient (see the module docstring):
# 64 KB per column stays in cache and under malloc's 128 KB threshold for mmap, so blocks reuse
# memory rather than fault it in. A problem of at most this many rows is evaluated in one
# piece, exactly as before blocks.
_ROW_BLOCK = 8_192
# Rows of the subsample on which fits of more than twice as many rows search their starts.
_SEARCH_ROWS = 8_192
_SAME_OPTIMUM = {"rtol": 1e-3, "atol": 1e-3}  # theta rows this close are one optimum
_IDENTIFIABILITY_SHARE = 0.30  # E's interval may span at most this share of the smallest loss
_IDENTIFIABILITY_RESAMPLES = 32
_DEFAULT_REFINE = {"lbfgs": 16, "varpro": 4}
E_NOT_IDENTIFIED = "the irreducible term E is not identified"

logger = logging.getLogger("scalelab.forecast")
ProgressFn = Callable[[str], None]
_PROGRESS_AFTER = 3.0  # seconds before the first progress line
_PROGRESS_EVERY = 5.0  # seconds between progress lines


class Progress:
    """Progress lines of a long fit or bootstrap, e.g. ``bootstrap: 120/200 resamples (41 s)``.

    Silent for the first ``_PROGRESS_AFTER`` seconds, then a line at most every
    ``_PROGRESS_EVERY`` seconds, and a last one when a stage that was reported ends. Lines go to
    ``report``, by default the ``scalelab.forecast`` logger at INFO level, which prints nothing
    unless the application gives it a handler (so the library stays quiet in tests).
    """

    def __init__(self, report: ProgressFn | None = None) -> None:
        self.report = report if report is not None else logger.info
        self.t0 = time.perf_counter()
        self.last = -math.inf
        self.reported: set[str] = set()

    def stage(self, what: str, unit: str) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for one stage, e.g. ``stage("bootstrap", "resamples")``."""
        return lambda done, total: self._update(what, unit, done, total)

    def _update(self, what: str, unit: str, done: int, total: int) -> None:
        now = time.perf_counter()
        elapsed = now - self.t0
        if elapsed < _PROGRESS_AFTER:
            return
        final = done >= total and what in self.reported
        if now - self.last < _PROGRESS_EVERY and not final:
            return
        self.last = now
        self.reported.add(what)
        self.report(f"{what}: {done:,}/{total:,} {unit} ({elapsed:.0f} s)")


_F = TypeVar("_F", bound=Callable[..., Any])


def _single_threaded(func: _F) -> _F:
    """``with_single_threaded_blas``, with scipy.optimize loaded first.

    scipy ships its own OpenBLAS, and threadpoolctl limits only the libraries loaded when the
    limit is set: a process's first fit, entered before its first (lazy) import of
    scipy.optimize, ran L-BFGS-B on two spinning BLAS threads, 1 ms per iteration on a busy
    machine instead of 20 µs (its 16 subsample searches took 8 s instead of 0.4 s).
    """
    limited = with_single_threaded_blas(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _ = optimize.minimize  # loads scipy.optimize and its BLAS
        return limited(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Problem:
    """A law, log inputs, log losses, objective and optional point weights."""

    law: Law
    z: np.ndarray
    y: np.ndarray
    objective: Objective
    weights: np.ndarray | None = None

    @classmethod
    def from_runs(cls, runs: pd.DataFrame, law: Law, objective: Objective) -> Problem:
        z = np.log(np.stack([runs[v].to_numpy(dtype=float) for v in law.variables]))
        return cls(law, z, np.log(runs["loss"].to_numpy(dtype=float)), objective)

    @property
    def n_rows(self) -> int:
        return int(self.y.size)

    def reweighted(self, weights: np.ndarray | None) -> Problem:
        return Problem(self.law, self.z, self.y, self.objective, weights)

    def rows(self, index: np.ndarray) -> Problem:
        """The problem on the rows ``index`` (integer positions), with their weights."""
        weights = None if self.weights is None else self.weights[index]
        return Problem(self.law, self.z[:, index], self.y[index], self.objective, weights)

    def resampled(self, counts: np.ndarray) -> Problem:
        """The problem with row weights ``counts`` (a resample's count of each row).

        A large problem drops the rows counted 0, which add exactly nothing to the objective
        or its gradient: a bootstrap resample leaves out about a third of the runs, so each
        of its evaluations costs a third less. Small problems keep every row, and so the
        exact summation order of earlier versions.
        """
        if self.n_rows <= _ROW_BLOCK:
            return self.reweighted(counts)
        keep = np.flatnonzero(counts)
        return Problem(
            self.law, self.z[:, keep], self.y[keep], self.objective, counts[keep].astype(float)
        )

    def _blocks(self) -> list[slice]:
        n = self.n_rows
        if n <= _ROW_BLOCK:
            return [slice(None)]
        return [slice(i, i + _ROW_BLOCK) for i in range(0, n, _ROW_BLOCK)]

    def values(self, thetas: np.ndarray) -> np.ndarray:
        """Objective at each row of ``thetas`` (vectorised over starts × rows, in blocks)."""
        thetas = np.atleast_2d(thetas)
        out = np.zeros(len(thetas))
        blocks = self._blocks()
        rows = min(self.n_rows, _ROW_BLOCK)
        # 512 starts × 1M rows would be 4 GB per temporary: blocks of starts and of rows.
        batch = max(1, min(_BATCH, _SCREEN_ELEMENTS // max(1, rows)))
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(0, len(thetas), batch):
                for rows_ in blocks:
                    pred = self.law.log_model(thetas[i : i + batch], self.z[:, rows_])
                    weights = None if self.weights is None else self.weights[rows_]
                    out[i : i + batch] += self.objective.value(self.y[rows_] - pred, weights)
        return np.where(np.isfinite(out), out, np.inf)

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        blocks = self._blocks()
        if len(blocks) == 1:
            return self._value_and_grad(theta, blocks[0])
        value, grad = 0.0, np.zeros(len(theta))
        for rows in blocks:
            v, g = self._value_and_grad(theta, rows)
            value += v
            grad += g
        return value, grad

    def _value_and_grad(self, theta: np.ndarray, rows: slice) -> tuple[float, np.ndarray]:
        weights = None if self.weights is None else self.weights[rows]
        if type(self.law) is Chinchilla and self.n_rows > _ROW_BLOCK:
            return _chinchilla_value_and_grad(
                self.law, theta, self.z[:, rows], self.y[rows], weights, self.objective
            )
        pred, jac = self.law.log_model(theta, self.z[:, rows], jac=True)
        value, deriv = self.objective.value_and_derivative(self.y[rows] - pred, weights)
        return value, -(jac * deriv).sum(axis=1)  # not BLAS: see Objective.value


def _chinchilla_value_and_grad(
    law: Chinchilla,
    theta: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    objective: Objective,
) -> tuple[float, np.ndarray]:
    """The objective and its gradient for ``Chinchilla.log_model``, fused for large problems.

    log L = log(A·N^-α + B·D^-β + E) in its natural form: inside the bounds of theta no term
    overflows or underflows to zero for any N or D between 1e-30 and 1e30, so the log-sum-exp
    guard of ``log_model`` is not needed, and the value and gradient agree with it up to
    rounding. Only exact ``Chinchilla`` laws come here (a subclass may change the form).
    """
    ln, ld = z[0], z[1]
    if law.irreducible:
        a, b, e, alpha, beta = theta
    else:
        (a, b, alpha, beta), e = theta, None
    t_n = ln * -alpha  # becomes A·N^-α, then its share of the gradient
    t_n += a
    np.exp(t_n, out=t_n)
    t_d = ld * -beta
    t_d += b
    np.exp(t_d, out=t_d)
    total = t_n + t_d
    if e is not None:
        big_e = math.exp(e)
        total += big_e
    r = np.log(total)
    np.subtract(y, r, out=r)
    value, deriv = objective.value_and_derivative(r, weights)
    g = deriv / total  # d(objective)/d(log L) = -deriv; d(log L)/d(theta) = term / total
    t_n *= g
    t_d *= g
    grads = [-t_n.sum(), -t_d.sum()]
    if e is not None:
        grads.append(-big_e * g.sum())
    t_n *= ln
    t_d *= ld
    grads += [t_n.sum(), t_d.sum()]  # numpy sums, not BLAS: see Objective.value
    return value, np.array(grads)


@dataclass(frozen=True)
class LocalFit:
    """One L-BFGS-B run."""

    theta: np.ndarray
    value: float
    converged: bool
    message: str


def minimise(
    problem: Problem,
    starts: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> list[LocalFit]:
    """L-BFGS-B with the analytic gradient from each start (clipped into the bounds).

    ``progress(done, total)`` is called after each start.
    """
    bounds = problem.law.theta_bounds()
    lo, hi = np.array(bounds).T
    fits = []
    starts = np.atleast_2d(starts)
    for x0 in starts:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = optimize.minimize(
                problem.value_and_grad,
                np.clip(x0, lo, hi),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options=_LBFGS_OPTIONS,
            )
        value = float(res.fun) if np.isfinite(res.fun) else math.inf
        fits.append(LocalFit(np.asarray(res.x, dtype=float), value, bool(res.success), res.message))
        if progress is not None:
            progress(len(fits), len(starts))
    return fits


def refine_on_all_rows(
    problem: Problem,
    fits: Sequence[LocalFit],
    progress: Callable[[int, int], None] | None = None,
) -> list[LocalFit]:
    """Refit on ``problem`` (all rows) from the optima ``fits`` found on a subsample of it.

    Each distinct optimum is refined once, from its best-valued fit; every fit is replaced by
    the refinement of its optimum, so the list keeps its length (and ``n_refined`` its
    meaning). Fits that diverged stay as they were.
    """
    owners: list[int | None] = [None] * len(fits)
    heads: list[int] = []  # index of the best fit of each distinct optimum
    finite = [i for i, f in enumerate(fits) if np.isfinite(f.value)]
    for i in sorted(finite, key=lambda i: fits[i].value):
        for k, head in enumerate(heads):
            if np.allclose(fits[i].theta, fits[head].theta, **_SAME_OPTIMUM):
                owners[i] = k
                break
        else:
            owners[i] = len(heads)
            heads.append(i)
    if not heads:
        return list(fits)
    refined = minimise(problem, np.array([fits[h].theta for h in heads]), progress)
    return [f if k is None else refined[k] for f, k in zip(fits, owners, strict=True)]


def best_fit(fits: Sequence[LocalFit]) -> LocalFit:
    """The best converged fit, or the best one if none converged."""
    finite = [f for f in fits if np.isfinite(f.value)]
    if not finite:
        raise RuntimeError("every optimisation run diverged (non-finite objective)")
    converged = [f for f in finite if f.converged]
    return min(converged or finite, key=lambda f: f.value)


def distinct_optima(fits: Sequence[LocalFit], limit: int = 5) -> np.ndarray:
    """Up to ``limit`` distinct local optima, best first (used to warm-start resamples)."""
    out: list[np.ndarray] = []
    for f in sorted((f for f in fits if np.isfinite(f.value)), key=lambda f: f.value):
        if not any(np.allclose(f.theta, o, **_SAME_OPTIMUM) for o in out):
            out.append(f.theta)
        if len(out) == limit:
            break
    return np.array(out)


@_single_threaded
def refit_weighted(
    problem: Problem,
    starts: np.ndarray,
    weights: np.ndarray,
    units: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit for each row of ``weights`` (e.g. bootstrap counts) from ``starts``.

    ``weights`` holds one column per row of ``problem``, or per unit when ``units`` maps each
    row to its unit (a run: its checkpoints share its count), which spares a (resamples × rows)
    matrix. ``progress(done, total)`` is called after each resample.

    Returns thetas (B, k), objective values (B,) and converged flags (B,). A resample whose
    every run diverges gets NaN parameters, counted as a failure by the caller.
    """
    k = len(problem.law.param_names)
    thetas = np.full((len(weights), k), np.nan)
    values = np.full(len(weights), np.nan)
    converged = np.zeros(len(weights), dtype=bool)
    for i, w in enumerate(weights):
        try:
            resample = problem.resampled(w if units is None else w[units])
            best = best_fit(minimise(resample, starts))
        except RuntimeError:
            continue
        finally:
            if progress is not None:
                progress(i + 1, len(weights))
        thetas[i], values[i], converged[i] = best.theta, best.value, best.converged
    return thetas, values, converged


def resample_counts(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_units) counts of each unit in a with-replacement resample.

    Drawn one resample at a time (the same stream as one big draw) into float32 (counts are
    small integers, exact in it): one int64 draw matrix plus its float copy cost 3 KB a row at
    200 resamples, 3 GB for a million rows.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, n_units), dtype=np.float32)
    for i in range(n_resamples):
        out[i] = np.bincount(rng.integers(0, n_units, size=n_units), minlength=n_units)
    return out


def identifiability_warnings(
    law: Law, samples: np.ndarray, loss_min: float, level: float
) -> list[str]:
    """Warn when the irreducible term E is not pinned down by the data.

    Rule: E's ``level`` interval spans more than 30% of the smallest observed loss.
    """
    if "E" not in law.param_names:
        return []
    e = samples[:, law.param_names.index("E")]
    e = e[np.isfinite(e)]
    if len(e) < 2:
        return []
    lo, hi = np.quantile(e, [(1 - level) / 2, (1 + level) / 2])
    if hi - lo > _IDENTIFIABILITY_SHARE * loss_min:
        return [
            f"{E_NOT_IDENTIFIED} by the data: its {level:.0%} interval "
            f"[{lo:.3g}, {hi:.3g}] spans {hi - lo:.3g}, more than "
            f"{_IDENTIFIABILITY_SHARE:.0%} of the smallest loss ({loss_min:.3g}); "
            "extrapolations depend on it"
        ]
    return []


@dataclass(frozen=True)
class FitResult:
    """A fitted law with the diagnostics of the fit (JSON round-trip via to_dict/from_dict).

    Attributes:
        law: the fitted law (``law.params``, ``law.predict``).
        objective, value: what was minimised and its value at ``law`` (a sum over points).
        converged: whether L-BFGS-B reported convergence for the kept result.
        n_points: rows fitted; ``loss_min`` the smallest observed loss.
        residuals: log-residual statistics (``rmse``, ``mae``, ``bias``, ``max_abs``) and
            ``mean_abs_rel``, the mean |observed/predicted - 1|.
        warnings: problems worth reading before trusting an extrapolation.
        engine, n_starts, n_refined, n_converged, message, seconds: how the search went.
        optima: distinct local optima (theta rows, best first), warm starts for ``bootstrap``.

    Intervals come from ``bootstrap(fit, runs)``.
    """

    law: Law
    objective: Objective
    value: float
    converged: bool
    n_points: int
    residuals: dict[str, float]
    warnings: tuple[str, ...] = ()
    engine: str = "lbfgs"
    n_starts: int = 0
    n_refined: int = 0
    n_converged: int = 0
    message: str = ""
    loss_min: float = math.nan
    seconds: float = math.nan
    optima: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)

    @property
    def params(self) -> dict[str, float]:
        return self.law.params

    def summary(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        lines = [
            str(self.law),
            f"  objective {self.value:.6g} ({self.objective}), {state}, {self.n_points} points",
            f"  log-residual RMSE {self.residuals['rmse']:.4g}, "
            f"mean |relative error| {self.residuals['mean_abs_rel']:.3%}",
            f"  engine {self.engine}: {self.n_starts} starts screened, {self.n_refined} refined "
            f"({self.n_converged} converged), {self.seconds:.3f} s",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.to_dict(),
            "objective": self.objective.to_dict(),
            "value": self.value,
            "converged": self.converged,
            "n_points": self.n_points,
            "residuals": dict(self.residuals),
            "warnings": list(self.warnings),
            "engine": self.engine,
            "n_starts": self.n_starts,
            "n_refined": self.n_refined,
            "n_converged": self.n_converged,
            "message": self.message,
            "loss_min": self.loss_min,
            "seconds": self.seconds,
            "optima": self.optima.tolist(),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FitResult:
        data = dict(payload)
        law = Law.from_dict(data.pop("law"))
        optima = np.array(data.pop("optima", []), dtype=float).reshape(-1, len(law.param_names))
        return cls(
            law=law,
            objective=Objective.from_dict(data.pop("objective")),
            warnings=tuple(data.pop("warnings", ())),
            optima=optima,
            **data,
        )


def params_from_thetas(law: Law, thetas: np.ndarray) -> np.ndarray:
    """Natural-scale parameters (columns ``law.param_names``) from theta rows."""
    thetas = np.atleast_2d(thetas)
    logs = np.array([p in law.log_params for p in law.param_names])
    with np.errstate(over="ignore"):
        return np.where(logs, np.exp(thetas), thetas)


def thetas_from_params(law: Law, params: np.ndarray) -> np.ndarray:
    """Inverse of :func:`params_from_thetas`."""
    params = np.atleast_2d(params)
    logs = np.array([p in law.log_params for p in law.param_names])
    with np.errstate(divide="ignore"):
        return np.where(logs, np.log(np.where(logs, params, 1.0)), params)


def _identifiability_check(
    problem: Problem,
    runs: pd.DataFrame,
    starts: np.ndarray,
    loss_min: float,
    progress: Progress,
) -> list[str]:
    """A quick seeded bootstrap of E, warm-started at the optimum (see ``bootstrap``)."""
    units, n_units, unit = resample_units(runs)
    counts = resample_counts(n_units, _IDENTIFIABILITY_RESAMPLES, seed=0)
    thetas, _, _ = refit_weighted(
        problem,
        starts,
        counts,
        None if unit == "row" else units,
        progress.stage("fit: identifiability check", "resamples"),
    )
    samples = params_from_thetas(problem.law, thetas)
    return identifiability_warnings(problem.law, samples, loss_min, level=0.9)


def _check_identifiable_inputs(runs: pd.DataFrame, law: Law) -> None:
    k = len(law.param_names)
    if len(runs) < k:
        raise ValueError(
            f"{len(runs)} runs cannot determine the {k} parameters of {law.name} "
            f"({', '.join(law.param_names)}); give at least {k}"
        )
    for v in law.variables:
        distinct = runs[v].nunique()
        if distinct < 2:
            raise ValueError(
                f"'{v}' takes a single value ({runs[v].iloc[0]:.6g}) in all {len(runs)} runs; "
                f"{law.name} needs at least two distinct values of {v}"
            )


def _bound_warnings(law: Law, theta: np.ndarray) -> list[str]:
    out = []
    for name, t, (lo, hi) in zip(law.param_names, theta, law.theta_bounds(), strict=True):
        if min(abs(t - lo), abs(t - hi)) < 1e-6:
            value = math.exp(t) if name in law.log_params else t
            out.append(
                f"{name} = {value:.4g} sits at the bound of its search range; "
                "the data do not constrain it"
            )
    return out


def _residual_stats(r: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(np.mean(r * r))),
        "mae": float(np.mean(np.abs(r))),
        "bias": float(np.mean(r)),
        "max_abs": float(np.max(np.abs(r))),
        "mean_abs_rel": float(np.mean(np.abs(np.expm1(r)))),
    }


@_single_threaded
def fit_law(
    runs: pd.DataFrame,
    law: Law | str = "chinchilla",
    *,
    objective: Objective | str = "huber",
    engine: Engine = "lbfgs",
    starts: np.ndarray | None = None,
    n_refine: int | None = -1,
    check_identifiability: bool = True,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Fit ``law`` to ``runs`` (columns named by ``law.variables`` plus ``loss``).

    Args:
        runs: one row per run (or checkpoint); see ``scalelab.forecast.runs``.
        law: a template such as ``Chinchilla()`` or ``PowerLaw(variable="compute")``, or a
            name understood by ``make_law``.
        objective: an ``Objective`` or its kind (``"huber"``, ``"mse"``, ``"asymmetric"``).
        engine: ``"lbfgs"`` (grid of starts, screened, then L-BFGS-B) or ``"varpro"``
            (exponent grid with NNLS coefficients, then L-BFGS-B).
        starts: theta rows replacing the law's default grid (``lbfgs`` engine).
        n_refine: how many of the best-screened starts L-BFGS runs from; ``None`` for all;
            default 16 for ``lbfgs`` and 4 for ``varpro`` (whose candidates are better).
        check_identifiability: run a quick 32-resample bootstrap of E and warn when the
            data cannot pin down the irreducible term.
        progress: receives a progress line every few seconds once the fit has run for 3 s
            (default: the ``scalelab.forecast`` logger at INFO level).

    Fits of more than ``2 * _SEARCH_ROWS`` rows search their starts on a subsample and refine
    the optima found on all rows (see the module docstring).

    Raises:
        ValueError: bad input (missing or non-positive columns, duplicates, fewer runs than
            parameters, a single distinct value of an input).
    """
    t0 = time.perf_counter()
    report = Progress(progress)
    law = make_law(law)
    if isinstance(objective, str):
        objective = Objective(kind=objective)  # type: ignore[arg-type]
    df = prepare_runs(runs, law.variables, context=f"a {law.name} fit")
    _check_identifiable_inputs(df, law)
    problem = Problem.from_runs(df, law, objective)
    # The problem the starts are searched on: all rows, or a fixed subsample of a large table.
    search = problem
    if problem.n_rows > 2 * _SEARCH_ROWS:
        rng = np.random.default_rng(0)
        search = problem.rows(np.sort(rng.choice(problem.n_rows, _SEARCH_ROWS, replace=False)))

    if engine == "lbfgs":
        candidates = law.theta_grid() if starts is None else np.atleast_2d(starts)
    elif engine == "varpro":
        if starts is not None:
            raise ValueError("starts apply to engine='lbfgs'; varpro searches exponents")
        candidates = varpro_candidates(law, search.z, search.y)
    else:
        raise ValueError(f"engine must be 'lbfgs' or 'varpro'; got {engine!r}")
    if candidates.shape[1] != len(law.param_names):
        raise ValueError(
            f"starts need {len(law.param_names)} columns ({', '.join(law.theta_names)}); "
            f"got {candidates.shape[1]}"
        )
    if n_refine == -1:
        n_refine = _DEFAULT_REFINE[engine]
    if n_refine is not None and n_refine < 1:
        raise ValueError(f"n_refine must be >= 1 or None; got {n_refine}")
    screened = search.values(candidates)
    order = np.argsort(screened, kind="stable")
    if n_refine is not None:
        order = order[:n_refine]
    fits = minimise(search, candidates[order], report.stage("fit: L-BFGS-B", "starts"))
    if search is not problem:
        where = f"fit: refining on all {problem.n_rows:,} rows"
        fits = refine_on_all_rows(problem, fits, report.stage(where, "optima"))
    best = best_fit(fits)

    fitted = law.with_theta(best.theta)
    residuals = problem.y - law.log_model(best.theta, problem.z)
    warnings = []
    if not best.converged:
        warnings.append(f"no optimisation run converged (best: {best.message})")
    warnings += _bound_warnings(law, best.theta)
    optima = distinct_optima(fits)
    loss_min = float(df["loss"].min())
    if check_identifiability and "E" in law.param_names:
        warnings += _identifiability_check(problem, df, optima[:1], loss_min, report)

    return FitResult(
        law=fitted,
        objective=objective,
        value=best.value,
        converged=best.converged,
        n_points=len(df),
        residuals=_residual_stats(residuals),
        warnings=tuple(warnings),
        engine=engine,
        n_starts=len(candidates),
        n_refined=len(fits),
        n_converged=sum(f.converged for f in fits),
        message=str(best.message),
        loss_min=loss_min,
        seconds=time.perf_counter() - t0,
        optima=optima,
    )
