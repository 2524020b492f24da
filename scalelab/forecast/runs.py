"""The table of runs every analysis reads, and its validation.

Columns use the project vocabulary: ``n_params`` (N), ``tokens`` (D), ``compute`` (C FLOPs),
``loss`` (final validation loss, nats/token), and optionally ``run_id``, ``group``/``cell``
(e.g. an IsoFLOP budget), ``step`` and ``tokens_seen`` for intermediate checkpoints.
``compute`` defaults to 6·N·D (Kaplan et al. 2020, Sec. 2.1) and ``tokens`` to C/(6·N).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from scalelab.lazy_imports import lazy_module
from scalelab.vocab import FLOPS_PER_PARAM_TOKEN

pd = lazy_module("pandas")

RUN_COLUMNS: tuple[str, ...] = ("n_params", "tokens", "compute", "loss")
CHECKPOINT_COLUMNS: tuple[str, ...] = ("run_id", "step", "tokens_seen")


def with_derived_columns(data: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``compute`` = 6·N·D or ``tokens`` = C/(6·N) filled in when absent."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame; got {type(data).__name__}")
    df = data.copy()
    cols = set(df.columns)
    if "compute" not in cols and {"n_params", "tokens"} <= cols:
        df["compute"] = FLOPS_PER_PARAM_TOKEN * _numeric(df, "n_params") * _numeric(df, "tokens")
    elif "tokens" not in cols and {"n_params", "compute"} <= cols:
        df["tokens"] = _numeric(df, "compute") / (FLOPS_PER_PARAM_TOKEN * _numeric(df, "n_params"))
    return df


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    try:
        return pd.to_numeric(df[column]).astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column '{column}' is not numeric: {err}") from err


def prepare_runs(
    data: pd.DataFrame, require: Iterable[str], *, min_rows: int = 1, context: str = "the fit"
) -> pd.DataFrame:
    """Validate ``data`` for an analysis reading the columns ``require`` (plus ``loss``).

    Returns a copy with derived columns and float dtypes. Raises ``ValueError`` naming the
    problem for: a missing column, a non-numeric, non-finite or non-positive value, duplicate
    rows, or fewer than ``min_rows`` rows.
    """
    df = with_derived_columns(data)
    needed = list(dict.fromkeys([*require, "loss"]))
    if df.empty:
        raise ValueError(f"no runs given to {context}")
    for column in needed:
        if column not in df.columns:
            raise ValueError(
                f"runs have no '{column}' column, needed by {context} "
                f"(columns: {', '.join(map(str, df.columns))})"
            )
        values = _numeric(df, column)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            idx = values.index[bad][0]
            raise ValueError(
                f"column '{column}' has {int(bad.sum())} non-finite value(s) "
                f"(first at index {idx}: {values[idx]})"
            )
        bad = values.to_numpy() <= 0
        if bad.any():
            idx = values.index[bad][0]
            raise ValueError(
                f"column '{column}' has {int(bad.sum())} non-positive value(s) "
                f"(first at index {idx}: {values[idx]}); every {column} must be > 0"
            )
        df[column] = values
    keys = needed + [c for c in CHECKPOINT_COLUMNS if c in df.columns and c not in needed]
    dup = df.duplicated(subset=keys, keep=False)
    if dup.any():
        # The first row with a twin, and that twin (not merely the first two flagged rows,
        # which may belong to different pairs).
        repeats = df.duplicated(subset=keys, keep="first")
        twin = df.index[repeats][0]
        same = (df.loc[dup, keys] == df.loc[twin, keys]).all(axis=1)
        first = [df.loc[dup].index[same.to_numpy()][0], twin]
        raise ValueError(
            f"{int(dup.sum())} duplicate rows (identical {', '.join(keys)}), e.g. index "
            f"{first[0]} and {first[1]}; drop them (DataFrame.drop_duplicates) or give each run "
            "its own run_id"
        )
    if len(df) < min_rows:
        raise ValueError(f"{context} needs at least {min_rows} runs; got {len(df)}")
    return df


def resample_units(df: pd.DataFrame) -> tuple[np.ndarray, int, str]:
    """The bootstrap unit of each row: its run (``run_id``) when present, else the row.

    Returns (unit index per row, number of units, unit name). Resampling whole runs keeps the
    intermediate checkpoints of one run together, since they are not independent draws.
    """
    if "run_id" in df.columns:
        codes, uniques = pd.factorize(df["run_id"], use_na_sentinel=False)
        return codes.astype(np.int64), len(uniques), "run_id"
    return np.arange(len(df), dtype=np.int64), len(df), "row"
