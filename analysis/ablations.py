"""GPT-2 against its ablations as scaling curves: is each part indispensable, and what does
losing it cost as compute grows?

Runs ``sweeps/ablations.yaml`` once per variant (``gpt2``, ``gpt2-noresidual``, ``gpt2-nonorm``,
``gpt2-attnonly``; resumable, every trial an MLflow run in one experiment), fits
L(C) = E + A·C^-alpha to each variant's best trial per size with bootstrap intervals, and writes
``analysis/ablations.md`` and its figure: each variant's exponent, the compute multiplier the
ablation costs at the largest size (the compute the ablated model needs to reach the full
model's loss there, over the full model's compute), and how many trials diverged, by size.
Run: ``python analysis/ablations.py [--spec sweeps/ablations.yaml] [--workers 2]
[--workspace analysis/ablation-runs]``.
``--variants gpt2 llama --stem architectures`` compares any variants the same way (the first is
the reference), e.g. the LLaMA-style design against GPT-2 on the same corpus and budgets.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from report import HERE, environment_line, fmt, interval, markdown_table, save_figure

from scalelab.dashboard.figures import palette
from scalelab.forecast.bootstrap import BootstrapResult, bootstrap
from scalelab.forecast.fit import fit_law
from scalelab.forecast.laws import Law
from scalelab.results.runs import best_per_cell, mlflow_runs
from scalelab.sweep.coordinator import open_sweep, run_sweep
from scalelab.sweep.spec import parse_spec
from scalelab.workspace import Workspace

ABLATIONS = ("gpt2", "gpt2-noresidual", "gpt2-nonorm", "gpt2-attnonly")


def compute_to_reach(law: Law, loss: float) -> float:
    """C with law(C) = loss for L = E + A·C^-alpha; infinite at or below the floor E."""
    p = law.params
    return math.inf if loss <= p["E"] else (p["A"] / (loss - p["E"])) ** (1 / p["alpha"])


def multiplier(full: Law, ablated: Law, compute: float) -> float:
    """Compute the ablated model needs for the full model's loss at ``compute``, over it."""
    return compute_to_reach(ablated, float(full.predict(compute=compute))) / compute


def order_interval(samples: list[float], level: float = 0.9) -> tuple[float, float]:
    """The central ``level`` interval by order statistics, which infinite samples (a floor
    above the target loss) do not break as interpolating quantiles do."""
    if not samples:
        return math.nan, math.nan
    ordered = sorted(samples)
    tail = (1 - level) / 2
    last = len(ordered) - 1
    return ordered[round(tail * last)], ordered[round((1 - tail) * last)]


def train(
    spec_path: Path, variants: list[str], workspace: Workspace, workers: int
) -> dict[str, object]:
    """Every variant's sweep, trained (or resumed); their Sweep objects by variant."""
    data = yaml.safe_load(spec_path.read_text())
    sweeps = {}
    for variant in variants:
        spec = parse_spec(
            {
                **data,
                "variant": variant,
                "name": f"{data['name']}-{variant}",
                "experiment": data["name"],
            },
            str(spec_path),
        )
        sweep = open_sweep(spec, workspace, workers=workers)
        if not run_sweep(sweep, workers=workers, echo=print).complete:
            raise RuntimeError(f"sweep {spec.name} did not complete")
        sweeps[variant] = sweep
    return sweeps


def diverged(sweep: object) -> dict[str, int]:
    """Trials that diverged, by size."""
    out: dict[str, int] = {}
    for status in sweep.progress().cells:
        n = sum(t.user_attrs.get("outcome") == "diverged" for t in status.trials)
        out[status.cell.size] = out.get(status.cell.size, 0) + n
    return out


def finding(
    variant: str,
    points: pd.DataFrame,
    full: str,
    point: float,
    band: tuple[float, float],
    failed: dict[str, int],
) -> str:
    """One sentence per ablation: its loss against the full model's at each size, what it
    costs at the largest, and whether it trained at every size."""
    # Cells by name (a variant's N differs from GPT-2's at the same shape), smallest first.
    order = points.groupby("cell")["n_params"].mean().sort_values().index
    both = points.pivot_table(index="cell", columns="variant", values="loss").reindex(order)
    common = {variant, full} <= set(both.columns)
    gaps = (both[variant] / both[full] - 1).dropna() if common else None
    if gaps is None or gaps.empty:
        return f"**{variant}**: no size trained by both it and {full}"
    trend = (
        f"its loss is {gaps.iloc[0]:+.1%} against {full}'s in the smallest cell (same shape, "
        f"its own N) and {gaps.iloc[-1]:+.1%} in the largest"
    )
    if math.isinf(point):
        cost = f"its fitted floor lies above {full}'s loss at the largest compute (no finite cost)"
    else:
        cost = (
            f"it needs {point:.3g}x the compute (90%: {interval(*band, 3)}) to match {full} there"
        )
    stops = sum(failed.values())
    trains = (
        f"{stops} of its trials diverged ({', '.join(f'{z}: {n}' for z, n in failed.items() if n)})"
        if stops
        else "every one of its trials trained (none diverged)"
    )
    # Ordered by the variant's own N: an ablation's cells need not keep the spec's order.
    own = points[points["variant"] == variant].sort_values("n_params")
    worse = [
        f"N {a.n_params:.3g} → {b.n_params:.3g} ({a.loss:.4g} → {b.loss:.4g})"
        for a, b in zip(own.iloc[:-1].itertuples(), own.iloc[1:].itertuples(), strict=True)
        if b.loss > a.loss
    ]
    if worse:
        trains += "; but its best loss rises with size at " + ", ".join(worse)
    return f"**{variant}**: {trend}; {cost}; {trains}."


def at_edge(points: pd.DataFrame, lrs: list[float]) -> str:
    """The sizes whose best learning rate is the grid's lowest or highest (a better one may lie
    beyond it)."""
    if len(lrs) < 2:
        return "–"
    low, high = min(lrs), max(lrs)
    edge = points[np.isclose(points["lr"], low) | np.isclose(points["lr"], high)]
    return f"{len(edge)} of {len(points)}" + (
        f" ({', '.join(edge['cell'].str.split('-').str[0])})" if len(edge) else ""
    )


def mup_section() -> str:
    """The μP transfer figure and its measured drift, from ``analysis/mup_transfer.py``."""
    record = json.loads((HERE / "mup-transfer.json").read_text())
    widths = record["widths"]
    lines = [
        f"- {p}: best learning rate by width "
        + ", ".join(f"{w}: {lr:.3g}" for w, lr in zip(widths, record["best_lr"][p], strict=True))
        + f"; drift {record['drift_grid_steps'][p]:+d} grid steps from width {widths[0]} to "
        f"{widths[-1]}; reusing width {widths[0]}'s rate at width {widths[-1]} costs "
        f"{record['reuse_gap'][p]:.1%} of loss"
        for p in ("standard", "mup")
    ]
    return f"""
## μP learning-rate transfer

Loss against learning rate at {len(widths)} widths, with and without μP, from
`analysis/mup_transfer.py` (details and the full grid: [mup-transfer.md](mup-transfer.md)).

{chr(10).join(lines)}

![mup-transfer](mup-transfer.png)
"""


def figure(points: pd.DataFrame, fits: dict[str, BootstrapResult]) -> go.Figure:
    fig = go.Figure()
    grid = np.geomspace(points["compute"].min() / 2, points["compute"].max() * 10, 100)
    for color, (variant, result) in zip(palette(len(fits)), fits.items(), strict=True):
        mine = points[points["variant"] == variant]
        fig.add_trace(
            go.Scatter(
                x=mine["compute"],
                y=mine["loss"],
                mode="markers",
                name=variant,
                marker={"color": color, "size": 9},
                legendgroup=variant,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=result.law.predict(compute=grid),
                mode="lines",
                line={"color": color},
                legendgroup=variant,
                showlegend=False,
            )
        )
    fig.update_xaxes(type="log", title="training compute C = 6·N·D (FLOPs)")
    fig.update_yaxes(type="log", title="validation loss (nats/token), best trial per size")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=HERE.parent / "sweeps" / "ablations.yaml")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS))
    parser.add_argument("--stem", default="ablations", help="report name under analysis/")
    parser.add_argument("--workspace", default=str(HERE / "ablation-runs"))
    parser.add_argument(
        "--mup", action="store_true", help="add the μP transfer figure (analysis/mup_transfer.py)"
    )
    parser.add_argument(
        "--running", default="nothing else", help="what else ran on the machine, for the report"
    )
    args = parser.parse_args()
    workspace = Workspace.resolve(args.workspace)
    variants, full = args.variants, args.variants[0]
    sweeps = train(args.spec, variants, workspace, args.workers)
    experiment = next(iter(sweeps.values())).spec.experiment_name
    names = {v: s.spec.name for v, s in sweeps.items()}
    runs = mlflow_runs(experiment, workspace, sweeps=list(names.values()), completed=True)
    points = best_per_cell(runs)
    points["variant"] = points["sweep"].map({name: v for v, name in names.items()})
    points = points.sort_values(
        ["variant", "compute"], key=lambda c: c.map(variants.index) if c.name == "variant" else c
    )
    fits = {}
    for variant in variants:
        mine = points[points["variant"] == variant]
        fit = fit_law(mine, "power_law")
        fits[variant] = bootstrap(fit, mine, n_resamples=args.resamples, seed=0)
    c_max = points.loc[points["variant"] == full, "compute"].max()
    grid = sweeps[full].spec.search.lr  # the parsed spec train() ran: not read again
    lrs = [float(x) for x in grid] if isinstance(grid, list) else []
    rows, findings = [], []
    for variant, result in fits.items():
        ci = result.param_intervals().loc["alpha"]
        samples = [
            multiplier(full, ablated, c_max)
            for full, ablated in zip(fits[full].sample_laws(), result.sample_laws(), strict=False)
        ]
        lo, hi = order_interval(samples)
        point = multiplier(fits[full].law, result.law, c_max)
        failed = diverged(sweeps[variant])
        rows.append(
            {
                "variant": variant,
                "alpha": ci["estimate"],
                "alpha 90%": interval(ci["lo"], ci["hi"], 3),
                "E": result.law.params["E"],
                f"multiplier at C={c_max:.2g}": point,
                "multiplier 90%": interval(lo, hi, 3),
                "diverged trials by size": ", ".join(f"{z} {n}" for z, n in failed.items()),
                "training minutes (all trials)": runs.loc[
                    runs["sweep"] == names[variant], "seconds"
                ].sum()
                / 60,
                "best lr at the grid's edge": at_edge(points[points["variant"] == variant], lrs),
            }
        )
        if variant != full:
            findings.append(finding(variant, points, full, point, (lo, hi), failed))
    table = points.assign(loss=points["loss"].map(fmt))[
        [
            "variant",
            "cell",
            "n_params",
            "n_params_total",
            "tokens",
            "compute",
            "lr",
            "loss",
            "run_id",
        ]
    ]
    link = save_figure(figure(points, fits), args.stem)
    text = f"""# {" vs ".join(variants)} as scaling curves

Sweep `{args.spec.name}` run once per variant (MLflow experiment `{experiment}`, sweeps
{", ".join(f"`{n}`" for n in names.values())}); each point is the best trial of a size
(learning rate searched per cell). L(C) = E + A·C^-alpha fitted per variant; intervals from
{args.resamples} bootstrap resamples of the points. The multiplier is the compute each variant
needs to reach the fitted loss of `{full}` at C = {c_max:.3g}, over that compute (∞: the
variant's fitted floor E lies above it). N is the non-embedding count, C = 6·N·D;
`n_params_total` adds the embeddings (tied in GPT-2, which also learns positions; untied in
the LLaMA-style variant, which rotates them). Generated by `analysis/ablations.py`.

{markdown_table(pd.DataFrame(rows))}

{chr(10).join(f"- {line}" for line in findings)}

{link}
{mup_section() if args.mup else ""}
## Points

{markdown_table(table)}

Trials trained on {args.workers} worker(s), one torch thread each; also running on the
machine: {args.running}. {environment_line()}
"""
    (HERE / f"{args.stem}.md").write_text(text)
    print(f"wrote {HERE / f'{args.stem}.md'}")


if __name__ == "__main__":
    main()
