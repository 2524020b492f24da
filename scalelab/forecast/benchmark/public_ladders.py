"""Public ladders added to the forecasting benchmark for its long forecasts (up to 1000x), read
from a data folder (a clone's ``analysis/data/``; provenance in ``analysis/data/PROVENANCE.md``).

Each loader returns a :class:`Ladder` of final losses in the project's vocabulary. Ladders of
one paper share its ``source``, so the benchmark holds them out together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from scalelab.forecast.benchmark.ladders import Ladder, _runs

# Gadre et al. 2024, "Language models scale reliably with over-training and on downstream
# tasks" (arXiv:2403.08540): 104 OpenLM models, 11M-6.9B parameters, each trained once to its
# token budget on one of three corpora, at 0.25x-32x the Chinchilla-optimal 20 tokens per
# parameter. dataset_name -> (ladder name, corpus).
GADRE_DATASETS = {
    "c4_original": ("gadre-c4", "C4"),
    "rpj": ("gadre-rpj", "RedPajama"),
    "rw_original": ("gadre-rw", "RefinedWeb"),
}
GADRE_FILE = "mlfoundations_scaling_models.csv"


def _gadre(data: Path, dataset: str) -> Ladder:
    """N counts embeddings (the authors' ``params``); the loss is the paper's default one, on
    its C4 evaluation set, whatever the training corpus (as the authors' fits use it)."""
    name, corpus = GADRE_DATASETS[dataset]
    df = pd.read_csv(data / GADRE_FILE)
    df = df[df["dataset_name"] == dataset]
    df = df.rename(
        columns={"name": "run_id", "N": "n_params", "D": "tokens", "loss_c4_val": "loss"}
    )
    # floats: the file's integer N·D overflows int64 for the 7B run
    df = df.astype({"n_params": float, "tokens": float})
    sizes = df["n_params"].nunique()
    return Ladder(
        name,
        f"Gadre et al. 2024 OpenLM runs on {corpus} ({sizes} sizes, 0.25x-32x Chinchilla "
        f"tokens), C4 evaluation loss, {len(df)} runs",
        _runs(df),
        source="gadre2024",
    )


def gadre_c4(data: Path) -> Ladder:
    return _gadre(data, "c4_original")


def gadre_rpj(data: Path) -> Ladder:
    return _gadre(data, "rpj")


def gadre_rw(data: Path) -> Ladder:
    return _gadre(data, "rw_original")


# The public ladders of this module: a loader per ladder, called with the data folder.
PUBLIC_LOADERS: list[Callable[[Path], Ladder]] = [gadre_c4, gadre_rpj, gadre_rw]
