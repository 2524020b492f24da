"""Predictable scaling on one machine: forecast runs 10x, 100x and 1000x beyond a ladder.

Trains the ladder of ``sweeps/predictable-scaling.yaml`` (or ``--spec``), picks the law by
backtesting inside it, logs each forecast to MLflow, then trains the targets and writes
``analysis/predictable-scaling.md`` with its figure. Everything is resumable: run the same
command again after a crash.

Run: ``python analysis/predictable_scaling.py [--targets 1e12 1e13 1e14] [--workers 2]
[--workspace scalelab-runs]``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from report import HERE, environment_line, fmt, interval, markdown_table, save_figure

from scalelab.analysis.forecast import NAIVE, candidates, fit_candidate, frontier
from scalelab.predictable import fit_rules, plan_target, run_study
from scalelab.workspace import Workspace

ROOT = HERE.parent


def _pct(x: float) -> str:
    return f"{x:+.2%}"


def outcome_table(study: dict) -> pd.DataFrame:
    ladder_max = float(frontier(study["cells"])["compute_full"].max())
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


def frontier_slopes(cells: pd.DataFrame) -> pd.DataFrame:
    """The best run of each budget and the local log-log slope of loss against compute."""
    best = frontier(cells)[["budget", "n_params", "tokens", "compute_full", "loss"]].copy()
    slope = np.diff(np.log(best["loss"].to_numpy())) / np.diff(np.log(best["compute_full"]))
    best["slope from previous"] = np.concatenate([[np.nan], slope])
    return best


def figure(study: dict) -> go.Figure:
    """GPT-4 report style: compute normalised so the largest target is 1, loss on a log axis."""
    cells, outcomes = study["cells"], study["outcomes"]
    spec, selection = study["spec"], study["selection"]
    top = max(o.plan.compute_full for o in outcomes)
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
    best = frontier(cells)
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
    # The chosen law along the planned compute-optimal path, with the interval of each
    # forecast (the band is the same construction as the targets' intervals).
    rules = fit_rules(cells)
    from scalelab.analysis.forecast import forecast

    grid = np.geomspace(best["compute_full"].min(), top * 1.5, 14)
    path = [
        forecast(cells, plan_target(spec, rules, c).row(), selection, n_resamples=100) for c in grid
    ]
    x = np.array([f.target["compute_full"] for f in path]) / top
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([[f.hi for f in path], [f.lo for f in path][::-1]]),
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
            x=x, y=[f.loss for f in path], mode="lines", line=dict(color="#1f77b4"), name="forecast"
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[f.naive_loss for f in path],
            mode="lines",
            line=dict(color="#d62728", dash="dot"),
            name="naive forecast (6·N·D)",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=[o.plan.compute_full / top for o in outcomes],
            y=[o.actual for o in outcomes],
            mode="markers",
            marker=dict(color="#2ca02c", size=12, symbol="star"),
            name="targets (actual)",
        ),
        1,
        1,
    )
    main = max(outcomes, key=lambda o: o.plan.compute_full)
    curve = main.curve
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
    fig.update_xaxes(type="log", title_text="compute / target compute", row=1, col=1)
    fig.update_yaxes(type="log", title_text="validation loss (nats/byte)", row=1, col=1)
    fig.update_xaxes(title_text="fraction of training", row=1, col=2)
    fig.update_yaxes(title_text="validation loss", row=1, col=2)
    fig.update_layout(template="plotly_white", legend=dict(font=dict(size=10)))
    return fig


def write_report(study: dict, command: str, seconds: float) -> Path:
    cells, selection, outcomes = study["cells"], study["selection"], study["outcomes"]
    spec = study["spec"]
    rules = fit_rules(cells)
    best = frontier(cells)
    ladder_max = float(best["compute_full"].max())
    table = outcome_table(study)
    bt = selection.table().sort_values("rms log error")
    main = max(outcomes, key=lambda o: o.plan.compute_full)
    curve = main.curve.dropna()
    curve_err = (curve["predicted"] / curve["actual"] - 1).abs()
    edges = study["edges"]
    law = main.forecast.law
    lines = [
        "# Predictable scaling on one machine",
        "",
        f"Generated by `{command}` in {seconds / 60:.1f} minutes (ladder, forecasts and targets; "
        "a re-run reuses finished runs). Every forecast below was logged to MLflow as a "
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
        "## The law, chosen by backtest inside the ladder",
        "",
        "Each candidate was fitted without the largest ladder budget, then without the two "
        "largest, and so on up to half the budgets, and scored by the root-mean-square log "
        "error of its predictions for the best run of each held-out budget (errors listed "
        f"in that order). Chosen: **{main.forecast.candidate}**:",
        "",
        "```",
        f"{law['law']} {law['config']}: "
        + ", ".join(f"{k} = {fmt(v)}" for k, v in law["params"].items()),
        "```",
        "",
        markdown_table(bt),
        "",
        "Interval: the bootstrap interval of the chosen fit (resampling its points) combined "
        "in log space with the chosen law's own backtest error per decade of extrapolation, "
        "scaled to the target's distance (1.645 × RMS log error per decade × decades).",
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
            main.curve.assign(error=(main.curve["predicted"] / main.curve["actual"] - 1))
        ),
        "",
        f"Median |error| over the curve: {curve_err.median():.2%} (max {curve_err.max():.2%}).",
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
    started = time.perf_counter()
    workspace = Workspace.resolve(args.workspace)
    study = run_study(args.spec, args.targets, workspace, workers=args.workers)
    targets = " ".join(f"{t:g}" for t in args.targets)
    command = f"python analysis/predictable_scaling.py --targets {targets} --workers {args.workers}"
    path = write_report(study, command, time.perf_counter() - started)
    print(f"wrote {path}")
    if not math.isfinite(study["outcomes"][-1].actual):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
