"""Loading runs: from CSV, from MLflow, and the Epoch AI reconstruction of Chinchilla's runs.

Each loader returns a DataFrame in the project vocabulary (``n_params``, ``tokens``,
``compute``, ``loss``, ...). MLflow is imported inside :func:`load_runs_mlflow` only, so that
``import scalelab.analysis`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from scalelab.analysis.runs import with_derived_columns

PathLike = str | os.PathLike[str]

NUMERIC_PARAMS = ("n_params", "n_params_total", "tokens", "compute")
RUN_TAGS = ("sweep", "cell", "trial", "corpus", "tokenizer")


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


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def load_runs_mlflow(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    history: bool = False,
    loss_metric: str = "loss",
) -> pd.DataFrame:
    """Runs of an MLflow experiment, one row per run (or per logged step with ``history``).

    Reads params ``n_params``, ``n_params_total``, ``tokens``, ``compute``, the metric
    ``loss`` and the tags ``sweep``, ``cell``, ``trial``, ``corpus``, ``tokenizer``. Runs
    without the loss metric (e.g. the parent run of a sweep) are left out. With
    ``history=True`` every logged value of the loss becomes a row with its ``step`` and,
    when the run logged a ``tokens_seen`` metric at that step, ``tokens_seen``.
    """
    from mlflow.tracking import MlflowClient  # lazy: keep mlflow off the import path

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(
            f"no MLflow experiment named {experiment!r} at "
            f"{tracking_uri or 'the default tracking URI'}"
        )
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        for run in page:
            metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
            if loss_metric not in metrics:
                continue
            base: dict[str, Any] = {"run_id": run.info.run_id}
            base |= {p: _float(params[p]) for p in NUMERIC_PARAMS if p in params}
            base |= {t: tags[t] for t in RUN_TAGS if t in tags}
            if not history:
                rows.append(base | {"loss": float(metrics[loss_metric])})
                continue
            seen = {
                m.step: m.value for m in client.get_metric_history(run.info.run_id, "tokens_seen")
            }
            for m in client.get_metric_history(run.info.run_id, loss_metric):
                row = base | {"step": m.step, "loss": m.value}
                if m.step in seen:
                    row["tokens_seen"] = seen[m.step]
                rows.append(row)
        token = page.token
        if not token:
            break
    if not rows:
        raise ValueError(f"experiment {experiment!r} has no run with a {loss_metric!r} metric")
    df = pd.DataFrame(rows)
    if history:
        df = df.sort_values(["run_id", "step"], ignore_index=True)
    return with_derived_columns(df)
