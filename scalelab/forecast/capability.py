"""Capability laws: pass rates on held-out problems forecast from small models.

Two forms, fitted, bootstrapped and backtested by the loss laws' own machinery (``fit_law``,
``bootstrap``, ``backtest``) on a runs table whose ``loss`` column holds the capability value:

- the GPT-4 report's form (OpenAI 2023, §3.2): over the problems the smallest models solve,
  −E_P[log pass_rate(C)] = alpha·C^-k, a ``PowerLaw`` in compute without irreducible term
  (``capability_runs``, ``gpt4_law``);
- a logistic in log compute for one pass rate, ``SigmoidLaw`` (``pass_rate_runs``).

Per-problem curves (``problem_curves``) are flagged when a larger model does worse on a
problem than a smaller one, which the aggregate law assumes does not happen.

Input: a per-problem table, one row per (run, problem): ``run_id``, ``compute``, ``problem``
and ``pass_rate`` (the chance one sample solves it; ``scalelab.evals`` logs these tables).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scalelab.forecast.bootstrap import bootstrap
from scalelab.forecast.fit import FitResult, fit_law
from scalelab.forecast.intervals import Prediction
from scalelab.forecast.laws import PowerLaw, SigmoidLaw
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import MEAN_LOG_PASS

pd = lazy_module("pandas")

PER_PROBLEM_COLUMNS = ("run_id", "compute", "problem", "pass_rate")
FLOOR = 1e-6  # pass rates below it count as it: log 0 has no place in a mean of logs
# A larger compute doing worse by more than this (in pass rate) marks a problem non-monotone;
# smaller dips are sampling noise of the evaluation, not inverse scaling.
TOLERANCE = 0.02


def gpt4_law() -> PowerLaw:
    """−E_P[log pass_rate] = A·C^-alpha: the template ``fit_law`` takes for ``capability_runs``."""
    return PowerLaw(variable="compute", irreducible=False)


def sigmoid_law() -> SigmoidLaw:
    """pass_rate = 1 / (1 + (C/C0)^-alpha): the template for ``pass_rate_runs``."""
    return SigmoidLaw()


def _check(per_problem: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PER_PROBLEM_COLUMNS if c not in per_problem.columns]
    if missing:
        raise ValueError(
            f"per-problem results have no {', '.join(missing)} column(s); "
            f"need {', '.join(PER_PROBLEM_COLUMNS)}"
        )
    rates = pd.to_numeric(per_problem["pass_rate"], errors="coerce")
    if not rates.between(0.0, 1.0).all():
        raise ValueError("pass_rate must lie in [0, 1] (the chance one sample solves a problem)")
    return per_problem.assign(pass_rate=rates.astype(float))


def solvable_problems(per_problem: pd.DataFrame, floor: float = FLOOR) -> list[str]:
    """The problems that every run of the smallest compute solves at least sometimes: with a
    pass rate above ``floor`` (a rate at the floor would enter the mean as the floor)."""
    df = _check(per_problem)
    smallest = df[df["compute"] == df["compute"].min()]
    solved = smallest.groupby("problem")["pass_rate"].min()
    return sorted(solved.index[solved > floor])


def mean_log_pass(rates: np.ndarray, floor: float = FLOOR) -> float:
    """−mean log pass rate of one run over some problems, rates floored at ``floor``."""
    return float(-np.mean(np.log(np.maximum(np.asarray(rates, dtype=float), floor))))


def capability_runs(per_problem: pd.DataFrame, floor: float = FLOOR) -> pd.DataFrame:
    """One row per run: ``run_id``, ``compute`` and ``loss`` = −mean log pass_rate over the
    problems the smallest runs solve (pass rates floored at ``floor``), for ``gpt4_law``."""
    df = _check(per_problem)
    keep = solvable_problems(df, floor)
    if not keep:
        raise ValueError(
            "the smallest runs solve no problem: the GPT-4 form needs problems they solve "
            "(train larger models, or sample more completions per problem)"
        )
    df = df[df["problem"].isin(keep)]
    loss = df.groupby(["run_id", "compute"])["pass_rate"].apply(
        lambda p: mean_log_pass(p.to_numpy(), floor)
    )
    out = loss.rename("loss").reset_index()
    if (out["loss"] <= 0).any():
        raise ValueError(
            "a run solves every kept problem with certainty (−mean log pass rate 0): the "
            "suite is saturated and the GPT-4 form has nothing left to predict"
        )
    return out


def pass_rate_runs(runs: pd.DataFrame, metric: str, floor: float = FLOOR) -> pd.DataFrame:
    """``runs`` (one row per run, with ``compute`` and the pass-rate column ``metric``) as the
    table ``sigmoid_law`` fits: ``loss`` holds the pass rate, floored at ``floor``."""
    if metric not in runs.columns:
        raise ValueError(f"runs have no {metric!r} column (columns: {', '.join(runs.columns)})")
    rates = pd.to_numeric(runs[metric], errors="coerce")
    if not (rates > floor).any():
        raise ValueError(
            f"no run has a {metric} above {floor:g}: the runs solve nothing yet, so there is "
            "no curve to fit (train larger models, or use an easier suite)"
        )
    out = runs.loc[rates.notna(), [c for c in ("run_id", "compute") if c in runs.columns]]
    return out.assign(loss=np.maximum(rates[rates.notna()].to_numpy(dtype=float), floor))


def problem_curves(per_problem: pd.DataFrame, tolerance: float = 0.0) -> pd.DataFrame:
    """Per problem, its pass rate by compute (mean over runs of one compute), with
    ``non_monotone`` True when a larger compute does worse than a smaller one by more than
    ``tolerance``. Columns: ``problem``, ``compute``, ``pass_rate``, ``non_monotone``."""
    df = _check(per_problem)
    curves = df.groupby(["problem", "compute"], as_index=False)["pass_rate"].mean()
    curves = curves.sort_values(["problem", "compute"])
    best_before = curves.groupby("problem")["pass_rate"].cummax()
    dropped = (best_before - curves["pass_rate"]) > tolerance
    flagged = dropped.groupby(curves["problem"]).transform("any")
    return curves.assign(non_monotone=flagged.to_numpy()).reset_index(drop=True)


def forecast_pass_rate(
    runs: pd.DataFrame,
    metric: str,
    compute: float,
    *,
    level: float = 0.9,
    n_resamples: int = 200,
    seed: int = 0,
) -> tuple[Prediction, FitResult]:
    """The pass rate ``metric`` (a column of ``runs``) of a run of ``compute`` FLOPs, from
    ``sigmoid_law`` fitted to the runs, with a bootstrap ``level`` interval (clipped to 1)."""
    table = pass_rate_runs(runs, metric)
    fit = fit_law(table, sigmoid_law())
    pred = bootstrap(fit, table, n_resamples=n_resamples, level=level, seed=seed).predict(
        compute=compute
    )
    return replace(pred, hi=min(float(pred.hi), 1.0), quantity=metric), fit


def forecast_mean_log_pass(
    per_problem: pd.DataFrame,
    compute: float,
    *,
    level: float = 0.9,
    n_resamples: int = 200,
    seed: int = 0,
) -> tuple[Prediction, FitResult, list[str]]:
    """The GPT-4 form's −mean log pass rate of a run of ``compute`` FLOPs, over the problems
    the smallest runs of ``per_problem`` solve (returned too), with a bootstrap interval."""
    table = capability_runs(per_problem)
    fit = fit_law(table, gpt4_law(), check_identifiability=False)
    pred = bootstrap(fit, table, n_resamples=n_resamples, level=level, seed=seed).predict(
        compute=compute
    )
    return replace(pred, quantity=MEAN_LOG_PASS), fit, solvable_problems(per_problem)
