"""Bootstrap intervals for a fitted law's parameters and predictions.

Resampling is over **runs** (``run_id`` when present, else rows): intermediate checkpoints of
one run are not independent observations, so they are drawn together. A resample is fitted by
weighting each point with its count, which is the same objective as duplicating rows. Every
resample is warm-started from the best local optima of the full-data fit, which is what makes
1,000 resamples cheap. All randomness flows from ``seed``; the counts are drawn up front, so
the result does not depend on ``n_jobs``.

Counts are kept per run, not per row: each worker process receives the problem and the counts
once, then expands one resample's counts to its rows when it fits it. A large problem drops the
rows a resample leaves out (``Problem.resampled``), exactly, since they weigh zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scalelab.forecast.fit import (
    E_NOT_IDENTIFIED,
    FitResult,
    Problem,
    Progress,
    ProgressFn,
    identifiability_warnings,
    params_from_thetas,
    refit_weighted,
    resample_counts,
    thetas_from_params,
)
from scalelab.forecast.intervals import (
    DEFAULT_LEVEL,
    IntervalKind,
    Prediction,
    check_level,
    quantile_interval,
)
from scalelab.forecast.laws import Law
from scalelab.forecast.runs import FLOPS_PER_PARAM_TOKEN, prepare_runs, resample_units
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

_FAILURE_WARN_SHARE = 0.05


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap samples of a fit's parameters, and predictions with intervals.

    Attributes:
        fit: the full-data fit; point values come from its law.
        samples: one row per successful resample, columns ``fit.law.param_names``.
        level: default interval level.
        seed: seed of the resampling (and of the residual draws in prediction intervals).
        n_resamples, n_failed, n_unconverged: resamples asked for, dropped, not converged.
        unit, n_units: what was resampled (``run_id`` or ``row``) and how many there were.
        residuals: log residuals of the full-data fit, drawn for prediction intervals.
        warnings: the fit's warnings and the bootstrap's (e.g. E not identified).
    """

    fit: FitResult
    samples: np.ndarray
    level: float = DEFAULT_LEVEL
    seed: int = 0
    n_resamples: int = 0
    n_failed: int = 0
    n_unconverged: int = 0
    unit: str = "row"
    n_units: int = 0
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def law(self) -> Law:
        return self.fit.law

    def sample_laws(self) -> list[Law]:
        law = self.fit.law
        return [
            law.with_params(**dict(zip(law.param_names, row, strict=True))) for row in self.samples
        ]

    def param_frame(self) -> pd.DataFrame:
        """The samples as a DataFrame (one column per parameter)."""
        return pd.DataFrame(self.samples, columns=list(self.fit.law.param_names))

    def param_intervals(self, level: float | None = None) -> pd.DataFrame:
        """Point estimate, interval and bootstrap standard error of every parameter."""
        level = self.level if level is None else check_level(level)
        lo, hi = quantile_interval(self.samples, level)
        return pd.DataFrame(
            {
                "estimate": list(self.fit.law.params.values()),
                "lo": lo,
                "hi": hi,
                "se": self.samples.std(axis=0, ddof=1),
                "level": level,
            },
            index=pd.Index(self.fit.law.param_names, name="param"),
        )

    # ---- predictions ---------------------------------------------------------------------
    def _noise(self, shape: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1])
        return rng.choice(self.residuals, size=shape, replace=True)

    def predict(
        self,
        n_params: Any = None,
        tokens: Any = None,
        compute: Any = None,
        *,
        level: float | None = None,
        kind: IntervalKind = "prediction",
    ) -> Prediction:
        """The loss with its interval.

        - ``predict(n_params=N, tokens=D)`` for a law of N and D;
        - ``predict(compute=C)``: the compute-optimal model's loss at C for a law of N and D
          (Approach 3), or the law itself for a law of C;
        - ``predict(n_params=N, compute=C)``: tokens D = C/(6·N).

        ``kind="prediction"`` (default) adds the scatter of runs around the law, so the interval
        is meant to cover one run's loss; ``"confidence"`` covers the fitted law only. Neither
        accounts for the law's form being wrong, which grows with the distance of the
        extrapolation: run ``backtest`` to see how the intervals cover held-out runs (on
        Chinchilla's runs, 90% intervals covered about half of the runs 10x beyond the fit).
        """
        level = self.level if level is None else check_level(level)
        if kind not in ("prediction", "confidence"):
            raise ValueError(f"kind must be 'prediction' or 'confidence'; got {kind!r}")
        law = self.fit.law
        given = {
            k: v
            for k, v in (("n_params", n_params), ("tokens", tokens), ("compute", compute))
            if v is not None
        }
        if not given:
            raise ValueError("give n_params and tokens, or compute")
        if tokens is None and n_params is not None and compute is not None:
            given["tokens"] = np.asarray(compute, dtype=float) / (
                FLOPS_PER_PARAM_TOKEN * np.asarray(n_params, dtype=float)
            )
        scalar = all(np.ndim(v) == 0 for v in given.values())
        if all(v in given for v in law.variables):
            inputs = {v: given[v] for v in law.variables}
            value = np.atleast_1d(law.predict(**inputs)).ravel()
            z, _ = law._log_inputs(inputs)
            log_samples = law.log_model(thetas_from_params(law, self.samples), z)
        elif set(given) == {"compute"}:
            inputs = {"compute": compute}
            value = np.atleast_1d(law.loss_at_compute(compute)).ravel()
            log_samples = np.log(
                np.array(
                    [np.atleast_1d(s.loss_at_compute(compute)).ravel() for s in self.sample_laws()]
                )
            )
        else:
            raise ValueError(
                f"{law.name} needs {' and '.join(law.variables)}"
                + (", or compute alone" if law.variables != ("compute",) else "")
                + f"; got {', '.join(given)}"
            )
        if kind == "prediction":
            log_samples = log_samples + self._noise(log_samples.shape)
        lo, hi = quantile_interval(np.exp(log_samples), level)
        shape = np.broadcast_shapes(*[np.shape(v) for v in inputs.values()])
        if scalar:
            out = (float(value[0]), float(lo[0]), float(hi[0]))
            inputs = {k: float(v) for k, v in inputs.items()}
        else:
            out = (value.reshape(shape), lo.reshape(shape), hi.reshape(shape))
            arrays = np.broadcast_arrays(*[np.asarray(v, dtype=float) for v in inputs.values()])
            inputs = dict(zip(inputs, arrays, strict=True))
        return Prediction(
            *out,
            level=level,
            quantity="loss",
            kind=kind,
            inputs=inputs,
        )

    def compute_for_loss(self, target: float, *, level: float | None = None) -> Prediction:
        """Compute C at which the (compute-optimal) law reaches ``target``, with its interval.

        Samples whose asymptote lies at or above the target give ``inf``, so an interval with
        ``hi = inf`` says the data cannot rule out that the target is out of reach.
        """
        level = self.level if level is None else check_level(level)
        value = self.fit.law.compute_for_loss(target)
        samples = np.array([s.compute_for_loss(target) for s in self.sample_laws()])
        lo, hi = quantile_interval(samples, level)
        return Prediction(
            float(value),
            float(lo),
            float(hi),
            level=level,
            quantity="compute",
            kind="confidence",
            inputs={"loss": float(target)},
        )

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "fit": self.fit.to_dict(),
            "samples": self.samples.tolist(),
            "level": self.level,
            "seed": self.seed,
            "n_resamples": self.n_resamples,
            "n_failed": self.n_failed,
            "n_unconverged": self.n_unconverged,
            "unit": self.unit,
            "n_units": self.n_units,
            "residuals": self.residuals.tolist(),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> BootstrapResult:
        data = dict(payload)
        fit = FitResult.from_dict(data.pop("fit"))
        k = len(fit.law.param_names)
        return cls(
            fit=fit,
            samples=np.array(data.pop("samples"), dtype=float).reshape(-1, k),
            residuals=np.array(data.pop("residuals"), dtype=float),
            warnings=tuple(data.pop("warnings", ())),
            **data,
        )

    def summary(self) -> str:
        lines = [
            str(self.fit.law),
            f"  {self.n_resamples} resamples of {self.n_units} {self.unit}s "
            f"(seed {self.seed}), {self.n_failed} failed, {self.n_unconverged} unconverged",
        ]
        table = self.param_intervals()
        for name, row in table.iterrows():
            lines.append(f"  {name:>8} {row.estimate:10.4g}  [{row.lo:.4g}, {row.hi:.4g}]")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# Bytes per row besides the resample counts: inputs, residuals, the objective's temporaries.
_BYTES_PER_ROW = 2_000
# Resamples per task sent to a worker process: small tasks balance the workers and let the
# progress line move; each carries only the indices of its resamples.
_RESAMPLES_PER_TASK = 4


def _check_memory(n_rows: int, n_units: int, n_resamples: int, n_jobs: int) -> None:
    """Refuse, naming the numbers, a bootstrap the machine cannot hold (rather than be killed
    by the kernel without a word): float32 counts per resample and unit (a run, or a row), a
    second copy when they are shipped to worker processes."""
    from scalelab.resources import GB, available_memory

    counts = n_units * n_resamples * 4 * (2 if n_jobs > 1 else 1)
    need = counts + n_rows * _BYTES_PER_ROW
    free = available_memory()
    if need > free:
        raise ValueError(
            f"a bootstrap of {n_rows:,} rows × {n_resamples} resamples needs about "
            f"{need / GB:.3g} GB; {free / GB:.3g} GB is available: use fewer --resamples, "
            "--jobs 1, or fewer rows"
        )


_WORKER: dict[str, Any] = {}  # what every task of a worker process refits (_init_worker)


def _init_worker(
    problem: Problem, starts: np.ndarray, counts: np.ndarray, units: np.ndarray | None
) -> None:
    _WORKER.update(problem=problem, starts=starts, counts=counts, units=units)


def _run_task(index: np.ndarray) -> tuple[np.ndarray, ...]:
    w = _WORKER
    return refit_weighted(w["problem"], w["starts"], w["counts"][index], w["units"])


def bootstrap(
    fit: FitResult,
    runs: pd.DataFrame,
    *,
    n_resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    n_jobs: int = 1,
    n_starts: int = 2,
    progress: ProgressFn | None = None,
) -> BootstrapResult:
    """Resample runs with replacement and refit ``fit.law`` on each resample.

    Args:
        fit: the full-data fit (``fit_law``) whose law and objective are reused.
        runs: the same runs that were fitted.
        n_resamples: number of resamples (failed ones are dropped and counted).
        level: default interval level of the result.
        seed: seeds the resampling and the residual draws of prediction intervals.
        n_jobs: worker processes (the counts are drawn up front, so results do not depend
            on it).
        n_starts: warm starts per resample, taken from the full fit's distinct optima.
        progress: receives a line with the resamples done every few seconds once the
            bootstrap has run for 3 s (default: the ``scalelab.forecast`` logger, INFO level).
    """
    level = check_level(level)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2; got {n_resamples}")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1; got {n_jobs}")
    law = fit.law
    df = prepare_runs(runs, law.variables, context="the bootstrap")
    if len(df) != fit.n_points:
        raise ValueError(
            f"runs have {len(df)} rows but the fit used {fit.n_points}; "
            "pass the runs that were fitted"
        )
    units, n_units, unit = resample_units(df)
    _check_memory(len(df), n_units, n_resamples, n_jobs)
    problem = Problem.from_runs(df, law, fit.objective)
    starts = fit.optima[:n_starts] if len(fit.optima) else law.to_theta()[None, :]
    counts = resample_counts(n_units, n_resamples, seed)
    row_units = None if unit == "row" else units  # rows of one run share its count
    done = Progress(progress).stage("bootstrap", "resamples")
    if n_jobs == 1:
        thetas, _, converged = refit_weighted(problem, starts, counts, row_units, done)
    else:
        thetas = np.full((n_resamples, len(law.param_names)), np.nan)
        converged = np.zeros(n_resamples, dtype=bool)
        tasks = np.array_split(
            np.arange(n_resamples), max(1, -(-n_resamples // _RESAMPLES_PER_TASK))
        )
        with ProcessPoolExecutor(
            max_workers=n_jobs,
            initializer=_init_worker,
            initargs=(problem, starts, counts, row_units),
        ) as pool:
            futures = {pool.submit(_run_task, index): index for index in tasks}
            finished = 0
            for future in as_completed(futures):
                index = futures[future]
                thetas[index], _, converged[index] = future.result()
                finished += len(index)
                done(finished, n_resamples)

    ok = np.all(np.isfinite(thetas), axis=1)
    samples = params_from_thetas(law, thetas[ok])
    ok_samples = np.all(np.isfinite(samples), axis=1)
    samples = samples[ok_samples]
    n_failed = int(n_resamples - len(samples))
    residuals = problem.y - law.log_model(law.to_theta(), problem.z)

    warnings = [w for w in fit.warnings if not w.startswith(E_NOT_IDENTIFIED)]
    warnings += identifiability_warnings(law, samples, fit.loss_min, level)
    if n_failed > _FAILURE_WARN_SHARE * n_resamples:
        warnings.append(f"{n_failed} of {n_resamples} resamples failed to fit")
    n_unconverged = int((~converged[ok]).sum())
    if n_unconverged > _FAILURE_WARN_SHARE * n_resamples:
        warnings.append(f"{n_unconverged} of {n_resamples} resample fits did not converge")
    if len(samples) < 2:
        raise RuntimeError(f"only {len(samples)} of {n_resamples} resamples could be fitted")
    return BootstrapResult(
        fit=fit,
        samples=samples,
        level=level,
        seed=seed,
        n_resamples=n_resamples,
        n_failed=n_failed,
        n_unconverged=n_unconverged,
        unit=unit,
        n_units=n_units,
        residuals=residuals,
        warnings=tuple(warnings),
    )
