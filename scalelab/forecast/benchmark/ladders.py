"""The real ladders of the forecasting benchmark, read from a data folder (a clone's
``analysis/data/``; provenance in ``analysis/data/PROVENANCE.md``).

A ladder's ``source`` is the paper or code base it comes from: ladders of one source share
authors, code and recipes, so the benchmark holds them out together.

Each ladder is final losses in the project's vocabulary (``run_id``, ``n_params``,
``tokens``, ``compute`` = 6·N·D, ``loss``, and ``budget`` for IsoFLOP sets), plus, where the
source has them, intermediate validation losses (``run_id``, ``n_params``, ``tokens`` the
run's budget, ``tokens_seen``, ``loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.forecast.io import load_epoch_chinchilla
from scalelab.vocab import compute_6nd


@dataclass(frozen=True)
class Ladder:
    name: str
    description: str
    runs: pd.DataFrame
    curves: pd.DataFrame | None = None
    source: str = ""  # the paper or code base: held out together with its siblings
    hindsight: bool = False  # its outcomes were known when the engine's forms were chosen


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(compute=compute_6nd(df["n_params"], df["tokens"]))
    keep = ("run_id", "n_params", "tokens", "compute", "loss", "budget", "unigram")
    cols = [c for c in keep if c in df]
    return df[cols].sort_values("compute", ignore_index=True)


def chinchilla(data: Path) -> Ladder:
    runs = load_epoch_chinchilla(data / "epoch_chinchilla_svg_extracted_data.csv")
    return Ladder(
        "chinchilla",
        "Epoch AI's reconstruction of the Chinchilla runs (Hoffmann et al. 2022), 240 runs",
        _runs(runs),
        source="hoffmann2022",
    )


# (source, dataset, condition) of the Open-Athena IsoFLOP sets used; the two other
# Chinchilla sets there are the same runs as Epoch's, and Llama 3's exp_loss rows are a
# transformation of its raw ones.
ISOFLOP_SETS = {
    "llama3": ("llama_3", "llama_3", "raw_loss", "Llama 3 IsoFLOP runs (digitised)"),
    "marin-comma": ("marin_202603", "comma", None, "Marin ladder on Comma"),
    "marin-dclm": ("marin_202603", "dclm", None, "Marin ladder on DCLM"),
    "marin-nemotron": ("marin_202603", "nemotron", None, "Marin ladder on Nemotron-CC"),
    "misfitting": ("misfitting", "fineweb_c4", None, "Misfitting IsoFLOP sets (arXiv:2502.18969)"),
}


def isoflop(data: Path, name: str) -> Ladder:
    source, dataset, condition, what = ISOFLOP_SETS[name]
    df = pd.read_csv(data / "openathena_isoflops_transform.csv")
    df = df[(df["source"] == source) & (df["dataset"] == dataset)]
    if condition is not None:
        df = df[df["condition"] == condition]
    df = df[df["reason"] != "exact_duplicate"]
    df = df.rename(columns={"params": "n_params"}).assign(
        run_id=lambda d: [f"{name}-{i}" for i in range(len(d))]
    )
    what = f"{what}, {df['budget'].nunique()} budgets, {len(df)} runs"
    return Ladder(name, what, _runs(df), source=source)


def datablations(data: Path) -> Ladder:
    df = pd.read_csv(data / "colpret_datablations_contour_losses.csv")
    df = df[(df["epochs"] == 1.0) & (df["data"] == "c4")]
    df = df.rename(columns={"num_params": "n_params", "token_num": "tokens", "openLM_loss": "loss"})
    df = df.drop_duplicates(["n_params", "tokens"]).assign(
        run_id=lambda d: [f"datablations-{i}" for i in d["index"]]
    )
    return Ladder(
        "datablations-c4",
        f"Muennighoff et al. 2023 single-epoch C4 runs, {len(df)} runs",
        _runs(df),
        source="muennighoff2023",
    )


# GPT-3 sizes and tokens: Brown et al. 2020, Table 2.1 (every model saw 300B tokens).
GPT3_PARAMS = {
    "small": 125e6,
    "medium": 350e6,
    "large": 760e6,
    "xl": 1.3e9,
    "2.7b": 2.7e9,
    "6.7b": 6.7e9,
    "13b": 13e9,
    "175b": 175e9,
}
GPT3_TOKENS = 300e9


def gpt3(data: Path) -> Ladder:
    """Digitised validation curves (x in billions of tokens): the final loss is the median
    over the last 10B tokens; checkpoints are medians over 10B-token bins."""
    df = pd.read_csv(data / "colpret_gpt3_extracted.csv").dropna(subset=["val_loss"])
    df = df.assign(n_params=df["model"].map(GPT3_PARAMS), run_id="gpt3-" + df["model"])
    final = df[df["step"] >= 290].groupby(["run_id", "n_params"], as_index=False)["val_loss"]
    runs = final.median().rename(columns={"val_loss": "loss"}).assign(tokens=GPT3_TOKENS)
    binned = df.assign(bin=(np.ceil(df["step"] / 10) * 10).clip(upper=300))
    curves = binned.groupby(["run_id", "n_params", "bin"], as_index=False)["val_loss"].median()
    curves = curves.rename(columns={"val_loss": "loss"}).assign(
        tokens=GPT3_TOKENS, tokens_seen=lambda d: d["bin"] * 1e9
    )
    return Ladder(
        "gpt3",
        "GPT-3 family validation curves (Brown et al. 2020), 8 sizes",
        _runs(runs),
        curves,
        source="brown2020",
    )


OPT_PARAMS = {"125m": 125e6, "1.3b": 1.3e9, "6.7b": 6.7e9, "13b": 13e9, "30b": 30e9, "175b": 175e9}


def opt(data: Path) -> Ladder:
    """OPT perplexity along training (Zhang et al. 2022): loss = ln(perplexity)."""
    df = pd.read_csv(data / "colpret_opt_trajectories.csv")
    df = df.assign(
        run_id="opt-" + df["model_size"],
        n_params=df["model_size"].map(OPT_PARAMS),
        tokens_seen=10.0 ** df["num_token"],
        loss=np.log(df["ppl"]),
    )
    last = df.loc[df.groupby("run_id")["tokens_seen"].idxmax()]
    runs = last.assign(tokens=last["tokens_seen"])[["run_id", "n_params", "tokens", "loss"]]
    curves = df.merge(runs[["run_id", "tokens"]], on="run_id")
    curves = curves[["run_id", "n_params", "tokens", "tokens_seen", "loss"]]
    return Ladder(
        "opt",
        "OPT perplexity along training (Zhang et al. 2022), 6 sizes",
        _runs(runs),
        curves,
        source="zhang2022",
    )


# Porian et al. 2024 IsoFLOP sets: (dataset, setting) -> description. ``tuned_const`` is the
# paper's final configuration (tuned AdamW hyperparameters, short warmup, constant learning
# rate; a run's points at several budgets are read off its one validation-loss curve);
# ``base_cosine`` has base hyperparameters, short warmup and a cosine schedule decayed at each
# budget, so each point is the end of a run.
PORIAN_DATASETS = {"rw": "RefinedWeb", "owt2": "OpenWebText2"}
PORIAN_SETTINGS = {
    "tuned_const": "tuned hyperparameters, constant learning rate",
    "base_cosine": "base hyperparameters, cosine decay to each budget",
}


def porian(data: Path, dataset: str = "rw", setting: str = "tuned_const") -> Ladder:
    """IsoFLOP points of Porian et al. 2024 (arXiv:2406.19146): N counts embeddings and the
    output layer, D = budget / (6 N), loss is the validation loss at the budget."""
    df = pd.read_csv(data / "porian_isoflops.csv")
    df = df[(df["dataset"] == dataset) & (df["setting"] == setting)]
    if df.empty:
        raise KeyError(f"no Porian et al. runs for dataset={dataset!r}, setting={setting!r}")
    return Ladder(
        f"porian-{dataset}-{setting.replace('_', '-')}",
        f"Porian et al. 2024 IsoFLOP sets on {PORIAN_DATASETS[dataset]} "
        f"({PORIAN_SETTINGS[setting]}), {df['budget'].nunique()} budgets, {len(df)} runs",
        _runs(df),
        source="porian2024",
    )


def scalelab_cpu(data: Path) -> Ladder:
    """The project's predictable-scaling ladder on 2 CPU cores and its three targets."""
    df = pd.read_csv(data / "scalelab_predictable_scaling_ladder.csv")
    return Ladder(
        "scalelab-cpu",
        "scalelab's own CPU ladder (python-all, byte level): 37 cells at 1e10-1e11 FLOPs "
        "and its 1e12, 1e13, 1e14 targets",
        _runs(df),
        source="scalelab",
        hindsight=True,
    )


def scalelab_cpu_v2(data: Path) -> Ladder:
    """The second predictable-scaling study's ladder (one shape family, seed means where
    re-run) and its trained targets, with the corpus's unigram entropy: the odds law's L0."""
    df = pd.read_csv(data / "scalelab_v2_ladder.csv")
    n_cells = int((df["kind"] == "ladder").sum())
    targets = ", ".join(f"{c:.0e}" for c in df.loc[df["kind"] == "target", "budget"])
    return Ladder(
        "scalelab-cpu-v2",
        f"scalelab's second CPU ladder (python-all, byte level, 2 layers and 1 head): {n_cells} "
        f"cells at 3e9-1e11 full FLOPs and its targets {targets}",
        _runs(df),
        source="scalelab",
        hindsight=True,
    )


# Every ladder of the benchmark: a loader per ladder, called with the data folder. A new
# ladder is a loader and a line here.
LOADERS: list[Callable[[Path], Ladder]] = [
    chinchilla,
    *(lambda data, n=name: isoflop(data, n) for name in ISOFLOP_SETS),
    datablations,
    gpt3,
    opt,
    *(lambda data, d=d, s=s: porian(data, d, s) for d in PORIAN_DATASETS for s in PORIAN_SETTINGS),
    scalelab_cpu,
    scalelab_cpu_v2,
]


def all_ladders(data: Path) -> list[Ladder]:
    """Every ladder, read from ``data`` (a clone's ``analysis/data``)."""
    if not (data / "PROVENANCE.md").is_file():
        raise ValueError(
            f"{data} holds no benchmark data (no PROVENANCE.md): run from a clone of the "
            "project, or pass --data to its analysis/data folder"
        )
    return [load(data) for load in LOADERS]
