"""Capability prediction end to end (the GPT-4 report's §3.2): pass rates on held-out suites
forecast from a ladder of models with 100-1000x less compute, logged before the target trains.

``run_capability_study(spec_path, targets, workspace)`` runs a spec with ``eval:`` suites
(``sweeps/capability.yaml``) resumably:

1. the ladder and its edge extensions (``predictable.run_ladder``); every trial runs the
   suites after its final validation and logs one ``eval-<suite>.csv`` per suite;
2. the frontier: the lowest-loss run of each budget, whose per-problem tables are read back;
3. per target, before it trains, one ``kind=forecast`` run holding, for each suite:
   - the GPT-4 form −E_P[log pass_rate] = A·C^-k over the problems the ladder's smallest
     frontier run solves (pass rate above ``capability.FLOOR``), with a bootstrap interval;
   - a logistic in log compute for the mean pass rate (``pass_at_1``), with a bootstrap
     interval;
4. the target trains in the ladder's shape family (``predictable_v2.plan``) with the same
   suites, and each forecast is scored on the same problems.

The runs' compute is the full FLOP count (``compute_full``), as the targets are planned.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.forecast import capability
from scalelab.forecast.bootstrap import bootstrap
from scalelab.forecast.fit import fit_law
from scalelab.forecast.forecast import cell_table
from scalelab.forecast.forms import frontier_points
from scalelab.forecast.isoflop_frontier import interpolated_frontier
from scalelab.results.evals import per_problem
from scalelab.studies.predictable import Plan, ladder_runs, run_ladder, train_target
from scalelab.studies.predictable_v2 import plan, profile
from scalelab.sweep.spec import SweepSpec
from scalelab.workspace import Workspace

LEVEL = 0.9
RESAMPLES = 400
ABRUPT = 0.5  # a pass rate that rises by this much between neighbouring computes


def _prediction(table: pd.DataFrame, law: Any, compute: float, seed: int) -> dict[str, Any]:
    fit = fit_law(table, law, check_identifiability=False)
    pred = bootstrap(fit, table, n_resamples=RESAMPLES, level=LEVEL, seed=seed).predict(
        compute=compute
    )
    return {
        "value": float(pred.value),
        "lo": float(pred.lo),
        "hi": float(pred.hi),
        "level": LEVEL,
        "law": str(fit.law),
        "params": {k: float(v) for k, v in fit.law.params.items()},
        "points": {str(c): float(v) for c, v in zip(table["compute"], table["loss"], strict=True)},
    }


def suite_forecast(table: pd.DataFrame, compute: float, seed: int = 0) -> dict[str, Any]:
    """Both forecasts of one suite at ``compute`` from its frontier runs' per-problem table.

    ``gpt4``: −mean log pass rate over ``problems`` (those the smallest run solves); ``sigmoid``:
    the mean pass rate. A form that cannot be fitted records why instead."""
    out: dict[str, Any] = {}
    try:
        kept = capability.solvable_problems(table)
        runs = capability.capability_runs(table)
        out["problems"] = kept
        out["gpt4"] = _prediction(runs, capability.gpt4_law(), compute, seed)
    except (ValueError, RuntimeError) as err:
        out["gpt4"] = {"error": str(err)}
    means = table.groupby(["run_id", "compute"], as_index=False)["pass_rate"].mean()
    try:
        rates = capability.pass_rate_runs(means, "pass_rate")
        pred = _prediction(rates, capability.sigmoid_law(), compute, seed)
        out["sigmoid"] = pred | {"hi": min(pred["hi"], 1.0)}
    except (ValueError, RuntimeError) as err:
        out["sigmoid"] = {"error": str(err)}
    return out


def actual_values(table: pd.DataFrame, problems: Sequence[str] | None) -> dict[str, float]:
    """A run's measured values: ``gpt4`` (−mean log pass rate over ``problems``), ``sigmoid``
    (mean pass rate) and ``greedy`` (share of problems greedy decoding solves)."""
    out = {
        "sigmoid": float(table["pass_rate"].mean()),
        "greedy": float(table["passed"].astype(float).mean()),
    }
    if problems:
        kept = table[table["problem"].isin(problems)]["pass_rate"].to_numpy(dtype=float)
        out["gpt4"] = capability.mean_log_pass(kept)
    return out


def problem_flags(table: pd.DataFrame) -> pd.DataFrame:
    """Per suite and problem: ``non_monotone`` (a larger compute does worse by more than
    ``capability.TOLERANCE``), ``abrupt`` (the pass rate rises by ``ABRUPT`` or more between
    neighbouring computes) and the pass rates at the smallest and largest compute."""
    rows = []
    for suite, group in table.groupby("suite"):
        curves = capability.problem_curves(group, tolerance=capability.TOLERANCE)
        for problem, curve in curves.groupby("problem"):
            rates = curve["pass_rate"].to_numpy()
            rows.append(
                {
                    "suite": suite,
                    "problem": problem,
                    "non_monotone": bool(curve["non_monotone"].iloc[0]),
                    "abrupt": bool(len(rates) > 1 and np.diff(rates).max() >= ABRUPT),
                    "first": float(rates[0]),
                    "last": float(rates[-1]),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class Outcome:
    """One target: its plan, the forecasts logged before it trained, and what it measured."""

    plan: Plan
    forecast_run_id: str
    target_run_id: str | None
    forecasts: dict[str, dict[str, Any]]  # suite -> suite_forecast
    actual: dict[str, dict[str, float]]  # suite -> actual_values (empty while pending)


def _fingerprint(runs: pd.DataFrame) -> str:
    return "cap-" + hashlib.sha256(",".join(sorted(runs["run_id"])).encode()).hexdigest()[:12]


def _log(
    workspace: Workspace,
    spec: SweepSpec,
    fingerprint: str,
    requested: float,
    target: Plan,
    forecasts: dict[str, dict[str, Any]],
) -> str:
    from scalelab.results.forecasts import log_forecast

    metrics = {}
    for suite, entry in forecasts.items():
        for form in ("gpt4", "sigmoid"):
            if "value" in entry[form]:
                for key in ("value", "lo", "hi"):
                    metrics[f"predicted_{form}.{suite}.{key}"] = entry[form][key]
    return log_forecast(
        workspace,
        spec.experiment_name,
        name=f"capability forecast C{target.compute_full:.2g}",
        ladder=fingerprint,
        target_compute=requested,
        params={**target.row(), "lr": target.lr, "batch_size": target.batch_size},
        metrics=metrics,
        record={"plan": target.__dict__, "capability": forecasts, "design": "capability"},
    )


def ensure_forecast(
    workspace: Workspace,
    spec: SweepSpec,
    cells: pd.DataFrame,
    table: pd.DataFrame,
    fingerprint: str,
    compute_full: float,
    echo: Callable = print,
) -> tuple[str, Plan, dict[str, dict[str, Any]]]:
    """The capability forecast of one target: logged now unless this ladder has one for it."""
    from scalelab.results import forecasts

    found = forecasts.find_forecast(workspace, spec.experiment_name, fingerprint, compute_full)
    if found is not None:
        record = forecasts.load_forecast(workspace, found)
        echo(f"capability forecast for C={compute_full:.3g} already logged (run {found})")
        return found, Plan(**record["plan"]), record["capability"]
    target = plan(spec, cells, interpolated_frontier(profile(cells, {})), compute_full)
    predicted = {
        suite: suite_forecast(group, target.compute_full) for suite, group in table.groupby("suite")
    }
    run_id = _log(workspace, spec, fingerprint, compute_full, target, predicted)
    echo(f"capability forecast for C={target.compute_full:.3g} logged (run {run_id})")
    return run_id, target, predicted


def score(workspace: Workspace, forecast_run_id: str, target_run_id: str, outcome: Outcome) -> None:
    """Log each suite's actual values, errors and coverage on the forecast run."""
    from scalelab.results.forecasts import record_outcome

    metrics = {}
    for suite, predicted in outcome.forecasts.items():
        for form in ("gpt4", "sigmoid"):
            value = outcome.actual[suite].get(form)
            entry = predicted[form]
            if value is None or "value" not in entry:
                continue
            metrics[f"actual_{form}.{suite}"] = value
            if value > 0:
                metrics[f"error_{form}.{suite}"] = entry["value"] / value - 1.0
            metrics[f"covered_{form}.{suite}"] = float(entry["lo"] <= value <= entry["hi"])
        metrics[f"actual_greedy.{suite}"] = outcome.actual[suite]["greedy"]
    record_outcome(workspace, forecast_run_id, target_run_id, metrics)


def run_capability_study(
    spec_path: str | Path,
    targets: Sequence[float],
    workspace: Workspace,
    *,
    workers: int = 1,
    train_targets: Sequence[float] | None = None,
    echo: Callable = print,
) -> dict[str, Any]:
    """The whole study (see the module docstring). ``train_targets``: the targets to train
    (default all); the others' forecasts are logged now and scored on a later call."""
    from scalelab.results.forecasts import find_target

    spec, sweeps = run_ladder(Path(spec_path), workspace, workers=workers, echo=echo)
    if not spec.eval:
        raise ValueError(f"{spec_path}: a capability study needs eval: suites in its spec")
    runs = ladder_runs(spec.experiment_name, sweeps, workspace)
    cells = cell_table(runs)
    front = frontier_points(cells)
    if len(front) < 3:
        raise ValueError(f"the ladder has {len(front)} budgets; a capability law needs 3 or more")
    table = per_problem(workspace, front, spec.eval, compute="compute_full")
    fingerprint = _fingerprint(runs)
    wanted = set(targets if train_targets is None else train_targets)
    outcomes, measured = [], [table]
    for compute in sorted(targets):
        forecast_id, target, predicted = ensure_forecast(
            workspace, spec, cells, table, fingerprint, compute, echo
        )
        target_id = find_target(workspace, spec.experiment_name, forecast_id)
        if target_id is None and compute in wanted:
            echo(
                f"training target: N={target.n_params:,} (d_model {target.d_model}) "
                f"D={target.tokens:,} lr={target.lr:.3g} batch={target.batch_size}"
            )
            target_id = train_target(target, spec, workspace, forecast_id).run_id
        outcome = Outcome(target, forecast_id, target_id, predicted, {})
        if target_id is not None:
            row = {"run_id": target_id, "compute_full": target.compute_full}
            result = per_problem(workspace, pd.DataFrame([row]), spec.eval, compute="compute_full")
            outcome.actual = {
                suite: actual_values(group, predicted[suite].get("problems"))
                for suite, group in result.groupby("suite")
            }
            score(workspace, forecast_id, target_id, outcome)
            measured.append(result)
        outcomes.append(outcome)
    everything = pd.concat(measured, ignore_index=True)
    return {
        "spec": spec,
        "sweeps": sweeps,
        "runs": runs,
        "cells": cells,
        "frontier": front,
        "per_problem": everything,
        "flags": problem_flags(everything),
        "outcomes": outcomes,
        "losses": {
            **dict(zip(front["compute_full"], front["loss"], strict=True)),
            **{
                o.plan.compute_full: _final(workspace, o.target_run_id, "loss")
                for o in outcomes
                if o.target_run_id is not None
            },
        },
        "seconds": {
            o.target_run_id: _final(workspace, o.target_run_id, "wall_time")
            for o in outcomes
            if o.target_run_id is not None
        },
    }


def _final(workspace: Workspace, run_id: str, metric: str) -> float:
    from scalelab.results.forecasts import final_metrics

    return float(final_metrics(workspace, run_id).get(metric, math.nan))
