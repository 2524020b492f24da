"""Loading runs from CSV files, and the Epoch AI reconstruction of Chinchilla's runs.

Each loader returns a DataFrame in the project vocabulary (``n_params``, ``tokens``,
``compute``, ``loss``, ...). Tracked runs are read by ``scalelab.results.runs``:
this package reads tables only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from scalelab.forecast.runs import with_derived_columns
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

PathLike = str | os.PathLike[str]


def load_runs_csv(path: PathLike, *, rename: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Runs from a CSV file; ``rename`` maps the file's column names to the vocabulary.

    ``compute`` is derived as 6·N·D (or ``tokens`` as C/(6·N)) when absent.
    """
    df = pd.read_csv(path)
    if rename:
        missing = [c for c in rename if c not in df.columns]
        if missing:
            raise ValueError(
                f"{path}: no column(s) {missing} to rename (columns: {', '.join(df.columns)})"
            )
        df = df.rename(columns=dict(rename))
    if "loss" not in df.columns:
        raise ValueError(f"{path}: no 'loss' column (columns: {', '.join(df.columns)})")
    return with_derived_columns(df)


def load_epoch_chinchilla(path: PathLike, *, drop_highest: int = 5) -> pd.DataFrame:
    """The 245 Chinchilla runs reconstructed by Epoch AI (Besiroglu et al. 2024).

    Reads ``svg_extracted_data.csv`` of ``epoch-research/analyzing-chinchilla``: ``Model Size``
    is N, ``Training FLOP`` is C, and D = C/(6·N). Like Epoch, drops the runs whose loss is at
    or above the ``drop_highest``-th largest (the 5 highest, leaving 240).
    """
    df = load_runs_csv(path, rename={"Model Size": "n_params", "Training FLOP": "compute"})
    if drop_highest:
        threshold = df["loss"].nlargest(drop_highest).min()
        df = df[df["loss"] < threshold]
    df = df[["n_params", "tokens", "compute", "loss"]].reset_index(drop=True)
    df.insert(0, "run_id", [f"chinchilla-{i:03d}" for i in range(len(df))])
    return df
