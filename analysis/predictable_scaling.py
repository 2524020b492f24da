"""Predictable scaling on one machine: forecast runs 10x, 100x and 1000x beyond a ladder.

Trains the ladder of ``sweeps/predictable-scaling.yaml`` (or ``--spec``), picks the law as
``--law auto`` does, logs each forecast to MLflow, then trains the targets and writes
``analysis/predictable-scaling.md`` with its figure. Everything is resumable: run the same
command again after a crash.

Run: ``python analysis/predictable_scaling.py [--targets 1e12 1e13 1e14] [--workers 2]
[--workspace scalelab-runs]``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from report import HERE, environment_line, fmt, interval, markdown_table, save_figure

from scalelab.forecast import bootstrap, fit_law
from scalelab.forecast.forecast import (
    NAIVE,
    candidates,
    fit_candidate,
    forecast,
)
from scalelab.forecast.forms import frontier_points
from scalelab.studies.predictable import fit_rules, plan_target, run_study
from scalelab.vocab import compute_6nd
from scalelab.workspace import Workspace

ROOT = HERE.parent


def _pct(x: float) -> str:
    return f"{x:+.2%}" if math.isfinite(x) else "–"


def outcome_table(study: dict) -> pd.DataFrame:
    ladder_max = float(frontier_points(study["cells"])["compute_full"].max())
    rows = []
    for o in study["outcomes"]:
        f, p = o.forecast, o.plan
        rows.append(
            {
                "target C (FLOPs)": p.compute_full,
                "× ladder": p.compute_full / ladder_max,
                "N (non-emb.)": p.n_params,
                "D (tokens)": p.tokens,
                "lr": p.lr,
                "batch": p.batch_size,
                "predicted": f.loss,
                "90% interval": interval(f.lo, f.hi),
                "actual": o.actual,
                "error": _pct(o.error),
                "covered": o.covered,
                "naive predicted": f.naive_loss,
                "naive error": _pct(f.naive_loss / o.actual - 1),
            }
        )
    return pd.DataFrame(rows)


def hindsight_table(study: dict) -> pd.DataFrame:
    """Every candidate law fitted on the whole ladder, against each target's outcome.

    Computed after the targets trained: not forecasts, but what the ladder could and could
    not tell apart.
    """
    cells = study["cells"]
    plateau = float(cells["unigram"].iloc[0]) if "unigram" in cells else None
    tried = [c for c in candidates(cells["budget"].nunique(), plateau) if c.skip == 0]
    rows = []
    for c in [*tried, NAIVE]:
        law = fit_candidate(c, cells)
        row = {"law": c.name}
        for o in study["outcomes"]:
            predicted = float(law.predict(**c.inputs(o.plan.row())))
            row[f"C={o.plan.compute_full:.2g}"] = (
                f"{predicted:.3f} ({predicted / o.actual - 1:+.1%})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def learned(study: dict) -> list[str]:
    """Findings computed from this study's numbers."""
    cells, selection, outcomes = study["cells"], study["selection"], study["outcomes"]
    best = frontier_points(cells)
    table = selection.table()
    hindsight = hindsight_table(study)
    main = max(outcomes, key=lambda o: o.plan.compute_full)
    top = f"C={main.plan.compute_full:.2g}"
    errors = hindsight[top].str.extract(r"\(([-+0-9.]+)%\)")[0].astype(float)
    closest = hindsight.loc[errors.abs().idxmin()]
    lo, hi = float(best["compute_full"].min()), float(best["compute_full"].max())
    ladder_slope = math.log(best["loss"].iloc[-1] / best["loss"].iloc[0]) / math.log(hi / lo)
    beyond = math.log(main.actual / best["loss"].iloc[-1]) / math.log(main.plan.compute_full / hi)
    covered = sum(o.covered for o in outcomes)
    ranked = table.sort_values("rms log error", ignore_index=True)
    rank_row = ranked[(ranked["law"] == closest["law"]) & (ranked["fit from budget"] == 1)]
    return [
        f"- **The forecasts were too pessimistic**: {', '.join(_pct(o.error) for o in outcomes)}"
        f" at {', '.join(f'{o.plan.compute_full / hi:.0f}x' for o in outcomes)} beyond the "
        f"ladder. The intervals covered {covered} of {len(outcomes)} outcomes, but at 1000x "
        f"the interval spans {main.forecast.lo:.2f}-{main.forecast.hi:.2f}: honest, and too "
        "wide to plan with.",
        f"- **The frontier bends down beyond the ladder**: its log-log slope is "
        f"{ladder_slope:.3f} across the ladder and {beyond:.3f} from the ladder's best run to "
        "the largest target. Every law whose slope flattens or stays constant over-predicts.",
        f"- **A ladder spanning {math.log10(hi / lo):.1f} decades cannot choose the law**: "
        f"every candidate's backtest RMS log error lay between "
        f"{table['rms log error'].min():.3f} and {table['rms log error'].max():.3f}, the "
        "few-per-cent noise of a best-of-8-trials run, while their forecasts for the largest "
        f"target ranged over {hindsight[top].str.split().str[0].astype(float).min():.2f}-"
        f"{hindsight[top].str.split().str[0].astype(float).max():.2f}.",
        f"- **In hindsight** the closest law at {top} was {closest['law']}: {closest[top]}"
        + (
            f". Its backtest RMS log error was {rank_row['rms log error'].iloc[0]:.3f}, "
            f"rank {int(rank_row.index[0]) + 1} of {len(ranked)}"
            if len(rank_row)
            else ""
        )
        + "; choosing it now would be tuning on the targets, so it is a lead for the next "
        "ladder, not a result.",
        "- **Next**: a ladder that reaches past the bend (larger budgets, or more of them, "
        "so the backtest extrapolates a decade rather than a fifth of one), several seeds per "
        "frontier cell to bring the backtest noise below the differences between laws, and "
        "fits on intermediate checkpoints of a constant-then-decay schedule.",
    ]


def law_intervals(study: dict) -> pd.DataFrame:
    """The chosen law refitted on the whole ladder, its parameters with 90% intervals."""
    chosen, cells = study["selection"].chosen, study["cells"]
    data = chosen.data(cells)
    fit = fit_law(data, chosen.law, check_identifiability=False)
    boot = bootstrap(fit, data, n_resamples=1000, level=0.9, seed=0)
    return boot.param_intervals()[["estimate", "lo", "hi", "se"]]


def frontier_slopes(cells: pd.DataFrame) -> pd.DataFrame:
    """The best run of each budget and the local log-log slope of loss against compute."""
    best = frontier_points(cells)[["budget", "n_params", "tokens", "compute_full", "loss"]].copy()
    slope = np.diff(np.log(best["loss"].to_numpy())) / np.diff(np.log(best["compute_full"]))
    best["slope from previous"] = np.concatenate([[np.nan], slope])
    return best


def figure(study: dict) -> go.Figure:
    """GPT-4 report style: compute normalised so the largest target is 1, loss on a log axis."""
    cells, outcomes = study["cells"], study["outcomes"]
    spec, selection = study["spec"], study["selection"]
    top = max(o.plan.compute_full for o in outcomes)
    # The chosen law along the planned compute-optimal path, with the interval of each
    # forecast (the band is the same construction as the targets' intervals).
    rules = fit_rules(cells)
    grid = np.geomspace(frontier_points(cells)["compute_full"].min(), top * 1.5, 14)
    path = [
        forecast(cells, plan_target(spec, rules, c).row(), selection, n_resamples=100) for c in grid
    ]
    forecasts = pd.DataFrame(
        {
            "compute_full": [f.target["compute_full"] for f in path],
            "loss": [f.loss for f in path],
            "lo": [f.lo for f in path],
            "hi": [f.hi for f in path],
            "naive_loss": [f.naive_loss for f in path],
        }
    )
    targets = pd.DataFrame(
        {
            "compute_full": [o.plan.compute_full for o in outcomes],
            "loss": [o.actual for o in outcomes],
        }
    )
    main = max(outcomes, key=lambda o: o.plan.compute_full)
    return draw(cells, forecasts, targets, main.curve)


def draw(
    cells: pd.DataFrame, forecasts: pd.DataFrame, targets: pd.DataFrame, curve: pd.DataFrame
) -> go.Figure:
    """The figure from its data: ladder cells (``compute_full``, ``budget``, ``loss``), the
    forecast path (``compute_full``, ``loss``, ``lo``, ``hi``, ``naive_loss``), the targets
    (``compute_full``, ``loss``) and the largest target's curve (``fraction``, ``predicted``,
    ``actual``)."""
    top = float(targets["compute_full"].max())
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Final loss against compute (target = 1)",
            f"Loss curve of the C = {top:.2g} target",
        ),
    )
    fig.add_trace(
        go.Scatter(
            x=cells["compute_full"] / top,
            y=cells["loss"],
            mode="markers",
            marker=dict(color="lightgray", size=6),
            name="ladder cells (best trial)",
        ),
        1,
        1,
    )
    best = frontier_points(cells.assign(compute=compute_6nd(cells["n_params"], cells["tokens"])))
    fig.add_trace(
        go.Scatter(
            x=best["compute_full"] / top,
            y=best["loss"],
            mode="markers",
            marker=dict(color="black", size=9),
            name="best run per budget",
        ),
        1,
        1,
    )
    x = forecasts["compute_full"].to_numpy() / top
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([forecasts["hi"], forecasts["lo"][::-1]]),
            fill="toself",
            fillcolor="rgba(31,119,180,0.15)",
            line=dict(width=0),
            name="90% interval",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x, y=forecasts["loss"], mode="lines", line=dict(color="#1f77b4"), name="forecast"
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=forecasts["naive_loss"],
            mode="lines",
            line=dict(color="#d62728", dash="dot"),
            name="naive forecast (6·N·D)",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=targets["compute_full"] / top,
            y=targets["loss"],
            mode="markers",
            marker=dict(color="#2ca02c", size=12, symbol="star"),
            name="targets (actual)",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=curve["fraction"],
            y=curve["predicted"],
            mode="lines+markers",
            line=dict(color="#1f77b4"),
            name="predicted curve",
        ),
        1,
        2,
    )
    fig.add_trace(
        go.Scatter(
            x=curve["fraction"],
            y=curve["actual"],
            mode="markers",
            marker=dict(color="#2ca02c", size=9),
            name="actual curve",
        ),
        1,
        2,
    )
    # A compute ratio reads as a power of ten: SI prefixes would label 1e-4 "100μ".
    fig.update_xaxes(
        type="log", title_text="compute / target compute", exponentformat="power", row=1, col=1
    )
    fig.update_yaxes(type="log", title_text="validation loss (nats/byte)", row=1, col=1)
    fig.update_xaxes(title_text="fraction of training", row=1, col=2)
    fig.update_yaxes(title_text="validation loss (nats/byte)", row=1, col=2)
    fig.update_layout(
        template="plotly_white",
        legend=dict(font=dict(size=10)),
        margin=dict(t=50, b=60, l=70, r=30),  # no figure title: no band above the panels
    )
    return fig


def _choice_line(selection) -> str:
    if selection.choice is None:
        return "none (chosen by the in-ladder backtest)"
    return selection.choice.line().removeprefix("law auto: ")


def write_report(study: dict, command: str) -> Path:
    cells, selection, outcomes = study["cells"], study["selection"], study["outcomes"]
    spec = study["spec"]
    rules = fit_rules(cells)
    best = frontier_points(cells)
    ladder_max = float(best["compute_full"].max())
    table = outcome_table(study)
    bt = selection.table().sort_values("rms log error")
    main = max(outcomes, key=lambda o: o.plan.compute_full)
    curve = main.curve.dropna()
    curve_err = (curve["predicted"] / curve["actual"] - 1).abs()
    shaped = curve["predicted"] * main.actual / main.forecast.loss
    shape_err = (shaped / curve["actual"] - 1).abs()
    edges = study["edges"]
    law = main.forecast.law
    lines = [
        "# Predictable scaling on one machine",
        "",
        f"Generated by `{command}`. Training on 2 CPU cores: the ladder's "
        f"{len(study['runs'])} completed trials took {study['runs']['seconds'].sum() / 60:.0f} "
        "minutes of runs (two workers; pruned trials not counted), the targets "
        + ", ".join(f"{o.seconds / 60:.1f}" for o in study["outcomes"])
        + " minutes (a re-run reuses every finished run). Every forecast below was logged "
        "to MLflow as a "
        "`kind=forecast` run before its target started; the target run carries its id "
        "(`forecast_run_id`), and the forecast run records the outcome.",
        "",
        f"- Ladder: sweep `{spec.name}` ({', '.join(f'`{s}`' for s in study['sweeps'])}), "
        f"{len(study['runs'])} completed trials in {len(cells)} cells, corpus `{spec.corpus}` "
        f"(byte level, context {spec.context}), budgets "
        f"{', '.join(fmt(b, 2) for b in sorted(cells['budget'].unique()))} FLOPs counted in full "
        "(forward and backward matmuls, attention and unembedding included). The largest "
        f"ladder run used {fmt(ladder_max, 3)} FLOPs.",
        f"- Target sizes: {rules.tokens_per_param:.0f} tokens per parameter (the ladder's "
        "best runs in its upper half), held constant; learning rate "
        f"{rules.lr[0]:.3g}·N^{rules.lr[1]:.3f} and batch "
        f"{rules.batch[0]:.3g}·C^{rules.batch[1]:.3f} "
        "sequences, fitted to the ladder's best trials. No target repeats a token "
        f"(`data_order: epoch` on `{spec.corpus}`).",
        "- Budgets whose best size sat at an edge of the sizes tried: "
        + (", ".join(f"{fmt(b, 2)} ({side})" for b, side in edges.items()) or "none")
        + " (the smallest shape, one layer of width 8, cannot shrink further).",
        "",
        save_figure(figure(study), "predictable-scaling"),
        "",
        "## Forecasts and outcomes",
        "",
        markdown_table(table),
        "",
        f"The naive columns fit the GPT-4 form E + A·C^-α to the best run per budget with "
        f"compute counted as 6·N·D ({NAIVE.name}).",
        "",
        "## The law, and the backtest inside the ladder",
        "",
        "The law is the one `scalelab fit --law auto` chooses, by the rule the forecasting "
        "benchmark learned on published ladders (`analysis/forecast-benchmark.md`): "
        f"{_choice_line(selection)}. Each candidate was also fitted without the largest "
        "ladder budget, then without the two largest, and so on up to half the budgets, and "
        "scored by the root-mean-square log error of its predictions for the best run of "
        "each held-out budget (errors listed in that order), as a diagnostic. "
        f"Chosen: **{main.forecast.candidate}**:",
        "",
        "```",
        f"{law['law']} {law['config']}: "
        + ", ".join(f"{k} = {fmt(v)}" for k, v in law["params"].items()),
        "```",
        "",
        "Its parameters with 90% bootstrap intervals (1,000 resamples of the points it was "
        "fitted to):",
        "",
        markdown_table(law_intervals(study), index=True),
        "",
        markdown_table(bt),
        "",
        "Interval: the bootstrap interval of the chosen fit (resampling its points) combined "
        "in log space with a law-form error per decade of extrapolation times the decades: "
        "the forecasting benchmark's conformal term, as `scalelab predict` uses (or, for a "
        "law chosen by the in-ladder backtest, 1.645 × its RMS log error per decade).",
        "",
        markdown_table(
            pd.DataFrame(
                [
                    {
                        "target C": o.plan.compute_full,
                        "decades beyond ladder": o.forecast.decades,
                        "bootstrap half-width (log)": o.forecast.boot_halfwidth,
                        "law-form half-width (log)": o.forecast.form_halfwidth,
                    }
                    for o in outcomes
                ]
            )
        ),
        "",
        f"## The loss curve of the C = {fmt(main.plan.compute_full, 3)} target",
        "",
        "Predicted from its forecast final loss and the median normalised curve "
        "(L(f·D) − E)/(L(D) − E) of the ladder's best run per budget (scaling collapse).",
        "",
        markdown_table(
            main.curve.assign(
                error=(main.curve["predicted"] / main.curve["actual"] - 1).map(_pct),
                **{"shape only": main.curve["predicted"] * main.actual / main.forecast.loss},
            )
        ),
        "",
        f"Median |error| over the curve: {curve_err.median():.2%} (max {curve_err.max():.2%}): "
        "the error of the final loss, carried along. The *shape only* column rescales the "
        "predicted curve to end at the actual final loss: its median |error| is "
        f"{shape_err.median():.2%}, the part of the curve forecast the collapse got right or "
        "wrong by itself.",
        "",
        "## What was learned",
        "",
        *learned(study),
        "",
        "## Every candidate, in hindsight",
        "",
        "Not forecasts: each candidate law refitted on the whole ladder after the targets "
        "trained, against their outcomes (relative error in brackets).",
        "",
        markdown_table(hindsight_table(study)),
        "",
        "## The ladder's frontier",
        "",
        "The best run of each budget, and the local log-log slope d log L / d log C. A slope "
        "that steepens with compute is the plateau bend: small models still near the "
        "unigram entropy learn slowly, and any law whose slope only flattens (E + A·C^-α) "
        "over-predicts what larger runs reach.",
        "",
        markdown_table(frontier_slopes(cells)),
        "",
        "## Ladder",
        "",
        markdown_table(
            cells[
                [
                    "cell",
                    "n_params",
                    "n_params_total",
                    "tokens",
                    "compute_full",
                    "lr",
                    "batch_size",
                    "loss",
                ]
            ]
        ),
        "",
        f"Environment: {environment_line()}. Reproduce: `{command}`.",
        "",
    ]
    path = HERE / "predictable-scaling.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "predictable-scaling.yaml"))
    parser.add_argument("--targets", type=float, nargs="+", default=[1e12, 1e13, 1e14])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args()
    workspace = Workspace.resolve(args.workspace)
    study = run_study(args.spec, args.targets, workspace, workers=args.workers)
    targets = " ".join(f"{t:.0e}".replace("e+", "e") for t in args.targets)
    command = f"python analysis/predictable_scaling.py --targets {targets} --workers {args.workers}"
    path = write_report(study, command)
    print(f"wrote {path}")
    if not math.isfinite(study["outcomes"][-1].actual):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
