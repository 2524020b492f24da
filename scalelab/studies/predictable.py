"""Predictable scaling end to end: train a ladder, forecast a run 10-1000x larger, log the
forecast to MLflow, then train that run and score the forecast.

``run_study(spec_path, targets, workspace)``:

1. runs the ladder sweep in this process (the sweep coordinator, resumable), then, while a
   compute budget's best size sits at the edge of the sizes tried, a small extension sweep with
   a size beyond it (``<name>-x1``, ``-x2``...; the smallest shape, one layer of width 8,
   cannot shrink);
2. picks the law as ``scalelab fit --law auto`` does, by the forecasting benchmark's rule,
   and backtests every candidate inside the ladder as a diagnostic
   (``scalelab.forecast.forecast.select_law``);
3. plans each target from the ladder alone: N from the IsoFLOP optima extrapolated in compute,
   D from the full FLOPs per token, the learning rate and batch size from power laws fitted
   to the best trials of the ladder;
4. logs a ``kind=forecast`` MLflow run per target (the predicted loss, its interval and the
   predicted curve) and only then trains the target, tagged with the forecast's run id;
5. records the outcome on the forecast run (``actual_loss``, ``error``, ``covered``).

Each step is skipped when it is already done: a killed study resumes where it stopped, and a
forecast is never rewritten once its target has started.
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
import yaml

from scalelab.forecast.forecast import (
    Forecast,
    Selection,
    cell_table,
    curve_shape,
    edge_budgets,
    fit_rule,
    forecast,
    predict_curve,
    select_law,
)
from scalelab.forecast.forms import frontier_points
from scalelab.sweep.spec import SweepSpec, load_spec
from scalelab.vocab import compute_6nd, tokens_for_compute
from scalelab.workspace import Workspace

LADDER_COLUMNS = [
    "run_id",
    "sweep",
    "cell",
    "budget",
    "n_params",
    "n_params_total",
    "tokens",
    "compute_full",
    "lr",
    "batch_size",
    "d_model",
    "n_layer",
    "loss",
    "seconds",
    "unigram",
]
MAX_EXTENSIONS = 3
GROWTH = 1.6  # a new edge size is this factor beyond the old edge


@dataclass
class Plan:
    """The configuration of a target run, decided from the ladder only."""

    compute_full: float
    n_layer: int
    n_head: int
    d_model: int
    n_params: int
    n_params_total: int
    tokens: int
    lr: float
    batch_size: int
    n_params_wanted: float

    def row(self) -> dict[str, float]:
        return {
            "n_params": self.n_params,
            "n_params_total": self.n_params_total,
            "tokens": self.tokens,
            "compute": compute_6nd(self.n_params, self.tokens),
            "compute_full": self.compute_full,
        }


@dataclass
class Outcome:
    plan: Plan
    forecast: Forecast
    forecast_run_id: str
    target_run_id: str
    actual: float
    curve: pd.DataFrame  # fraction, predicted, actual
    seconds: float  # the target's training wall time

    @property
    def error(self) -> float:
        return self.forecast.loss / self.actual - 1.0

    @property
    def covered(self) -> bool:
        return self.forecast.lo <= self.actual <= self.forecast.hi


def run_sweep(spec_path: Path, workspace: Workspace, workers: int, echo: Callable) -> None:
    """Create or resume the sweep of ``spec_path`` and train it, in this process (with
    ``workers`` > 1 the coordinator starts its worker processes, as ``sweep run`` does)."""
    from scalelab.sweep.coordinator import open_sweep
    from scalelab.sweep.coordinator import run_sweep as train_sweep

    echo(f"sweep {spec_path} with {workers} worker(s)")
    sweep = open_sweep(spec_path, workspace, workers=workers)
    if not train_sweep(sweep, workers=workers, echo=echo).complete:
        raise RuntimeError(f"sweep {spec_path} did not complete")


def ladder_runs(experiment: str, sweeps: Sequence[str], workspace: Workspace) -> pd.DataFrame:
    """Every completed ladder trial: sizes, budget, hyper-parameters and final loss."""
    from scalelab.results.runs import mlflow_runs

    try:
        runs = mlflow_runs(experiment, workspace, sweeps=sweeps, completed=True)
    except ValueError as err:
        raise ValueError(f"{err}: run the ladder first") from None
    runs = runs.assign(cell=runs["sweep"] + "/" + runs["cell"])
    return runs[LADDER_COLUMNS].astype({"batch_size": int, "d_model": int, "n_layer": int})


def _extension_specs(spec: SweepSpec, index: int, cells: pd.DataFrame) -> list[dict]:
    """One spec per budget whose optimum sits at an edge: the size beyond that edge, trained at
    that budget only. A single spec of every added size at every such budget would also train
    each size at budgets that did not ask for it, where its shape may have been trained
    already (the capability ladder's N640-C1e9 was its N496-C1e9 again)."""
    from scalelab.model import config_for_params

    out = []
    for budget, side in sorted(edge_budgets(cells).items()):
        group = cells[cells["budget"] == budget]
        edge = group["n_params"].min() if side == "low" else group["n_params"].max()
        size = float(f"{(edge / GROWTH if side == 'low' else edge * GROWTH):.2g}")
        shape = config_for_params(size, variant=spec.variant, **spec.shape_family())
        if shape.n_params in set(group["n_params"]):
            continue  # already tried here: the smallest shape cannot shrink further
        data = spec.model_dump(mode="json", exclude_none=True)
        data.update(
            name=f"{spec.name}-x{index}-{len(out) + 1}",
            experiment=spec.experiment_name,
            sizes=[size],
            budgets={"compute": [budget], "flops": spec.budgets.flops},  # beyond any window
            description=f"a size beyond the {side} edge optimum of {spec.name} at C={budget:g}",
        )
        out.append(data)
    return out


def run_ladder(
    spec_path: Path, workspace: Workspace, *, workers: int = 1, echo: Callable = print
) -> tuple[SweepSpec, list[str]]:
    """Run the ladder and its edge extensions; return the spec and every sweep's name."""
    spec = load_spec(spec_path)
    run_sweep(spec_path, workspace, workers, echo)
    sweeps = [spec.name]
    folder = workspace.root / "ladder-extensions"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(1, MAX_EXTENSIONS + 1):
        cells = cell_table(ladder_runs(spec.experiment_name, sweeps, workspace))
        extensions = _extension_specs(spec, index, cells)
        if not extensions:
            break
        for data in extensions:
            path = folder / f"{data['name']}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            echo(
                f"edge optimum at budget {data['budgets']['compute'][0]:g}: adding size "
                f"{data['sizes'][0]:g}"
            )
            run_sweep(path, workspace, workers, echo)
            sweeps.append(data["name"])
    return spec, sweeps


@dataclass
class Rules:
    """How the ladder's best runs scale, fitted once: tokens per parameter, lr(N), batch(C)."""

    tokens_per_param: float
    lr: tuple[float, float]  # (k, p) of lr = k·N^p
    batch: tuple[float, float]  # (k, p) of batch = k·C^p


def fit_rules(cells: pd.DataFrame) -> Rules:
    """Allocation, learning rate and batch size for runs beyond the ladder.

    Allocation: the tokens per parameter of the best run of each budget in the ladder's upper
    half, held constant (N_opt ∝ C^0.5, as Hoffmann et al. 2022 found). A ladder spans a
    decade or less, over which a fitted N_opt ∝ C^a is too noisy to extrapolate 1000x: on
    the first ladders a came out at 0.87 (IsoFLOP minima, 90% interval −0.02 to 1.2) and 0.9
    (best size per budget), which planned targets of 2.5-2.8 tokens per parameter 100-1000x
    beyond. The learning rate falls with size and the batch grows with
    compute: each is a power law fitted to the best trial of every cell, and of every budget.
    """
    best = frontier_points(cells)
    upper = best.iloc[len(best) // 2 :]
    ratio = float(np.exp(np.mean(np.log(upper["tokens"] / upper["n_params"]))))
    batches = best["batch_size"].to_numpy().astype(float)
    k, p = fit_rule(best["budget"].to_numpy(), batches)
    if p < 0:
        # Larger budgets never want smaller batches (the critical batch grows as the loss
        # falls, Kaplan et al. 2020); a falling fit is noise or a search bound: hold it.
        k, p = float(np.exp(np.median(np.log(batches[-2:])))), 0.0
    return Rules(
        tokens_per_param=ratio,
        lr=fit_rule(cells["n_params"].to_numpy(), cells["lr"].to_numpy()),
        batch=(k, p),
    )


def plan_target(spec: SweepSpec, rules: Rules, compute_full: float) -> Plan:
    """Size, tokens, learning rate and batch of a compute-optimal run at ``compute_full``:
    the shape on the preset width rule whose D / N at this compute is closest to the rule's."""
    from scalelab.model import config_for_params
    from scalelab.sweep.spec import Size

    def tokens_per_param(n: float) -> tuple[float, Any]:
        model = config_for_params(
            n, variant=spec.variant, context=spec.context, vocab_size=256, **spec.shape_family()
        )
        size = Size(None, n, model.n_params, (model.n_layer, model.n_head, model.d_model))
        per_token = spec.flops_per_token(size)
        return compute_full / per_token / model.n_params, (model, per_token)

    # Around C = 6·N·D with D = ratio·N; the full count moves the answer by less than 3x.
    guess = math.sqrt(tokens_for_compute(compute_full, rules.tokens_per_param))
    grid = np.geomspace(guess / 3, guess * 3, 25)
    ratios = [tokens_per_param(n)[0] for n in grid]
    n_opt = float(grid[np.argmin(np.abs(np.log(np.array(ratios) / rules.tokens_per_param)))])
    _, (model, per_token) = tokens_per_param(n_opt)
    batch = max(1, round(rules.batch[0] * compute_full ** rules.batch[1]))
    step = batch * spec.context
    tokens = int(compute_full / per_token) // step * step
    return Plan(
        compute_full=per_token * tokens,
        n_layer=model.n_layer,
        n_head=model.n_head,
        d_model=model.d_model,
        n_params=model.n_params,
        n_params_total=model.n_params_total,
        tokens=tokens,
        lr=float(rules.lr[0] * model.n_params ** rules.lr[1]),
        batch_size=batch,
        n_params_wanted=n_opt,
    )


def _val_curve(workspace: Workspace, runs: pd.DataFrame) -> pd.DataFrame:
    """Validation losses of ``runs`` by fraction of training (``run_id``, ``fraction``,
    ``loss``), as the results layer aligns them with the tokens seen."""
    from scalelab.results.runs import validation_curves

    curves = validation_curves(runs, workspace)
    return curves.assign(fraction=curves["fraction"].round(3))[["run_id", "fraction", "loss"]]


def frontier_curves(cells: pd.DataFrame, workspace: Workspace) -> pd.DataFrame:
    """Validation curves of the best run of each budget, as fractions of training."""
    return _val_curve(workspace, frontier_points(cells))


def _fingerprint(cells: pd.DataFrame) -> str:
    return hashlib.sha256(",".join(sorted(cells["run_id"])).encode()).hexdigest()[:12]


def _load_forecast(workspace: Workspace, run_id: str) -> tuple[Plan, Forecast, pd.Series]:
    from scalelab.results.forecasts import load_forecast

    payload = load_forecast(workspace, run_id)
    curve = pd.Series({float(k): v for k, v in payload["curve"].items()}, dtype=float)
    return Plan(**payload["plan"]), Forecast(**payload["forecast"]), curve.sort_index()


def log_forecast(
    workspace: Workspace,
    experiment: str,
    requested: float,
    plan: Plan,
    result: Forecast,
    curve: pd.Series,
    selection: Selection,
    fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> str:
    """A finished ``kind=forecast`` run holding the prediction, made before the target;
    ``extra`` adds to its record (e.g. other laws' forecasts, logged at the same moment)."""
    from scalelab.results.forecasts import log_forecast as log_record

    return log_record(
        workspace,
        experiment,
        name=f"forecast C{plan.compute_full:.2g}",
        ladder=fingerprint,
        target_compute=requested,
        params={
            **plan.row(),
            "lr": plan.lr,
            "batch_size": plan.batch_size,
            "law": result.candidate[:500],
        },
        metrics={
            "predicted_loss": result.loss,
            "predicted_lo": result.lo,
            "predicted_hi": result.hi,
            "predicted_naive_loss": result.naive_loss,
            "decades": result.decades,
        },
        record={
            "forecast": result.to_dict(),
            "plan": plan.__dict__,
            "curve": {str(k): v for k, v in curve.items()},
            "backtests": selection.table().to_dict("records"),
            **(extra or {}),
        },
    )


def train_target(plan: Plan, spec: SweepSpec, workspace: Workspace, forecast_run_id: str) -> Any:
    from scalelab.train import TrainConfig, train

    validations = 10
    step = plan.batch_size * spec.context
    cfg = TrainConfig(
        n_params_target=plan.n_params_wanted,
        variant=spec.variant,
        context=spec.context,
        corpus=spec.corpus,
        tokenizer=spec.tokenizer,
        tokens=plan.tokens,
        batch_size=plan.batch_size,
        lr=plan.lr,
        warmup=spec.search.warmup if isinstance(spec.search.warmup, float) else 0.05,
        val_every=max(step, plan.tokens // validations // step * step),
        experiment=spec.experiment_name,
        run_name=f"target C{plan.compute_full:.2g}",
        evals=spec.eval,
        **spec.train,
    )
    return train(
        cfg,
        workspace,
        tags={"kind": "target", "forecast_run_id": forecast_run_id},
        enable_progress_bar=False,
    )


Planner = Callable[[float], tuple[Plan, Forecast, dict[str, Any]]]


def ensure_forecast(
    spec: SweepSpec,
    cells: pd.DataFrame,
    selection: Selection,
    compute_full: float,
    workspace: Workspace,
    *,
    echo: Callable = print,
    planner: Planner | None = None,
    fingerprint: str | None = None,
) -> tuple[str, Plan, Forecast, pd.Series]:
    """The forecast run of one target: logged now if this ladder has none for it, else the
    one logged before (forecast run id, plan, forecast, predicted curve).

    ``planner(compute_full)`` gives the plan, the forecast and extra record entries; by
    default the plan of ``fit_rules`` and the ``selection``'s forecast from ``cells``.
    """
    from scalelab.results import forecasts

    experiment = spec.experiment_name
    fingerprint = fingerprint or _fingerprint(cells)
    forecast_id = forecasts.find_forecast(workspace, experiment, fingerprint, compute_full)
    if forecast_id is not None:
        # What was logged before the target trained is the forecast, whatever the code does now.
        plan, result, curve = _load_forecast(workspace, forecast_id)
        echo(f"forecast for C={plan.compute_full:.3g} already logged (run {forecast_id})")
        return forecast_id, plan, result, curve
    if planner is None:
        plan = plan_target(spec, fit_rules(cells), compute_full)
        result, extra = forecast(cells, plan.row(), selection), {}
    else:
        plan, result, extra = planner(compute_full)
    shape = curve_shape(frontier_curves(cells, workspace), _floor(result))
    curve = predict_curve(result.loss, _floor(result), shape)
    forecast_id = log_forecast(
        workspace, experiment, compute_full, plan, result, curve, selection, fingerprint, extra
    )
    echo(
        f"forecast for C={plan.compute_full:.3g} logged (run {forecast_id}): "
        f"{result.loss:.4f} [{result.lo:.4f}, {result.hi:.4f}]"
    )
    return forecast_id, plan, result, curve


def run_target(
    spec: SweepSpec,
    cells: pd.DataFrame,
    selection: Selection,
    compute_full: float,
    workspace: Workspace,
    *,
    echo: Callable = print,
    planner: Planner | None = None,
    fingerprint: str | None = None,
) -> Outcome:
    """Forecast (or reuse the forecast of) one target (``ensure_forecast``), then train it
    (or reuse it)."""
    from scalelab.results import forecasts

    experiment = spec.experiment_name
    forecast_id, plan, result, curve = ensure_forecast(
        spec,
        cells,
        selection,
        compute_full,
        workspace,
        echo=echo,
        planner=planner,
        fingerprint=fingerprint,
    )
    target_id = forecasts.find_target(workspace, experiment, forecast_id)
    if target_id is None:
        echo(
            f"training target: N={plan.n_params:,} (d_model {plan.d_model}, {plan.n_layer} "
            f"layers) D={plan.tokens:,} lr={plan.lr:.3g} batch={plan.batch_size}"
        )
        target_id = train_target(plan, spec, workspace, forecast_id).run_id
    metrics = forecasts.final_metrics(workspace, target_id)
    actual = float(metrics["loss"])
    target = pd.DataFrame([{"run_id": target_id, "n_params": plan.n_params, "tokens": plan.tokens}])
    history = _val_curve(workspace, target).set_index("fraction")["loss"]
    outcome = Outcome(
        plan=plan,
        forecast=result,
        forecast_run_id=forecast_id,
        target_run_id=target_id,
        actual=actual,
        curve=_join_curves(curve, history),
        seconds=float(metrics.get("wall_time", math.nan)),
    )
    forecasts.record_outcome(
        workspace,
        forecast_id,
        target_id,
        {"actual_loss": actual, "error": outcome.error, "covered": float(outcome.covered)},
    )
    return outcome


def _floor(result: Forecast) -> float:
    return float(result.law.get("params", {}).get("E") or 0.0)


def _join_curves(predicted: pd.Series, actual: pd.Series) -> pd.DataFrame:
    """Predicted and actual loss at the fractions where the target was validated."""
    fractions = actual.index.to_numpy()
    grid = predicted.index.to_numpy(dtype=float)
    values = np.interp(fractions, grid, predicted.to_numpy(), left=np.nan)
    return pd.DataFrame({"fraction": fractions, "predicted": values, "actual": actual.values})


def run_study(
    spec_path: str | Path,
    targets: Sequence[float],
    workspace: Workspace,
    *,
    workers: int = 1,
    echo: Callable = print,
) -> dict[str, Any]:
    """The whole study (see the module docstring); returns everything a report needs."""
    spec, sweeps = run_ladder(Path(spec_path), workspace, workers=workers, echo=echo)
    runs = ladder_runs(spec.experiment_name, sweeps, workspace)
    cells = cell_table(runs)
    # The in-ladder backtest chooses until the benchmark's rule forecasts this ladder as well:
    # on the reduced CPU study the rule's no-E Chinchilla form was 40% off at 100x (covered),
    # the backtest's choice 21%.
    selection = select_law(cells, by="backtest")
    echo(selection.choice.line() if selection.choice else f"law: {selection.chosen.name}")
    outcomes = []
    for compute in sorted(targets):
        outcome = run_target(spec, cells, selection, compute, workspace, echo=echo)
        echo(
            f"C={outcome.plan.compute_full:.3g}: predicted {outcome.forecast.loss:.4f} "
            f"[{outcome.forecast.lo:.4f}, {outcome.forecast.hi:.4f}], actual "
            f"{outcome.actual:.4f}, error {outcome.error:+.2%}, "
            f"{'covered' if outcome.covered else 'NOT covered'}"
        )
        outcomes.append(outcome)
    return {
        "spec": spec,
        "sweeps": sweeps,
        "runs": runs,
        "cells": cells,
        "selection": selection,
        "outcomes": outcomes,
        "edges": edge_budgets(cells),
    }
