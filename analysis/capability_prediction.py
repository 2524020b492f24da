"""Capability prediction: pass rates of runs 100x and 1000x beyond a ladder, forecast before
they train (the GPT-4 report's §3.2 on one machine).

Trains the ladder of ``sweeps/capability.yaml`` (every trial runs the evaluation suites),
logs each target's capability forecasts to MLflow as a ``kind=forecast`` run before the
target trains, trains the targets with the same suites and writes
``analysis/capability-prediction.md`` with its figure. Resumable: the same command continues
after a crash, and trains targets left pending by ``--train``.

Run: ``python analysis/capability_prediction.py [--targets 1e12 1e13] [--train 1e12]
[--workspace analysis/capability-runs] [--running TEXT]``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from report import HERE, environment_line, interval, markdown_table, save_figure

from scalelab.forecast import capability
from scalelab.studies.capability import run_capability_study
from scalelab.workspace import Workspace

ROOT = HERE.parent
FORMS = {
    "gpt4": "−mean log pass rate (GPT-4 form A·C^-k)",
    "sigmoid": "mean pass rate (logistic in log C)",
}
GOALS = {100: 0.10}  # the goal: 100x within 10% with a covering interval


def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:+.2%}"


def outcome_rows(study: dict) -> pd.DataFrame:
    """One row per target, suite and form: forecast, interval, actual, error, coverage."""
    largest = float(study["frontier"]["compute_full"].max())
    rows = []
    for o in study["outcomes"]:
        for suite, entry in sorted(o.forecasts.items()):
            for form, label in FORMS.items():
                pred = entry[form]
                actual = o.actual.get(suite, {}).get(form, math.nan)
                row: dict[str, Any] = {
                    "target C": f"{o.plan.compute_full:.2g}",
                    "× ladder": round(o.plan.compute_full / largest),
                    "suite": suite,
                    "quantity": label,
                }
                if "value" not in pred:
                    rows.append(row | {"predicted": "no forecast: " + pred["error"][:120]})
                    continue
                covered = pred["lo"] <= actual <= pred["hi"] if math.isfinite(actual) else None
                rows.append(
                    row
                    | {
                        "predicted": pred["value"],
                        "90% interval": interval(pred["lo"], pred["hi"]),
                        "actual": actual,
                        "error": _pct(pred["value"] / actual - 1) if actual > 0 else "–",
                        "covered": "pending" if covered is None else ("yes" if covered else "NO"),
                    }
                )
    return pd.DataFrame(rows).astype(object).fillna("–")


def greedy_rows(study: dict) -> pd.DataFrame:
    """Each frontier run's and target's mean pass rate and greedy pass share per suite."""
    table = study["per_problem"]
    out = table.groupby(["compute", "suite"]).agg(
        mean_pass_rate=("pass_rate", "mean"),
        greedy_solved=("passed", "mean"),
    )
    out = out.reset_index()
    out.insert(1, "validation loss", out["compute"].map(study["losses"]))
    return out.assign(compute=out["compute"].map(lambda c: f"{c:.3g}"))


def flag_rows(study: dict) -> pd.DataFrame:
    flags = study["flags"]
    if flags.empty:
        return flags
    return (
        flags.groupby("suite")
        .agg(
            problems=("problem", "count"),
            non_monotone=("non_monotone", "sum"),
            abrupt=("abrupt", "sum"),
        )
        .reset_index()
    )


def flag_examples(study: dict, column: str, limit: int = 8) -> pd.DataFrame:
    flags = study["flags"]
    if flags.empty:
        return flags
    picked = flags[flags[column]].copy()
    picked["drop"] = picked["first"] - picked["last"]
    order = picked.sort_values("drop", ascending=column != "non_monotone")
    return order.groupby("suite").head(limit)[["suite", "problem", "first", "last"]]


def figure(study: dict) -> go.Figure:
    """Per suite: the GPT-4 form's data, fit and forecasts (top), per-problem curves (bottom)."""
    suites = sorted(study["per_problem"]["suite"].unique())
    fig = make_subplots(
        rows=2,
        cols=len(suites),
        subplot_titles=[f"{s}: −mean log pass rate" for s in suites]
        + [f"{s}: per-problem pass rate" for s in suites],
        vertical_spacing=0.14,
    )
    table = study["per_problem"]
    for col, suite in enumerate(suites, start=1):
        forecasts = [(o, o.forecasts[suite]) for o in study["outcomes"]]
        kept = next((f.get("problems") for _, f in forecasts if f.get("problems")), None)
        group = table[table["suite"] == suite]
        if kept:
            values = capability.capability_runs(group[group["problem"].isin(kept)])
            fig.add_trace(
                go.Scatter(
                    x=values["compute"],
                    y=values["loss"],
                    mode="markers",
                    name="measured",
                    marker={"color": "black"},
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        for o, entry in forecasts:
            pred = entry["gpt4"]
            if "value" not in pred:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[o.plan.compute_full],
                    y=[pred["value"]],
                    mode="markers",
                    name="forecast (90%)",
                    marker={"color": "royalblue", "size": 10},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [pred["hi"] - pred["value"]],
                        "arrayminus": [pred["value"] - pred["lo"]],
                    },
                    showlegend=col == 1 and o is study["outcomes"][0],
                ),
                row=1,
                col=col,
            )
            a, k = pred["params"].get("A"), pred["params"].get("alpha")
            if a and k:
                grid = np.geomspace(min(float(c) for c in pred["points"]), o.plan.compute_full)
                fig.add_trace(
                    go.Scatter(
                        x=grid,
                        y=a * grid**-k,
                        mode="lines",
                        line={"color": "royalblue", "width": 1, "dash": "dot"},
                        showlegend=False,
                    ),
                    row=1,
                    col=col,
                )
        curves = capability.problem_curves(group, tolerance=capability.TOLERANCE)
        for _, curve in list(curves.groupby("problem"))[:60]:
            fig.add_trace(
                go.Scatter(
                    x=curve["compute"],
                    y=curve["pass_rate"],
                    mode="lines",
                    line={
                        "width": 0.6,
                        "color": "rgba(200,30,30,0.5)"
                        if curve["non_monotone"].iloc[0]
                        else "rgba(80,80,80,0.25)",
                    },
                    showlegend=False,
                ),
                row=2,
                col=col,
            )
        fig.update_xaxes(type="log", exponentformat="power", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
        fig.update_xaxes(
            type="log", exponentformat="power", title_text="training FLOPs", row=2, col=col
        )
    fig.update_layout(template="plotly_white", height=700, legend={"font": {"size": 10}})
    return fig


def trend_lines(study: dict) -> list[str]:
    """What the targets measured against each other and against the ladder, per suite."""
    table = study["per_problem"]
    means = table.groupby(["suite", "compute"])["pass_rate"].mean()
    targets = sorted(o.plan.compute_full for o in study["outcomes"] if o.target_run_id)
    largest = float(study["frontier"]["compute_full"].max())
    losses = study["losses"]
    lines = []
    for suite in sorted(table["suite"].unique()):
        rates = means[suite]
        if rates.max() <= capability.FLOOR:
            lines.append(f"- {suite}: no run's mean pass rate is above 1e-6.")
            continue
        steps = [largest, *targets]
        parts = [f"{c:.0e}: {rates[c]:.3g} (loss {losses[c]:.3f})" for c in steps]
        notes = [
            f"falls from {a:.0e} to {b:.0e}"
            + (" while the loss falls" if losses[b] < losses[a] else "")
            for a, b in zip(steps, steps[1:], strict=False)
            if rates[b] < rates[a]
        ]
        verdict = "; ".join(notes) if notes else "rises at every step"
        lines.append(f"- {suite}: mean pass rate {'; '.join(parts)}; it {verdict}.")
    return lines


def goal_lines(study: dict) -> list[str]:
    largest = float(study["frontier"]["compute_full"].max())
    lines = []
    for o in study["outcomes"]:
        ratio = round(o.plan.compute_full / largest)
        for suite, entry in sorted(o.forecasts.items()):
            pred, actual = entry["gpt4"], o.actual.get(suite, {}).get("gpt4")
            if "value" not in pred or actual is None:
                continue
            error = pred["value"] / actual - 1
            covered = pred["lo"] <= actual <= pred["hi"]
            goal = GOALS.get(ratio)
            verdict = (
                ""
                if goal is None
                else (" — goal met" if abs(error) <= goal and covered else " — goal MISSED")
            )
            lines.append(
                f"- {ratio}x, {suite}: mean log pass rate forecast {error:+.1%}, "
                f"{'covered' if covered else 'NOT covered'}{verdict}."
            )
    return lines


def write_report(study: dict, command: str, running: str) -> str:
    spec, front = study["spec"], study["frontier"]
    minutes = ", ".join(f"{s / 60:.1f} min" for s in study["seconds"].values())
    lines = [
        "# Predicting capabilities from small models",
        "",
        f"Generated by `{command}`. Every forecast below was logged to MLflow as a "
        "`kind=forecast` run before its target started; the target run carries the forecast's "
        "id (`forecast_run_id`) and the forecast run records the outcome (`actual_*`, `error_*`, "
        "`covered_*`). Targets marked *pending* are forecast and not trained yet.",
        "",
        f"- What else ran on the machine: {running}.",
        f"- Ladder: {len(study['runs'])} runs in {len(study['cells'])} cells (sweeps "
        f"{', '.join(study['sweeps'])}), {len(spec.budgets.values)} budgets from "
        f"{min(spec.budgets.values):.2g} to {max(spec.budgets.values):.2g} full FLOPs, shape "
        f"family {spec.train.get('depth')} layers and {spec.train.get('heads')} head; the lowest-"
        f"loss run of each budget ({len(front)} runs) is the capability ladder. Targets "
        f"trained: {minutes or 'none yet'}.",
        f"- Suites: {', '.join(spec.eval)} (`scalelab.evals`, 200 held-out problems each, never "
        "in the training split). brackets, indent and copy give the exact probability that one "
        "sample at temperature 0.8 writes the answer; python runs the greedy completion in the "
        "sandbox (0 or 1).",
        "- Forms, as `scalelab.forecast.capability` fits them: the GPT-4 form over the problems "
        "the smallest ladder run solves with probability above 1e-6, and a logistic in log "
        "compute for the mean pass rate; 90% intervals from 400 bootstrap resamples of the "
        "ladder's runs.",
        "",
        save_figure(figure(study), "capability-prediction"),
        "",
        "Top: the GPT-4 form's quantity on the ladder (black), the fitted law (dotted) and the "
        "forecasts (blue, 90% interval). Bottom: per-problem pass rates by compute (first 60 "
        "problems of each suite), red where a larger model does worse by more than 0.02.",
        "",
        "## Forecasts and outcomes",
        "",
        markdown_table(outcome_rows(study)),
        "",
        *goal_lines(study),
        "",
        "## Pass rates measured",
        "",
        "The ladder's largest run and the targets, per suite:",
        "",
        *trend_lines(study),
        "",
        markdown_table(greedy_rows(study)),
        "",
        "## Problems that scale inversely or abruptly",
        "",
        "A problem is non-monotone when a larger run's pass rate is more than 0.02 below a "
        "smaller run's (inverse scaling, the aggregate law assumes none); abrupt when its pass "
        "rate rises by 0.5 or more between neighbouring computes.",
        "",
        markdown_table(flag_rows(study)),
        "",
        "Largest drops (pass rate at the smallest and the largest compute):",
        "",
        markdown_table(flag_examples(study, "non_monotone")),
        "",
        "Abrupt problems:",
        "",
        markdown_table(flag_examples(study, "abrupt")),
        "",
        f"Environment: {environment_line()}. Reproduce: `{command}`.",
        "",
    ]
    path = HERE / "capability-prediction.md"
    path.write_text("\n".join(lines))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "capability.yaml"))
    parser.add_argument("--targets", type=float, nargs="+", default=[1e12, 1e13])
    parser.add_argument(
        "--train", type=float, nargs="*", default=None, help="targets to train now (default: all)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workspace", default=str(HERE / "capability-runs"))
    parser.add_argument(
        "--running", default="nothing else", help="what else ran on the machine, for the report"
    )
    args = parser.parse_args()
    workspace = Workspace.resolve(args.workspace)
    study = run_capability_study(
        args.spec, args.targets, workspace, workers=args.workers, train_targets=args.train
    )
    targets = " ".join(f"{t:.0e}".replace("e+", "e") for t in args.targets)
    command = f"python analysis/capability_prediction.py --targets {targets}"
    report = write_report(study, command, args.running)
    print(f"wrote {report} and {write_dashboard(study, workspace)}")


def write_dashboard(study: dict, workspace: Workspace) -> str:
    """A dashboard definition of the study's runs in the workspace, so that
    ``scalelab dashboard --definition capability --workspace ...`` finds it."""
    import yaml

    definition = {
        "title": "Capabilities of the capability ladder and its targets",
        "description": f"Runs of MLflow experiment {study['spec'].experiment_name}: the best "
        f"trial of each cell and the targets, evaluated on {', '.join(study['spec'].eval)}.",
        "sources": [{"experiment": study["spec"].experiment_name}],
        "panels": ["capability", "loss_vs_compute"],
    }
    path = workspace.dashboards_dir / "capability.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return str(path)


if __name__ == "__main__":
    main()
