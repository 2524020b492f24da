"""Approach 2 (IsoFLOP profiles) on Chinchilla, Llama 3 and Marin data from Open-Athena.

Reads ``analysis/data/`` only, writes ``analysis/isoflop-allocation.md`` and its figure.
Run: ``python analysis/isoflop_allocation.py [--resamples 1000] [--spline-resamples 200]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from report import DATA, HERE, environment_line, fmt, interval, markdown_table, save_figure

from scalelab.dashboard.figures import palette
from scalelab.forecast import isoflop_fit

SOURCES = ("epochai_chinchilla", "ml_scalefit", "llama_3", "marin_202603")
# Legend names of the experiments (Open-Athena's ids are source__dataset__model).
LABELS = {
    "epochai_chinchilla__massivetext__chinchilla": "Chinchilla (Epoch AI's reconstruction)",
    "ml_scalefit__massivetext__chinchilla": "Chinchilla (ml-scalefit's digitisation)",
    "llama_3__raw_loss": "Llama 3, raw loss",
    "llama_3__exp_loss": "Llama 3, transformed loss",
    "marin_202603__comma__llama_2": "Marin, Comma",
    "marin_202603__dclm__llama_2": "Marin, DCLM",
    "marin_202603__nemotron__llama_2": "Marin, Nemotron",
}


def figure(fits: dict[str, Any]) -> go.Figure:
    """Each experiment's IsoFLOP minima and fitted N_opt(C), one colour per experiment."""
    fig = go.Figure()
    for color, (experiment, fit) in zip(palette(len(fits)), fits.items(), strict=True):
        label = LABELS.get(experiment, experiment)
        pts = fit.points
        fig.add_trace(
            go.Scatter(
                x=pts.compute,
                y=pts.n_params,
                mode="markers",
                marker={"color": color, "size": 8},
                name=f"{label}: minima",
                legendgroup=experiment,
                showlegend=False,
            )
        )
        c = np.geomspace(pts.compute.min(), pts.compute.max(), 50)
        fig.add_trace(
            go.Scatter(
                x=c,
                y=fit.n_opt(c).value,
                mode="lines",
                line={"color": color},
                legendgroup=experiment,
                name=f"{label}: a = {fit.a:.3f}",
            )
        )
    fig.update_xaxes(type="log", title_text="IsoFLOP budget C (FLOPs)", exponentformat="power")
    fig.update_yaxes(
        type="log",
        title_text="loss-minimising N* (parameters; parabola in log N)",
        exponentformat="power",
    )
    fig.update_layout(
        title="IsoFLOP minima (dots) and N_opt(C) = G·C^a (lines)",
        template="plotly_white",
        height=600,
        width=1100,
        legend_title_text="data set: fitted exponent a",
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--spline-resamples", type=int, default=200)
    args = parser.parse_args()

    raw = pd.read_csv(DATA / "openathena_isoflops_transform.csv")
    raw = raw[raw.source.isin(SOURCES)].rename(columns={"params": "n_params"})
    kept = raw[~raw.outlier]

    t0 = time.perf_counter()
    rows, fits = [], {}
    for experiment, group in kept.groupby("experiment", sort=True):
        runs = group[["n_params", "tokens", "budget", "loss"]]
        parabola = isoflop_fit(runs, budget="budget", n_resamples=args.resamples, seed=0)
        spline = isoflop_fit(
            runs, budget="budget", method="spline", n_resamples=args.spline_resamples, seed=0
        )
        fits[experiment] = parabola
        p90 = parabola.summary(level=0.9).loc["a"]
        s90 = spline.summary(level=0.9).loc["a"]
        n_raw = int((raw.experiment == experiment).sum())
        rows.append(
            {
                "experiment": experiment,
                "runs (kept / all)": f"{len(group)} / {n_raw}",
                "budgets": f"{len(parabola.points)} of {group.budget.nunique()}",
                "a (parabola)": parabola.a,
                "90% CI": interval(p90.lo, p90.hi, 3),
                "a (spline)": spline.a,
                "90% CI ": interval(s90.lo, s90.hi, 3),
                "D/N at 1e22": parabola.tokens_per_param(1e22).value,
                "warnings": "; ".join(parabola.warnings + spline.warnings) or "none",
            }
        )
    seconds = time.perf_counter() - t0
    table = pd.DataFrame(rows)

    optima = pd.concat([f.points.assign(experiment=e) for e, f in fits.items()], ignore_index=True)[
        ["experiment", "compute", "n_params", "tokens", "loss", "n_runs"]
    ]

    figure_link = save_figure(figure(fits), "isoflop-allocation")

    text = f"""# Compute-optimal allocation from IsoFLOP profiles (Approach 2)

Data: `analysis/data/openathena_isoflops_transform.csv` (Open-Athena/scaling-law-analysis),
sources {", ".join(f"`{s}`" for s in SOURCES)}. Points flagged as outliers by Open-Athena's QC
(`outlier == True`: off-centre, too few points, weak curvature, spline outlier, duplicates) are
left out. Each IsoFLOP budget (the `budget` column, C in FLOPs) gets a parabola of loss in log N
(Hoffmann et al. 2022, Approach 2) or a smoothing spline (penalty by generalised
cross-validation); the minimum gives N*(C), D*(C) = C/(6·N*), and N*(C) = G·C^a is fitted by
least squares in log-log. Intervals: runs resampled within each budget ({args.resamples}
resamples for the parabola, {args.spline_resamples} for the spline, seed 0), 90% percentile.
Hoffmann et al. report a = 0.49 (Approach 2) and 0.50 (Approach 1) for Chinchilla.

Generated by `python analysis/isoflop_allocation.py` in {seconds:.0f} s ({environment_line()}).

## Allocation exponent a per data set

{markdown_table(table, {"D/N at 1e22": lambda x: fmt(x, 3)})}

The Llama 3 `exp_loss` rows are a transformation of the digitised `raw_loss` values, not
independent data. Marin budgets are nominal (6·N·D differs from them by up to 35%).

## IsoFLOP minima (parabola)

{markdown_table(optima)}

## Figure

{figure_link}
"""
    (HERE / "isoflop-allocation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
