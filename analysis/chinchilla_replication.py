"""Replicate Epoch AI's Chinchilla fit (Besiroglu et al. 2024) with scalelab.forecast.

Reads ``analysis/data/`` only, writes ``analysis/chinchilla-replication.md`` and its figure.
Run: ``python analysis/chinchilla_replication.py [--resamples 1000] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from report import DATA, HERE, environment_line, fmt, interval, markdown_table, save_figure
from scipy.special import huber

from scalelab.forecast import Chinchilla, bootstrap, compute_optimal, fit_law, load_epoch_chinchilla

PARAMS = ["E", "A", "B", "alpha", "beta"]
COLORBAR_GAP = 0.2  # paper width between the two panels
# Model sizes of Hoffmann et al. Table 3, whose compute-optimal token counts we compare.
TABLE3_PARAMS = {
    "400M": 400e6,
    "1B": 1e9,
    "10B": 10e9,
    "67B": 67e9,
    "175B": 175e9,
    "280B": 280e9,
    "520B": 520e9,
    "1T": 1e12,
    "10T": 10e12,
}


def reference() -> pd.DataFrame:
    ref = pd.read_csv(DATA / "chinchilla_published_reference.csv")
    return ref


def objective_at(law: Chinchilla, runs: pd.DataFrame) -> float:
    r = np.log(runs.loss) - np.log(law.predict(n_params=runs.n_params, tokens=runs.tokens))
    return float(np.sum(huber(1e-3, r)))


def tokens_for_params(alloc, n: float, level: float) -> tuple[float, float, float]:
    """Compute-optimal D for a model of N parameters: invert N_opt(C) = n_coef·C^a."""

    def one(log_n_coef, a, log_d_coef, b):
        log_c = (np.log(n) - log_n_coef) / a
        return np.exp(log_d_coef + b * log_c)

    point = one(np.log(alloc.n_coef), alloc.a, np.log(alloc.d_coef), alloc.b)
    samples = one(*alloc.samples.T)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(lo), float(hi)


def figure(
    runs: pd.DataFrame,
    law: Chinchilla,
    alpha_beta: np.ndarray,
    box: dict[str, tuple[float, float]],
) -> go.Figure:
    """Observed against fitted loss (coloured by log10 N), and the bootstrap of (α, β) against
    Epoch's 95% box (``box``: (low, high) of alpha and beta)."""
    pred = law.predict(n_params=runs.n_params, tokens=runs.tokens)
    # The gap between the panels holds the left panel's colour bar, clear of the β title.
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=COLORBAR_GAP,
        subplot_titles=(
            f"observed vs fitted loss ({len(runs)} runs)",
            f"bootstrap of (α, β), {len(alpha_beta)} resamples",
        ),
    )
    left_end = fig.layout.xaxis.domain[1]
    fig.add_trace(
        go.Scatter(
            x=pred,
            y=runs.loss,
            mode="markers",
            marker={
                "color": np.log10(runs.n_params),
                "colorscale": "Viridis",
                "colorbar": {"title": "log10 N", "x": left_end + 0.01, "thickness": 14},
                "size": 6,
            },
        ),
        row=1,
        col=1,
    )
    lim = [runs.loss.min() * 0.98, runs.loss.max() * 1.02]
    fig.add_trace(
        go.Scatter(x=lim, y=lim, mode="lines", line={"dash": "dash", "color": "grey"}),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=alpha_beta[:, 0],
            y=alpha_beta[:, 1],
            mode="markers",
            marker={"size": 3, "opacity": 0.4},
        ),
        row=1,
        col=2,
    )
    (a0, a1), (b0, b1) = box["alpha"], box["beta"]
    fig.add_shape(type="rect", x0=a0, x1=a1, y0=b0, y1=b1, line={"color": "red"}, row=1, col=2)
    fig.add_trace(
        go.Scatter(
            x=[law.alpha],
            y=[law.beta],
            mode="markers",
            marker={"symbol": "x", "size": 12, "color": "black"},
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="fitted loss (nats/token; dashed: y = x)", row=1, col=1)
    fig.update_yaxes(title_text="observed loss (nats/token)", row=1, col=1)
    fig.update_xaxes(title_text="α (red box: Epoch's 95% CI; ×: the fit)", row=1, col=2)
    fig.update_yaxes(title_text="β", row=1, col=2)
    fig.update_layout(
        height=520, width=1100, showlegend=False, margin={"t": 50, "b": 60, "l": 70, "r": 30}
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    runs = load_epoch_chinchilla(DATA / "epoch_chinchilla_svg_extracted_data.csv")
    ref = reference()
    epoch = ref[ref.table == "besiroglu2024_epoch"].set_index("quantity")
    hoffmann = ref[
        (ref.table == "hoffmann2022_approach3") & (ref.approach_or_fit == "unrounded_tex_source")
    ].set_index("quantity")

    t0 = time.perf_counter()
    fit = fit_law(runs)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    varpro = fit_law(runs, engine="varpro", check_identifiability=False)
    varpro_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    boot = bootstrap(fit, runs, n_resamples=args.resamples, level=0.95, seed=0, n_jobs=args.jobs)
    boot_seconds = time.perf_counter() - t0
    ci = boot.param_intervals(level=0.95)

    rows = []
    for p in PARAMS:
        rows.append(
            {
                "param": p,
                "scalelab": fit.law.params[p],
                "scalelab 95% CI": interval(ci.loc[p, "lo"], ci.loc[p, "hi"]),
                "Epoch": epoch.loc[p, "value"],
                "Epoch 95% CI": interval(epoch.loc[p, "ci_low"], epoch.loc[p, "ci_high"]),
                "inside Epoch CI": bool(
                    epoch.loc[p, "ci_low"] <= fit.law.params[p] <= epoch.loc[p, "ci_high"]
                ),
                "Hoffmann et al.": hoffmann.loc[p, "value"],
            }
        )
    params_table = pd.DataFrame(rows)

    epoch_law = Chinchilla(**{p: float(epoch.loc[p, "value"]) for p in PARAMS})
    hoffmann_law = Chinchilla(**{p: float(hoffmann.loc[p, "value"]) for p in PARAMS})
    objectives = pd.DataFrame(
        [
            {
                "parameters": "scalelab, default engine (lbfgs)",
                "objective": fit.value,
                "time (s)": fit_seconds,
            },
            {
                "parameters": "scalelab, variable projection",
                "objective": varpro.value,
                "time (s)": varpro_seconds,
            },
            {
                "parameters": "Epoch's published point (rounded)",
                "objective": objective_at(epoch_law, runs),
                "time (s)": np.nan,
            },
            {
                "parameters": "Hoffmann et al.'s published point",
                "objective": objective_at(hoffmann_law, runs),
                "time (s)": np.nan,
            },
        ]
    )

    preds = []
    for name, n, d in (("Chinchilla", 70e9, 1.4e12), ("Gopher", 280e9, 300e9)):
        p = boot.predict(n_params=n, tokens=d, level=0.9)
        preds.append(
            {
                "model": name,
                "N": n,
                "D": d,
                "predicted loss": p.value,
                "90% prediction interval": interval(p.lo, p.hi),
            }
        )
    c_chin = 6 * 70e9 * 1.4e12
    opt = boot.predict(compute=c_chin, level=0.9)
    preds.append(
        {
            "model": "compute-optimal at Chinchilla's C",
            "N": np.nan,
            "D": np.nan,
            "predicted loss": opt.value,
            "90% prediction interval": interval(opt.lo, opt.hi),
        }
    )

    alloc = compute_optimal(boot)
    a_lo, a_hi = alloc.summary(level=0.95).loc["a", ["lo", "hi"]]
    ratio = alloc.tokens_per_param(c_chin, level=0.95)
    n_opt = alloc.n_opt(c_chin, level=0.95)
    table3 = ref[ref.table == "hoffmann2022_table3"]
    t3 = []
    for label, n in TABLE3_PARAMS.items():
        d, lo, hi = tokens_for_params(alloc, n, 0.95)
        key = f"tokens_for_{label}_params"
        a1 = table3[(table3.approach_or_fit == "approach1") & (table3.quantity == key)].value
        a2 = table3[(table3.approach_or_fit == "approach2") & (table3.quantity == key)].value
        t3.append(
            {
                "N": label,
                "Approach 3 (scalelab)": d,
                "95% CI": interval(lo, hi, 3),
                "Hoffmann Approach 1": float(a1.iloc[0]),
                "Hoffmann Approach 2": float(a2.iloc[0]),
            }
        )

    box = {q: (epoch.loc[q, "ci_low"], epoch.loc[q, "ci_high"]) for q in ("alpha", "beta")}
    fig = figure(runs, fit.law, boot.samples[:, 3:5], box)
    figure_link = save_figure(fig, "chinchilla-replication")

    inside = params_table["inside Epoch CI"].all()
    text = f"""# Chinchilla replication

Data: the 240 Chinchilla runs reconstructed by Epoch AI from Fig. 4 of Hoffmann et al. (2022)
(`analysis/data/epoch_chinchilla_svg_extracted_data.csv`, the 5 highest losses dropped as
Epoch does, D = C/(6N)). Law: L(N, D) = E + A·N^-α + B·D^-β. Objective: sum of Huber(δ=1e-3)
on log residuals of the log-sum-exp form, L-BFGS-B from Epoch's 4,500-point grid (screened;
the 16 best starts refined with the analytic gradient). Intervals: {args.resamples} bootstrap
resamples of runs, seed 0, percentile 95%.

Generated by `python analysis/chinchilla_replication.py` ({environment_line()}).

## Parameters

Every parameter lands inside Epoch's published 95% interval: **{"yes" if inside else "NO"}**.

{markdown_table(params_table)}

{fit.summary()}

Bootstrap: {boot.n_resamples} resamples of {boot.n_units} runs in {boot_seconds:.1f} s on
{args.jobs} processes ({boot.n_failed} failed, {boot.n_unconverged} unconverged).
Warnings: {"; ".join(boot.warnings) or "none"}.

## Objective reached

The same objective at four parameter sets (lower is better):

{markdown_table(objectives, {"objective": lambda x: f"{x:.10e}", "time (s)": lambda x: fmt(x, 3)})}

## Predictions (90% prediction intervals: parameter uncertainty plus the runs' scatter)

{markdown_table(pd.DataFrame(preds))}

## Compute-optimal allocation (Approach 3)

a = β/(α+β) = {alloc.a:.4f} (95% CI {a_lo:.4f} – {a_hi:.4f}); Epoch report
{epoch.loc["a=beta/(alpha+beta)", "value"]} (SE 0.020), Hoffmann et al.'s Approach 3 gives
0.46. At Chinchilla's budget C = 6·N·D = {c_chin:.3g} FLOPs the optimum is N = {fmt(n_opt.value)}
(95% CI {interval(n_opt.lo, n_opt.hi)}) with {ratio.value:.1f} tokens per parameter (95% CI
{ratio.lo:.1f} – {ratio.hi:.1f}); Chinchilla itself used 20.

Compute-optimal tokens for the model sizes of Hoffmann et al.'s Table 3:

{markdown_table(pd.DataFrame(t3))}

## Figure

{figure_link}
"""
    (HERE / "chinchilla-replication.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
