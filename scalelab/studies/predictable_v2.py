"""Predictable scaling, second design: a low-noise ladder in the targets' shape family.

``run_study_v2(spec_path, targets, workspace)`` runs ``sweeps/predictable-scaling-v2.yaml``
(or another spec of the same design) end to end, resumably:

1. the ladder and its edge extensions, as the first study (``predictable.run_ladder``);
2. seed re-runs: the ``best`` cells of every budget trained again with new seeds at their
   best learning rate and batch (``kind=seed-rerun`` MLflow runs), so each profile's
   optimum and the frontier's noise are measured, not assumed;
3. the IsoFLOP profiles (each cell's loss averaged over its seeds) and each budget's optimum
   from a parabola in log N (``scalelab.forecast.isoflop_frontier``);
4. per target, before it trains, one ``kind=forecast`` run holding the **primary** forecast,
   the law ``scalelab fit --law auto`` chooses by the forecasting benchmark's rule with its
   calibrated interval, and, logged at the same moment as secondary forecasts, the odds law
   and the GPT-4 form E + A·C^-α on the interpolated frontier (each interval from its own
   in-ladder backtest);
5. the target trains in the ladder's shape family with the planned learning rate (the
   spec's width rule times the multiplier the ladder's upper half preferred) and batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.forecast.forecast import (
    Candidate,
    Forecast,
    Selection,
    backtest_candidate,
    cell_table,
    edge_budgets,
    forecast,
    select_law,
)
from scalelab.forecast.isoflop_frontier import interpolated_frontier, scatter
from scalelab.forecast.laws import PlateauLaw, PowerLaw
from scalelab.studies.predictable import (
    Plan,
    Rules,
    ensure_forecast,
    fit_rules,
    ladder_runs,
    plan_target,
    run_ladder,
    run_target,
)
from scalelab.sweep.spec import SweepSpec, WidthRule
from scalelab.workspace import Workspace

SEEDS = (1, 2)
BEST = 2  # cells per budget re-run with new seeds
RERUN = "seed-rerun"


def secondary_candidates(plateau: float) -> list[Candidate]:
    """The laws logged beside the primary forecast, all on the interpolated frontier."""
    return [
        Candidate(
            "odds: L(C) = L0/(1 + (C/C0)^α), L0 = unigram entropy, interpolated frontier",
            PlateauLaw(plateau=plateau, irreducible=False),
            "frontier",
        ),
        Candidate(
            "GPT-4 form: L(C) = E + A·C^-α, interpolated frontier",
            PowerLaw(variable="compute"),
            "frontier",
        ),
    ]


def _rerun_losses(workspace: Workspace, experiment: str) -> dict[str, float]:
    """Final loss of every finished seed re-run, by run name (``<cell>/seed<k>``)."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.kind = '{RERUN}' AND attributes.status = 'FINISHED'",
        max_results=5000,
    )
    return {
        r.data.tags["mlflow.runName"]: float(r.data.metrics["loss"])
        for r in runs
        if "loss" in r.data.metrics
    }


def rerun_cells(cells: pd.DataFrame, best: int = BEST) -> pd.DataFrame:
    """The ``best`` lowest-loss cells of every budget."""
    return cells.sort_values("loss", kind="stable").groupby("budget").head(best)


def _rerun_config(spec: SweepSpec, cell: pd.Series, seed: int) -> Any:
    from scalelab.train import TrainConfig

    step = int(cell["batch_size"]) * spec.context
    tokens = int(cell["tokens"])
    return TrainConfig(
        n_params_target=float(cell["n_params"]),
        variant=spec.variant,
        context=spec.context,
        corpus=spec.corpus,
        tokenizer=spec.tokenizer,
        tokens=tokens,
        batch_size=int(cell["batch_size"]),
        lr=float(cell["lr"]),
        warmup=spec.search.warmup if isinstance(spec.search.warmup, float) else 0.05,
        val_every=max(step, tokens // spec.validations // step * step),
        seed=seed,
        experiment=spec.experiment_name,
        run_name=f"{cell['cell']}/seed{seed}",
        **spec.train,
    )


def run_seed_reruns(
    spec: SweepSpec,
    cells: pd.DataFrame,
    workspace: Workspace,
    *,
    seeds: Sequence[int] = SEEDS,
    best: int = BEST,
    echo: Callable = print,
) -> dict[str, float]:
    """Train the re-runs not yet finished (grouped by shape and batch, as a sweep groups
    trials); return every re-run's loss by run name."""
    from scalelab.training.grouped_run import train_group

    done = _rerun_losses(workspace, spec.experiment_name)
    todo = [
        _rerun_config(spec, cell, seed)
        for _, cell in rerun_cells(cells, best).iterrows()
        for seed in seeds
        if f"{cell['cell']}/seed{seed}" not in done
    ]
    groups: dict[tuple[float, int], list[Any]] = {}
    for cfg in todo:
        groups.setdefault((cfg.n_params_target, cfg.batch_size), []).append(cfg)
    size = spec.group.max_trials
    for (n, batch), cfgs in sorted(groups.items()):
        for i in range(0, len(cfgs), size):
            chunk = cfgs[i : i + size]
            echo(f"seed re-runs: N={n:.3g} batch={batch}: {len(chunk)} runs")
            for cfg, result in zip(
                chunk, train_group(chunk, workspace, tags={"kind": RERUN}), strict=True
            ):
                if isinstance(result, BaseException):
                    echo(f"  {cfg.run_name}: failed ({result})")
    return _rerun_losses(workspace, spec.experiment_name)


def profile(cells: pd.DataFrame, reruns: dict[str, float]) -> pd.DataFrame:
    """``cells`` with each re-run cell's loss the mean over its seeds (``loss_best``: the
    sweep's best trial; ``seed_losses``: every seed's loss; ``seed_sd``: their spread)."""
    out = cells.assign(loss_best=cells["loss"], seed_losses=None, seed_sd=np.nan)
    for i, cell in out.iterrows():
        extra = [v for k, v in reruns.items() if k.rsplit("/seed", 1)[0] == cell["cell"]]
        if extra:
            losses = [float(cell["loss_best"]), *extra]
            out.at[i, "seed_losses"] = losses
            out.at[i, "loss"] = float(np.mean(losses))
            out.at[i, "seed_sd"] = float(np.std(losses, ddof=1))
    return out


def best_multiplier(spec: SweepSpec, cells: pd.DataFrame) -> float:
    """The width rule's multiplier the upper half of the ladder's budgets preferred (the
    geometric median of their best cells' lr over the rule's), snapped to the grid."""
    rule = spec.search.lr
    if not isinstance(rule, WidthRule):
        raise ValueError("this study plans learning rates from a width rule (search.lr.scale)")
    budgets = sorted(cells["budget"].unique())
    upper = cells[cells["budget"].isin(budgets[len(budgets) // 2 :])]
    best = upper.loc[upper.groupby("budget")["loss"].idxmin()]
    ratios = best["lr"].to_numpy() / np.array([rule.lr(int(d)) for d in best["d_model"]])
    wanted = math.exp(float(np.median(np.log(ratios))))
    return min(rule.multipliers, key=lambda m: abs(math.log(m / wanted)))


def plan(spec: SweepSpec, cells: pd.DataFrame, front: pd.DataFrame, compute_full: float) -> Plan:
    """The target's shape (the spec's family) at the interpolated optima's tokens per
    parameter (upper half, held constant), its lr from the width rule and the preferred
    multiplier, its batch from the ladder's best cells (``fit_rules``)."""
    upper = front.iloc[len(front) // 2 :]
    upper = upper[upper["interior"]] if upper["interior"].any() else upper
    ratio = float(np.exp(np.mean(np.log(upper["tokens"] / upper["n_params"]))))
    rules = Rules(tokens_per_param=ratio, lr=(1.0, 0.0), batch=fit_rules(cells).batch)
    target = plan_target(spec, rules, compute_full)
    rule = spec.search.lr
    assert isinstance(rule, WidthRule)
    return replace(target, lr=rule.lr(target.d_model) * best_multiplier(spec, cells))


def secondary_forecasts(front: pd.DataFrame, row: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each secondary law's forecast for ``row``, its interval from its own backtest."""
    out = {}
    for candidate in secondary_candidates(float(front["unigram"].iloc[0])):
        backtests = backtest_candidate(candidate, front)
        if not backtests:
            out[candidate.name] = {"error": "could not be backtested on this frontier"}
            continue
        result = forecast(front, row, Selection(candidate, backtests))
        out[candidate.name] = result.to_dict()
    return out


def noise(cells: pd.DataFrame, front: pd.DataFrame, selection: Selection) -> dict[str, float]:
    """Seed-to-seed spread (median relative SD of re-run cells) and the frontier's RMS
    scatter around the odds law fitted to it."""
    reran = cells.dropna(subset=["seed_sd"])
    out = {
        "seed_sd": float(np.median(reran["seed_sd"] / reran["loss"])) if len(reran) else math.nan
    }
    odds = secondary_candidates(float(front["unigram"].iloc[0]))[0]
    from scalelab.forecast.forecast import fit_candidate

    law = fit_candidate(odds, front)
    out["frontier_scatter_odds"] = scatter(front, law.predict(compute=front["compute_full"]))
    return out


def _fingerprint(runs: pd.DataFrame, reruns: dict[str, float]) -> str:
    ids = sorted([*runs["run_id"], *reruns])
    return "v2-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]


def run_study_v2(
    spec_path: str | Path,
    targets: Sequence[float],
    workspace: Workspace,
    *,
    workers: int = 1,
    train_targets: Sequence[float] | None = None,
    seeds: Sequence[int] = SEEDS,
    best: int = BEST,
    echo: Callable = print,
) -> dict[str, Any]:
    """The whole study (see the module docstring). ``train_targets``: the targets to train
    (default all); the others are forecast and logged, and train on a later call. ``seeds``
    re-run the ``best`` cells of each budget."""
    spec, sweeps = run_ladder(Path(spec_path), workspace, workers=workers, echo=echo)
    runs = ladder_runs(spec.experiment_name, sweeps, workspace)
    cells = cell_table(runs)
    reruns = run_seed_reruns(spec, cells, workspace, seeds=seeds, best=best, echo=echo)
    cells = profile(cells, reruns)
    front = interpolated_frontier(cells)
    selection = select_law(cells, by="rule")
    echo(selection.choice.line() if selection.choice else f"law: {selection.chosen.name}")
    fingerprint = _fingerprint(runs, reruns)

    def planner(compute_full: float) -> tuple[Plan, Forecast, dict[str, Any]]:
        target = plan(spec, cells, front, compute_full)
        row = target.row()
        return (
            target,
            forecast(cells, row, selection),
            {
                "secondary": secondary_forecasts(front, row),
                "design": "v2",
            },
        )

    outcomes, pending = [], []
    wanted = set(targets if train_targets is None else train_targets)
    for compute in sorted(targets):
        args = (spec, cells, selection, compute, workspace)
        how = {"echo": echo, "planner": planner, "fingerprint": fingerprint}
        if compute in wanted:
            outcomes.append(run_target(*args, **how))
            continue
        forecast_id, target, result, _ = ensure_forecast(*args, **how)
        pending.append({"forecast_run_id": forecast_id, "plan": target, "forecast": result})
    return {
        "spec": spec,
        "sweeps": sweeps,
        "runs": runs,
        "cells": cells,
        "frontier": front,
        "reruns": reruns,
        "selection": selection,
        "noise": noise(cells, front, selection),
        "outcomes": outcomes,
        "pending": pending,
        "edges": edge_budgets(cells),
    }
