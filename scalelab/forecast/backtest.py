"""Backtests: fit on the cheap runs, predict the expensive ones, and score the predictions.

A backtest cuts the runs at a compute budget (C_max/k for k = 10, 100, 1000 by default, or
absolute cuts), fits each law on the runs at or below the cut, bootstraps it, predicts every
run above the cut with an interval, and reports the relative error and whether each interval
covers the observed loss. The default laws compare Chinchilla's form with its no-offset
variant; a baseline that predicts the best loss seen so far shows what "no extrapolation"
would score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.forecast.averaging import fit_average
from scalelab.forecast.bootstrap import BootstrapResult, bootstrap
from scalelab.forecast.calibration import stored_form_error
from scalelab.forecast.chooser import Choice, choose_form
from scalelab.forecast.fit import Engine, FitResult, fit_law
from scalelab.forecast.forms import form_points, law_for_key
from scalelab.forecast.intervals import DEFAULT_LEVEL, check_level, quantile_interval
from scalelab.forecast.laws import Chinchilla, Law, make_law
from scalelab.forecast.objectives import Objective
from scalelab.forecast.runs import prepare_runs, resample_units
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import AUTO_LAW

pd = lazy_module("pandas")

BASELINE = "best_so_far"


def default_laws() -> dict[str, Law]:
    """Chinchilla's form against the same form without the irreducible term."""
    return {"chinchilla": Chinchilla(), "chinchilla_no_offset": Chinchilla(irreducible=False)}


@dataclass(frozen=True)
class BacktestResult:
    """Per-run predictions (``runs``), per-(cut, law) scores (``summary``) and fitted laws."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    fits: dict[str, FitResult]
    level: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs.to_dict(orient="list"),
            "summary": self.summary.to_dict(orient="list"),
            "fits": {k: v.to_dict() for k, v in self.fits.items()},
            "level": self.level,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> BacktestResult:
        return cls(
            runs=pd.DataFrame(payload["runs"]),
            summary=pd.DataFrame(payload["summary"]),
            fits={k: FitResult.from_dict(v) for k, v in payload["fits"].items()},
            level=float(payload["level"]),
            warnings=tuple(payload.get("warnings", ())),
        )


def _cuts(
    compute: pd.Series, factors: Sequence[float] | None, max_compute: Sequence[float] | None
) -> list[tuple[float, float]]:
    """(factor k or NaN, compute cut) pairs."""
    if factors is not None and max_compute is not None:
        raise ValueError("give factors or max_compute, not both")
    if max_compute is not None:
        cuts = [float(c) for c in np.atleast_1d(max_compute)]
        if any(not np.isfinite(c) or c <= 0 for c in cuts):
            raise ValueError(f"max_compute must be positive; got {cuts}")
        return [(np.nan, c) for c in cuts]
    factors = (10.0, 100.0, 1000.0) if factors is None else [float(k) for k in factors]
    if any(not np.isfinite(k) or k <= 1 for k in factors):
        raise ValueError(f"factors must be > 1; got {factors}")
    c_max = float(compute.max())
    return [(k, c_max / k) for k in factors]


def _score(
    table: pd.DataFrame, truth: np.ndarray, value: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> pd.DataFrame:
    out = table.copy()
    out["predicted"], out["lo"], out["hi"] = value, lo, hi
    out["rel_error"] = (value - truth) / truth
    out["covered"] = (lo <= truth) & (truth <= hi)
    return out


def _interval(
    boot: BootstrapResult,
    test: pd.DataFrame,
    choice: Choice | None,
    max_compute: float,
    level: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, value) for the held-out runs; ``auto``'s widened by the form error."""
    law = boot.fit.law
    pred = boot.predict(**{v: test[v].to_numpy() for v in law.variables})
    form_error = stored_form_error(choice.form.name) if choice is not None else None
    if form_error is None:
        return pred.lo, pred.hi, pred.value
    decades = np.log10(test["compute"].to_numpy() / max_compute)
    lo, hi = form_error.widen(pred.value, pred.lo, pred.hi, decades, level)
    return lo, hi, pred.value


def _fit_one(
    law: Law | str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    level: float,
    engine: Engine,
    objective: Objective | str,
    n_resamples: int,
    seed: int,
    n_jobs: int,
) -> tuple[Choice | None, FitResult, BootstrapResult, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one law (or ``auto``'s choice) on ``train`` and predict ``test`` with intervals."""
    choice = choose_form(train) if law == AUTO_LAW else None
    points = train if choice is None else form_points(choice.form, train)
    how = {"n_resamples": n_resamples, "level": level, "seed": seed, "n_jobs": n_jobs}
    if choice is not None and choice.form.members:
        boot = fit_average(choice.form, train, **how)
    else:
        template = law if choice is None else law_for_key(choice.form.name, train)
        boot = bootstrap(
            fit_law(points, template, engine=engine, objective=objective), points, **how
        )
    fit = boot.fit
    lo, hi, value = _interval(boot, test, choice, float(points["compute"].max()), level)
    return choice, fit, boot, lo, hi, value


def _best_so_far(
    train: pd.DataFrame,
    head: pd.DataFrame,
    truth: np.ndarray,
    n_resamples: int,
    level: float,
    seed: int,
) -> pd.DataFrame:
    """The baseline: predict the lowest training loss, its interval from resampled runs."""
    rng = np.random.default_rng(seed)
    units, n_units, _ = resample_units(train)
    loss = train["loss"].to_numpy()
    mins = [
        loss[np.isin(units, rng.integers(0, n_units, n_units))].min() for _ in range(n_resamples)
    ]
    lo, hi = quantile_interval(np.array(mins), level)
    n = len(truth)
    return _score(head, truth, np.full(n, loss.min()), np.full(n, lo), np.full(n, hi))


def _score_cut(
    templates: Mapping[str, Any],
    train: pd.DataFrame,
    test: pd.DataFrame,
    head: pd.DataFrame,
    label: str,
    fits: dict[str, FitResult],
    warnings: list[str],
    settings: tuple,
) -> dict[str, pd.DataFrame]:
    """Each law fitted on ``train`` and scored on ``test``; fits and warnings are collected."""
    level, engine, objective, n_resamples, seed, n_jobs = settings
    truth = test["loss"].to_numpy()
    scored: dict[str, pd.DataFrame] = {}
    for name, law in templates.items():
        try:
            choice, fit, boot, lo, hi, value = _fit_one(
                law, train, test, level, engine, objective, n_resamples, seed, n_jobs
            )
        except (ValueError, RuntimeError) as err:
            warnings.append(f"{label}, {name}: not fitted ({err})")
            continue
        scored[name] = _score(head, truth, value, lo, hi)
        if choice is not None:
            scored[name] = scored[name].assign(chosen=choice.form.name, reason=choice.reason)
        fits[f"{label}/{name}"] = fit
        warnings += [f"{label}, {name}: {w}" for w in boot.warnings]
    return scored


def _summary_row(table: pd.DataFrame, *, factor: float, cut: float, n_train: int) -> dict:
    """One law at one cut: its errors, coverage and width over the held-out runs."""
    err = table["rel_error"].abs()
    return {
        "factor": factor,
        "cut": cut,
        "law": table["law"].iloc[0],
        "chosen": table["chosen"].iloc[0] if "chosen" in table else "",
        "reason": table["reason"].iloc[0] if "reason" in table else "",
        "n_train": n_train,
        "n_test": len(table),
        "median_abs_rel_error": err.median(),
        "mean_abs_rel_error": err.mean(),
        "max_abs_rel_error": err.max(),
        "mean_rel_error": table["rel_error"].mean(),
        "coverage": table["covered"].mean(),
        "mean_rel_width": ((table["hi"] - table["lo"]) / table["loss"]).mean(),
    }


def backtest(
    runs: pd.DataFrame,
    *,
    laws: Mapping[str, Law | str] | None = None,
    factors: Sequence[float] | None = None,
    max_compute: Sequence[float] | float | None = None,
    n_resamples: int = 200,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    engine: Engine = "lbfgs",
    objective: Objective | str = "huber",
    baseline: bool = True,
    n_jobs: int = 1,
) -> BacktestResult:
    """Fit on runs with compute ≤ cut and predict every run above it.

    Args:
        runs: ``n_params``, ``tokens`` and/or ``compute``, ``loss`` (and optional ``run_id``).
        laws: name → law template; default :func:`default_laws`. The value ``"auto"``
            chooses the form on each cut's training runs (``chooser.choose_form``) and widens
            its intervals by the benchmark's form error, as ``scalelab predict`` does; the
            choice and its reason are in the summary's ``chosen`` and ``reason`` columns.
        factors: cuts at C_max/k (default k = 10, 100, 1000); or
        max_compute: absolute compute cut(s) in FLOPs.
        n_resamples, level, seed, n_jobs: bootstrap settings for the prediction intervals
            (``kind="prediction"``: they include the scatter of runs around the law).
        engine, objective: passed to ``fit_law``.
        baseline: also score ``best_so_far``, which predicts the lowest training loss.

    A law that cannot be fitted on a cut (e.g. too few runs) is skipped with a warning.
    """
    level = check_level(level)
    templates = {
        k: AUTO_LAW if v == AUTO_LAW else make_law(v) for k, v in (laws or default_laws()).items()
    }
    if BASELINE in templates:
        raise ValueError(f"'{BASELINE}' is reserved for the baseline")
    needed = {"compute"} | {
        v for law in templates.values() if isinstance(law, Law) for v in law.variables
    }
    if AUTO_LAW in templates.values():
        needed |= {"n_params", "tokens"} & set(runs.columns)
    needed = sorted(needed)
    df = prepare_runs(runs, needed, context="a backtest")
    base_cols = [c for c in ("run_id", "n_params", "tokens", "compute", "loss") if c in df]

    tables, rows, fits, warnings = [], [], {}, []
    for factor, cut in _cuts(df["compute"], factors, max_compute):
        train, test = df[df["compute"] <= cut], df[df["compute"] > cut]
        label = f"k={factor:g}" if np.isfinite(factor) else f"C<={cut:.3g}"
        if test.empty or train.empty:
            warnings.append(
                f"{label}: {len(train)} training and {len(test)} held-out runs; skipped"
            )
            continue
        scored = _score_cut(
            templates,
            train,
            test,
            test[base_cols].assign(factor=factor, cut=cut),
            label,
            fits,
            warnings,
            (level, engine, objective, n_resamples, seed, n_jobs),
        )
        if baseline:
            truth = test["loss"].to_numpy()
            head = test[base_cols].assign(factor=factor, cut=cut)
            scored[BASELINE] = _best_so_far(train, head, truth, n_resamples, level, seed)
        for name, table in scored.items():
            table = table.assign(law=name)
            tables.append(table)
            rows.append(_summary_row(table, factor=factor, cut=cut, n_train=len(train)))
    if not rows:
        raise ValueError("no cut left both training and held-out runs; " + "; ".join(warnings))
    return BacktestResult(
        runs=pd.concat(tables, ignore_index=True),
        summary=pd.DataFrame(rows),
        fits=fits,
        level=level,
        warnings=tuple(warnings),
    )
