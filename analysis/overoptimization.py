"""Reward-model over-optimisation and reward-model scaling on the synthetic task, end to end.

A small version of Gao, Schulman & Hilton (2022) run with ``scalelab.rlhf``: one SFT policy,
proxy reward models of several sizes trained on the same simulated-labeller comparisons, then
best-of-n and PPO against each proxy while the programmatic gold reward is recorded.
``scalelab.forecast.overoptimization`` fits R_bon(d) = d(α − β·d) and R_RL(d) = d(α − β·log d)
per reward-model size. Every training run is tracked in MLflow (a temporary workspace unless
``--workspace`` is given). Writes ``analysis/overoptimization.md``, its figure and
``analysis/overoptimization_points.csv``.

Run: ``python analysis/overoptimization.py [--quick] [--workspace DIR]`` (a few minutes on two
cores; ``--quick`` is a smoke run that prints its report and writes no file).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from report import HERE, environment_line, fmt, interval, markdown_table, save_figure

from scalelab.forecast.overoptimization import OveroptScaling, fit_overoptimization_by_size
from scalelab.rlhf import checkpoint, run_stage
from scalelab.rlhf.bestofn import bon_frame, sample_pool
from scalelab.rlhf.stages import EVAL_SEED
from scalelab.rlhf.task import SyntheticTask
from scalelab.workspace import Workspace

FULL = dict(
    policy="n100k",
    sft_steps=300,
    rm_presets=("n10k", "n30k", "n100k", "n300k"),
    rm_steps=400,
    prompts=128,
    pool=64,
    ppo_steps=40,
    ppo_eval_every=4,
    resamples=1000,
)
QUICK = dict(
    policy="n30k",
    sft_steps=100,
    rm_presets=("n10k", "n30k"),
    rm_steps=60,
    prompts=32,
    pool=8,
    ppo_steps=6,
    ppo_eval_every=2,
    resamples=200,
)
LABEL_NOISE = 0.05
KL_COEF = 0.0  # Gao et al.: a KL penalty acts like early stopping on the gold-vs-KL frontier
EXPERIMENT = "overoptimization"


def run(settings: dict, ws: Workspace) -> dict:
    """Train everything, measure the curves; returns the tables the report needs."""
    common = dict(experiment=EXPERIMENT, seed=0)
    t0 = time.perf_counter()
    sft = run_stage(
        "sft", dict(preset=settings["policy"], steps=settings["sft_steps"], lr=2e-3, **common), ws
    )
    policy = checkpoint.trunk(checkpoint.load(sft.checkpoint, ws))
    prompts = SyntheticTask().prompts(settings["prompts"], EVAL_SEED)
    budget = SyntheticTask().cfg.max_answer_len() + 3
    pool = sample_pool(policy, prompts, settings["pool"], budget, seed=1)

    rm_rows, points = [], []
    for preset in settings["rm_presets"]:
        rm = run_stage(
            "reward",
            dict(
                preset=preset,
                steps=settings["rm_steps"],
                lr=2e-3,
                label_noise=LABEL_NOISE,
                **common,
            ),
            ws,
        )
        rm_rows.append(
            {
                "reward model": preset,
                "n_params": rm.n_params,
                "held-out accuracy": rm.metrics["eval_accuracy"],
                "gold agreement": rm.metrics["eval_gold_accuracy"],
                "pairwise loss": rm.metrics["eval_loss"],
                "margin": rm.metrics["eval_margin"],
            }
        )
        model = checkpoint.reward_model(checkpoint.load(rm.checkpoint, ws))
        bon = bon_frame(pool.rescored(model))
        for row in bon.itertuples():
            points.append(
                dict(
                    method="bon",
                    rm=preset,
                    rm_n_params=rm.n_params,
                    step=row.n,
                    kl=row.kl,
                    gold=row.gold,
                    proxy=row.proxy,
                )
            )
        ppo = run_stage(
            "ppo",
            dict(
                init=sft.checkpoint,
                reward_init=rm.checkpoint,
                steps=settings["ppo_steps"],
                eval_every=settings["ppo_eval_every"],
                kl_coef=KL_COEF,
                n_eval=settings["prompts"],
                save_checkpoint=False,
                **common,
            ),
            ws,
        )
        for h in ppo.history:
            points.append(
                dict(
                    method="rl",
                    rm=preset,
                    rm_n_params=rm.n_params,
                    step=h["iteration"],
                    kl=max(h["kl"], 0.0),
                    gold=h["gold_reward"],
                    proxy=h["reward"],
                )
            )
        print(
            f"{preset}: accuracy {rm.metrics['eval_accuracy']:.3f}, best-of-{pool.size} gold "
            f"{bon.gold.iloc[-1]:.3f}, PPO gold {ppo.history[-1]['gold_reward']:.3f} at KL "
            f"{ppo.history[-1]['kl']:.2f}",
            flush=True,
        )

    frame = pd.DataFrame(points)
    frame["d"] = np.sqrt(frame.kl)
    start = frame.groupby(["method", "rm"]).transform("first")  # n = 1 / iteration 0
    frame["gold_gain"] = frame.gold - start.gold
    frame["proxy_gain"] = frame.proxy - start.proxy
    fits = {
        form: fit_overoptimization_by_size(
            frame[frame.method == form],
            form,
            d="d",
            reward="gold_gain",
            n_resamples=settings["resamples"],
            seed=0,
        )
        for form in ("bon", "rl")
    }
    return dict(
        sft=sft,
        pool=pool,
        rms=pd.DataFrame(rm_rows),
        frame=frame,
        fits=fits,
        seconds=time.perf_counter() - t0,
    )


def figure(frame: pd.DataFrame, rms: pd.DataFrame, fits: dict[str, OveroptScaling]) -> go.Figure:
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=(
            "best-of-n: gold gain",
            "PPO: gold gain",
            "reward model: held-out accuracy",
            "best-of-n: proxy gain",
            "PPO: proxy gain",
            "fitted α and β",
        ),
        horizontal_spacing=0.08,
        vertical_spacing=0.2,
    )
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    sizes = sorted(frame.rm_n_params.unique())
    for k, size in enumerate(sizes):
        color = palette[k % len(palette)]
        name = f"RM N={size:,}"
        for col, form in ((1, "bon"), (2, "rl")):
            part = frame[(frame.method == form) & (frame.rm_n_params == size)]
            fit = fits[form].fits[fits[form].sizes.index(float(size))]
            grid = np.linspace(0, part.d.max() * 1.05, 100)
            fig.add_trace(
                go.Scatter(
                    x=part.d,
                    y=part.gold_gain,
                    mode="markers",
                    marker=dict(color=color),
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=fit.predict(grid),
                    mode="lines",
                    line=dict(color=color),
                    legendgroup=name,
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=part.d,
                    y=part.proxy_gain,
                    mode="lines+markers",
                    line=dict(color=color, dash="dash"),
                    legendgroup=name,
                    showlegend=False,
                ),
                row=2,
                col=col,
            )
    fig.add_trace(
        go.Scatter(
            x=rms.n_params,
            y=rms["held-out accuracy"],
            mode="lines+markers",
            name="accuracy (labels)",
            line=dict(color="black"),
        ),
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(
            x=rms.n_params,
            y=rms["gold agreement"],
            mode="lines+markers",
            name="agreement with gold",
            line=dict(color="gray", dash="dot"),
        ),
        row=1,
        col=3,
    )
    for form, dash in (("bon", "solid"), ("rl", "dash")):
        table = fits[form].table
        for param, color in (("alpha", "#17becf"), ("beta", "#e377c2")):
            fig.add_trace(
                go.Scatter(
                    x=table["size"],
                    y=table[param],
                    mode="lines+markers",
                    name=f"{param} ({form})",
                    line=dict(color=color, dash=dash),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=table[f"{param}_hi"] - table[param],
                        arrayminus=table[param] - table[f"{param}_lo"],
                    ),
                ),
                row=2,
                col=3,
            )
    for col in (1, 2):  # titles on the bottom row only: the top row's would hit the subtitles
        fig.update_xaxes(title_text="d = sqrt(KL)", row=2, col=col)
    for row in (1, 2):
        fig.update_xaxes(type="log", row=row, col=3)
    fig.update_xaxes(title_text="reward-model N", row=2, col=3)
    fig.update_yaxes(title_text="gold reward − initial", row=1, col=1)
    fig.update_yaxes(title_text="RM score − initial", row=2, col=1)
    fig.update_layout(
        title="Reward-model over-optimisation on the synthetic task (points: measured; "
        "lines: fitted R(d))",
        height=800,
        width=1400,
        template="plotly_white",
    )
    return fig


def fit_table(scaling: OveroptScaling, rms: pd.DataFrame) -> pd.DataFrame:
    names = dict(zip(rms.n_params.astype(float), rms["reward model"], strict=True))
    table = scaling.table
    return pd.DataFrame(
        {
            "reward model": [names[s] for s in table["size"]],
            "N": table["size"].astype(int),
            "α": table.alpha,
            "α 90% CI": [
                interval(lo, hi, 3) for lo, hi in zip(table.alpha_lo, table.alpha_hi, strict=True)
            ],
            "β": table.beta,
            "β 90% CI": [
                interval(lo, hi, 3) for lo, hi in zip(table.beta_lo, table.beta_hi, strict=True)
            ],
            "peak d*": table.d_peak,
            "R(d*)": table.r_peak,
            "RMSE": table.rmse,
            "points": table.n_points,
        }
    )


def curve_summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, rm), part in frame.groupby(["method", "rm"], sort=False):
        best = part.loc[part.gold.idxmax()]
        last = part.iloc[-1]
        rows.append(
            {
                "method": "best-of-n" if method == "bon" else "PPO",
                "reward model": rm,
                "gold at start": part.gold.iloc[0],
                "best gold": best.gold,
                "at KL": best.kl,
                "final gold": last.gold,
                "final proxy gain": last.proxy_gain,
                "final KL": last.kl,
            }
        )
    return pd.DataFrame(rows)


def trend_sentence(scaling: OveroptScaling, form: str) -> str:
    a0, a1 = scaling.trends["alpha"]
    b0, b1 = scaling.trends["beta"]

    def line(intercept: float, slope: float) -> str:
        sign = "−" if slope < 0 else "+"
        return f"{fmt(intercept, 3)} {sign} {fmt(abs(slope), 3)}·log10 N"

    return (
        f"{form}: α ≈ {line(a0, a1)} and β ≈ {line(b0, b1)} (least squares over the "
        f"{len(scaling.sizes)} sizes)"
    )


def findings(frame: pd.DataFrame, rms: pd.DataFrame, fits: dict[str, OveroptScaling]) -> list[str]:
    """Statements read off the numbers (each one checks the data before saying it)."""
    out = []
    acc = rms.sort_values("n_params")["held-out accuracy"].to_numpy()
    order = "rises" if np.all(np.diff(acc) > 0) else "does not rise monotonically"
    out.append(
        f"Held-out pairwise accuracy {order} with reward-model size: "
        + ", ".join(
            f"{r['reward model']} {r['held-out accuracy']:.3f}"
            for _, r in rms.sort_values("n_params").iterrows()
        )
        + "."
    )
    for method, label in (("bon", "best-of-n"), ("rl", "PPO")):
        part = frame[frame.method == method]
        turned = []
        for rm, curve in part.groupby("rm", sort=False):
            peak = curve.gold.idxmax()
            if peak != curve.index[-1] and curve.gold.iloc[-1] < curve.gold.max() - 0.01:
                turned.append(rm)
        proxy_up = all(c.proxy.iloc[-1] > c.proxy.iloc[0] for _, c in part.groupby("rm"))
        gold = (
            f"the gold reward peaked and then fell by more than 0.01 for {', '.join(turned)}"
            if turned
            else "the gold reward never fell more than 0.01 below its peak"
        )
        out.append(
            f"{label}: the proxy score {'rose for every' if proxy_up else 'did not rise for every'}"
            f" reward model; {gold} within the KL range measured (up to {part.kl.max():.2f} "
            "nats)."
        )
    ppo = frame[frame.method == "rl"].sort_values(["rm_n_params", "step"])
    peaks = []
    for _, curve in ppo.groupby("rm_n_params", sort=True):
        best = curve.loc[curve.gold.idxmax()]
        at_end = " (its last evaluation)" if best.name == curve.index[-1] else ""
        peaks.append(f"{best.rm} {best.kl:.2f} nats{at_end}")
    out.append(
        "PPO: KL at the highest gold reward, by reward-model size: " + ", ".join(peaks) + "."
    )
    for form, label in (("bon", "best-of-n"), ("rl", "PPO")):
        betas = fits[form].table.sort_values("size").beta.to_numpy()
        if len(betas) >= 2:
            moves = (
                "falls"
                if np.all(np.diff(betas) < 0)
                else ("rises" if np.all(np.diff(betas) > 0) else "moves non-monotonically")
            )
            out.append(
                f"{label}: the over-optimisation coefficient β {moves} with reward-model "
                f"size ({', '.join(fmt(b, 3) for b in betas)})."
            )
    return out


def early_dip(frame: pd.DataFrame) -> list[str]:
    """A caveat when PPO's first evaluation scores below the start on the proxy."""
    ppo = frame[frame.method == "rl"].sort_values(["rm_n_params", "step"])
    first = ppo.groupby("rm", sort=False).nth(1)
    dipped = first[first.proxy_gain < 0]
    if dipped.empty:
        return []
    return [
        f"- PPO's first evaluation (iteration {int(first.step.iloc[0])}) scores below the SFT "
        f"policy on the proxy for {len(dipped)} of {len(first)} reward models (KL "
        f"{fmt(dipped.kl.min(), 2)}–{fmt(dipped.kl.max(), 2)} nats), likely because the value "
        "network starts as the proxy, which only ever scored finished answers: its values of "
        "unfinished ones, and so the first advantages, are off until it has trained."
    ]


def write_report(result: dict, settings: dict, figure_link: str, quick: bool) -> str:
    frame, rms, fits, sft = result["frame"], result["rms"], result["fits"], result["sft"]
    env = environment_line([f"torch {torch.__version__}"])
    sizes = ", ".join(f"{r['reward model']} (N = {r['n_params']:,})" for _, r in rms.iterrows())
    lines = [
        "# Reward-model over-optimisation on the synthetic task",
        "",
        "A small replication of the setup of Gao, Schulman & Hilton (2022), *Scaling Laws for "
        "Reward Model Overoptimization*, on `scalelab.rlhf`'s offline instruction task, where "
        "the programmatic gold reward plays the part of their gold reward model.",
        "",
        f"Generated by `python analysis/overoptimization.py{' --quick' if quick else ''}` in "
        f"{result['seconds']:.0f} s on the CPU ({env}).",
        *(
            ["", "**Quick mode: budgets far too small for the numbers to mean much.**"]
            if quick
            else []
        ),
        "",
        "## Setup",
        "",
        f"- **Policy**: GPT-2 preset `{settings['policy']}` (N = {sft.n_params:,}) fine-tuned "
        f"for {settings['sft_steps']} steps on demonstrations whose labellers edit each digit "
        f"with chance 0.2; its sampled answers score a gold reward of "
        f"{sft.metrics['eval_gold_reward']:.3f} on the held-out prompts.",
        f"- **Proxy reward models**: {sizes}; trained from scratch for {settings['rm_steps']} "
        f"steps (16 prompts per step, K = 4–9 ranked completions each, all pairs of a prompt in "
        f"one batch element) on the same comparisons, ranked by simulated labellers with "
        f"Bradley–Terry noise (temperature {LABEL_NOISE}).",
        f"- **Best-of-n**: one pool of {settings['pool']} samples for each of "
        f"{settings['prompts']} held-out prompts, scored by every proxy; n = 1, 2, 4, … "
        f"{settings['pool']} with KL = log n − (n−1)/n and the unbiased estimator of the best-of-n "
        "gold and proxy reward.",
        f"- **PPO**: {settings['ppo_steps']} iterations of 64 rollouts (4 epochs, minibatch 32, "
        "learning rate 3e-4, value network initialised from the proxy) "
        f"with β = {KL_COEF} (no KL penalty: Gao et al. found that a penalty behaves like "
        "early stopping on the gold-vs-KL frontier), "
        f"evaluated every {settings['ppo_eval_every']} iterations on the {settings['prompts']} "
        "held-out prompts: one sampled answer each, KL(π‖π_SFT) summed over its tokens.",
        "- **Fits**: gold-reward gain over the initial policy against d = sqrt(KL), least "
        "squares through the origin; 90% intervals from "
        f"{settings['resamples']} bootstrap resamples of the points. The PPO points of one "
        "reward model come from a single run, so their intervals leave out seed-to-seed "
        "variation.",
        "",
        figure_link,
        "",
        "## Findings",
        "",
        *[f"- {s}" for s in findings(frame, rms, fits)],
        "",
        "## Reward-model scaling",
        "",
        markdown_table(rms),
        "",
        "Accuracy is against the held-out labellers' rankings (noisy); gold agreement against "
        "the gold reward's order.",
        "",
        "## Gold and proxy along each curve",
        "",
        markdown_table(curve_summary(frame)),
        "",
        "## Fitted functional forms",
        "",
        "### Best-of-n: R_bon(d) = d(α − β·d)",
        "",
        markdown_table(fit_table(fits["bon"], rms)),
        "",
        "### PPO: R_RL(d) = d(α − β·log d)",
        "",
        markdown_table(fit_table(fits["rl"], rms)),
        "",
        "### How α and β move with reward-model size",
        "",
        f"- {trend_sentence(fits['bon'], 'best-of-n')}",
        f"- {trend_sentence(fits['rl'], 'PPO')}",
        "",
        "Gao et al. report that α and β of both forms follow approximately logarithmic trends "
        "in the proxy's parameter count (for reward models of 3M to 3B parameters); these "
        "reward models are 10K to 300K parameters on a toy task, so the comparison is of "
        "shape, not of values.",
        "",
        "## Caveats",
        "",
        "- The gold reward is exact and the labellers are simulated; the proxies differ from it "
        "through finite data, capacity and training, and through what they never saw (the "
        "policy can emit byte sequences absent from the comparisons).",
        f"- The gold reward is bounded by 1, and best-of-{settings['pool']} against the largest "
        f"proxy reaches {frame[frame.method == 'bon'].gold.max():.3f}: part of the curvature "
        "of the best-of-n curves (β_bon) is this ceiling, not over-optimisation, unlike the "
        "unbounded gold reward-model score of Gao et al.",
        *early_dip(frame),
        "- One seed per reward model and one PPO run each; KL is estimated from one sample per "
        "prompt, so the PPO points scatter.",
        "- R_RL(1) = α_RL: the RL form's α is pinned by the evaluations near KL = 1 nat, "
        "here the first few PPO evaluations.",
        "",
        "Raw points (one row per best-of-n value of n or PPO evaluation): "
        "[overoptimization_points.csv](overoptimization_points.csv).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="keep the MLflow runs here [default: a temporary folder]",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL

    torch.set_num_threads(1)  # tiny models: one thread each is fastest on a shared machine
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(args.workspace or Path(tmp) / "ws").ensure()
        result = run(settings, ws)

    if args.quick:  # a smoke run: print, and leave the committed report alone
        print(write_report(result, settings, "(figure not written in quick mode)", True))
    else:
        result["frame"].to_csv(
            HERE / "overoptimization_points.csv", index=False, float_format="%.6g"
        )
        fig = figure(result["frame"], result["rms"], result["fits"])
        report = write_report(result, settings, save_figure(fig, "overoptimization"), False)
        (HERE / "overoptimization.md").write_text(report)
        print(report)
    for scaling in result["fits"].values():
        print(scaling)
    if any(not math.isfinite(f.alpha) for s in result["fits"].values() for f in s.fits):
        raise SystemExit("a fit failed")


if __name__ == "__main__":
    main()
