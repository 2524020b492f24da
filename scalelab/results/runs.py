"""Training runs as tables: one reader for MLflow and CSV, one alignment of validation curves.

A :class:`RunTable` holds the runs of one source in the shared vocabulary (``scalelab.vocab``):
final losses, one row per run, and, when known, the validation curves, one row per
checkpoint. Every caller that reads runs (``scalelab fit``, a sweep's end-of-run fit,
dashboards, the predictable-scaling study) reads them here, so they all see the same rows:

- :func:`mlflow_runs`: every run of an experiment with a final ``loss``, its numeric params
  (sizes, budget, hyper-parameters), tags and the corpus's unigram entropy;
- :func:`best_per_cell`: the best trial of each sweep cell, the points a law is fitted to
  (runs that belong to no cell pass through);
- :func:`validation_curves`: ``val/loss`` at the tokens seen when it was measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scalelab.forecast.forms import checkpoint_points
from scalelab.forecast.io import load_epoch_chinchilla, load_runs_csv
from scalelab.lazy_imports import lazy_module
from scalelab.results.row_filter import apply_filter
from scalelab.vocab import (
    BUDGET,
    BUDGET_KIND,
    COMPUTE,
    EVAL_METRIC_PREFIXES,
    LOSS,
    N_PARAMS,
    NUMERIC_PARAMS,
    RUN_ID,
    RUN_TAGS,
    STEP,
    TOKENS,
    TOKENS_SEEN,
    UNIGRAM,
    VAL_LOSS,
    compute_6nd,
)
from scalelab.workspace import Workspace

pd = lazy_module("pandas")

CsvFormat = Literal["runs", "epoch_chinchilla"]
# Hyper-parameters and shapes a training run logs, read back as numbers.
HYPER_PARAMS = ("lr", "warmup", "batch_size", "context", "d_model", "n_layer", "seed")
# Tags beyond the vocabulary's that say what a run is.
STATE_TAGS = ("kind", "trial_state", "stage")


@dataclass(frozen=True)
class RunTable:
    """The runs of one source: final losses (one row per run) and, when known, their curves.

    ``curves`` has one row per validation checkpoint: ``run_id``, ``n_params``, ``tokens`` (the
    run's budget), ``tokens_seen``, ``compute`` (6·N·tokens_seen) and ``loss``.
    """

    source: str
    runs: pd.DataFrame
    curves: pd.DataFrame | None = None

    def fingerprint(self, exclude_before: float | None = None) -> str:
        """SHA-256 of the data a fit reads (the curves too when checkpoints are fitted)."""
        digest = hashlib.sha256()
        frames = [self.runs] if exclude_before is None else [self.runs, self.curves]
        for frame in frames:
            if frame is None:
                continue
            cols = [
                c
                for c in (RUN_ID, N_PARAMS, TOKENS, TOKENS_SEEN, COMPUTE, LOSS)
                if c in frame.columns
            ]
            table = frame[cols].sort_values(cols, ignore_index=True)
            digest.update(table.to_csv(index=False, float_format="%.12g").encode())
        return digest.hexdigest()

    def select(self, corpus: str | None = None, tokenizer: str | None = None) -> RunTable:
        """Keep the runs of one corpus and tokenizer; refuse a mix when none is chosen.

        Losses are comparable only between runs on the same corpus with the same tokenizer.
        """
        runs = self.runs
        for column, wanted in (("corpus", corpus), ("tokenizer", tokenizer)):
            if wanted is None:
                continue
            if column not in runs.columns:
                raise ValueError(
                    f"--{column} given but the runs of {self.source} have no {column} tag"
                )
            runs = runs[runs[column] == wanted]
            if runs.empty:
                raise ValueError(f"no run of {self.source} has {column} {wanted!r}")
        present = [c for c in ("corpus", "tokenizer") if c in runs.columns]
        if present:
            pairs = runs[present].drop_duplicates().dropna()
            if len(pairs) > 1:
                listed = "; ".join(
                    ", ".join(f"{c}={row[c]}" for c in present)
                    for _, row in pairs.head(4).iterrows()
                )
                raise ValueError(
                    f"{self.source} mixes {len(pairs)} corpus/tokenizer pairs "
                    f"({listed}); losses compare only within one: choose with "
                    "--corpus and --tokenizer"
                )
        curves = self.curves
        if curves is not None and RUN_ID in runs.columns:
            curves = curves[curves[RUN_ID].isin(runs[RUN_ID])].reset_index(drop=True)
        return RunTable(self.source, runs.reset_index(drop=True), curves)

    def fit_points(self, exclude_before: float | None = None) -> pd.DataFrame:
        """The rows a law of every run is fitted to: final losses, or with
        ``exclude_before = f`` the checkpoints past the fraction ``f`` of each run's tokens
        (``scalelab.forecast.forms.checkpoint_points``)."""
        if exclude_before is None:
            return self.runs
        return checkpoint_points(self.runs, self.curves, exclude_before, source=self.source)


# ---- CSV ----------------------------------------------------------------------------------------
def _curves_from_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise a checkpoint table: ``tokens_seen`` (from ``step`` if needed) and ``tokens``."""
    df = df.copy()
    if TOKENS_SEEN not in df.columns:
        if TOKENS not in df.columns:
            raise ValueError("a table of checkpoints needs 'tokens_seen', or 'step' and 'tokens'")
        last = df.groupby(RUN_ID)[STEP].transform("max")
        df[TOKENS_SEEN] = df[TOKENS] * df[STEP] / last
    final_seen = df.groupby(RUN_ID)[TOKENS_SEEN].transform("max")
    if TOKENS not in df.columns:
        df[TOKENS] = final_seen
    df[TOKENS] = df[TOKENS].fillna(final_seen)
    df[COMPUTE] = compute_6nd(df[N_PARAMS], df[TOKENS_SEEN])
    return df.sort_values([RUN_ID, TOKENS_SEEN], ignore_index=True)


def read_csv_table(
    path: str | os.PathLike[str],
    *,
    format: CsvFormat = "runs",
    rename: dict[str, str] | None = None,
    query: str | None = None,
) -> RunTable:
    """Runs from a CSV file in the project vocabulary (or Epoch AI's Chinchilla table).

    ``rename`` maps the file's columns to the vocabulary and ``query`` selects rows with the
    parsed filter language of :mod:`scalelab.results.row_filter` (never evaluated Python). A
    file with ``run_id`` and ``step`` or ``tokens_seen`` columns holds training curves: each
    run's last checkpoint is its final loss.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no CSV file {path}")
    if format not in ("runs", "epoch_chinchilla"):
        raise ValueError(f"CSV format must be 'runs' or 'epoch_chinchilla'; got {format!r}")
    try:
        if format == "epoch_chinchilla":
            df = load_epoch_chinchilla(path)
        else:
            df = load_runs_csv(path, rename=rename)
    except UnicodeDecodeError as err:  # a binary file or another encoding
        raise ValueError(f"{path}: not a UTF-8 text CSV (byte {err.start}: {err.reason})") from None
    except ValueError as err:  # pandas' empty-file and parser errors name no file
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(message if str(path) in message else f"{path}: {message}") from None
    if query:
        try:
            df = apply_filter(df, query)
        except (ValueError, TypeError) as err:  # TypeError: comparing text with a number
            raise ValueError(f"{path}: bad query {query!r}: {err}") from err
        if df.empty:
            raise ValueError(f"{path}: no row matches {query!r}")
    df = df.reset_index(drop=True)
    is_curves = RUN_ID in df.columns and ({STEP, TOKENS_SEEN} & set(df.columns))
    if not is_curves:
        return RunTable(str(path), df)
    curves = _curves_from_rows(df)
    last = curves.groupby(RUN_ID)[TOKENS_SEEN].idxmax()
    runs = curves.loc[last].drop(columns=[c for c in (STEP, TOKENS_SEEN) if c in curves])
    runs = runs.assign(compute=compute_6nd(runs[N_PARAMS], runs[TOKENS]))
    return RunTable(str(path), runs.reset_index(drop=True), curves)


# ---- MLflow -------------------------------------------------------------------------------------
def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ``name: number`` of a baselines tag written before it was JSON (``str(dict)``).
_OLD_BASELINE = re.compile(r"'(\w+)':\s*([-+0-9.eE]+|nan|inf)")


def _unigram(tags: dict[str, str]) -> float:
    """The corpus's unigram entropy from the run's ``corpus_baselines`` tag: JSON, or the
    ``{'unigram': 3.2, ...}`` of older runs, read by a pattern. A tag is data from a store,
    so it is parsed, never evaluated."""
    text = tags.get("corpus_baselines", "{}")
    try:
        baselines = json.loads(text)
    except ValueError:
        baselines = dict(_OLD_BASELINE.findall(text))
    return _float(baselines.get("unigram")) if isinstance(baselines, dict) else math.nan


def _budget(params: dict[str, str], tags: dict[str, str]) -> tuple[float, str | None]:
    """A sweep trial's budget: the ``budget`` params, or (stores from before they were logged)
    the cell label's budget part, e.g. ``N1e4-C1e10`` -> (1e10, compute)."""
    if BUDGET in params:
        return _float(params[BUDGET]), params.get(BUDGET_KIND)
    parts = tags.get("cell", "").split("-")
    kinds = {"C": "compute", "D": "tokens", "r": "tokens_per_param", "S": "steps"}
    if len(parts) >= 2 and parts[1][:1] in kinds:
        return _float(parts[1][1:]), kinds[parts[1][:1]]
    return math.nan, None


def _run_row(run: Any) -> dict[str, Any]:
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    row: dict[str, Any] = {RUN_ID: run.info.run_id}
    row |= {p: _float(params[p]) for p in NUMERIC_PARAMS + HYPER_PARAMS if p in params}
    row |= {t: tags[t] for t in RUN_TAGS + STATE_TAGS if t in tags}
    budget, kind = _budget(params, tags)
    if kind is not None:
        row |= {BUDGET: budget, BUDGET_KIND: kind}
    row[UNIGRAM] = _unigram(tags)
    row[LOSS] = float(metrics[LOSS])
    row |= {k: v for k, v in metrics.items() if k.startswith(EVAL_METRIC_PREFIXES)}
    if run.info.end_time and run.info.start_time:
        row["seconds"] = (run.info.end_time - run.info.start_time) / 1000
    return row


def mlflow_runs(
    experiment: str,
    workspace: Workspace,
    *,
    sweeps: Sequence[str] | None = None,
    completed: bool = False,
    filter_string: str = "",
) -> pd.DataFrame:
    """Every run of ``experiment`` with a final ``loss``, one row each (see the module doc).

    ``sweeps`` keeps the trials of those sweeps; ``completed`` keeps sweep trials whose
    ``trial_state`` is COMPLETE. Runs without a loss (a sweep's parent, fits, forecasts) are
    left out. Raises ``ValueError`` when the experiment or its runs are missing.
    """
    from scalelab.results import tracking

    client = tracking.client(workspace)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} at {workspace.tracking_uri}")
    rows, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string, max_results=1000, page_token=token
        )
        rows += [_run_row(run) for run in page if LOSS in run.data.metrics]
        token = page.token
        if not token:
            break
    runs = pd.DataFrame(rows)
    if sweeps is not None and len(runs):
        runs = runs[runs.get("sweep", pd.Series(index=runs.index)).isin(list(sweeps))]
    if completed and len(runs):
        runs = runs[runs.get("trial_state", pd.Series(index=runs.index)) == "COMPLETE"]
    if runs.empty:
        which = f" of sweeps {list(sweeps)}" if sweeps is not None else ""
        raise ValueError(f"experiment {experiment!r} has no run{which} with a {LOSS!r} metric")
    from scalelab.forecast.runs import with_derived_columns

    return with_derived_columns(runs.reset_index(drop=True))


def best_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """The lowest-loss run of each sweep cell (as a sweep's Optuna study ranks its trials);
    runs outside any cell are kept as they are."""
    if "cell" not in runs.columns:
        return runs
    in_cell = runs["cell"].notna()
    keys = ["sweep", "cell"] if "sweep" in runs.columns else ["cell"]
    cells = runs[in_cell]
    best = cells.loc[cells.groupby(keys, dropna=False)[LOSS].idxmin()]
    return pd.concat([best, runs[~in_cell]]).sort_index().reset_index(drop=True)


def _tokens_at_steps(
    val_steps: np.ndarray, seen: list[tuple[int, float]], tokens: float
) -> np.ndarray:
    """Tokens seen at the validation steps, from the ``tokens_seen`` history.

    Training logs ``tokens_seen`` every few steps, not at the validation steps, and the tokens
    per step are constant, so a straight line through the history gives it at any step
    (whatever step Lightning stamps a validation with). A run's last validation, logged after
    training, is clipped to its budget.
    """
    steps = np.array([s for s, _ in seen], dtype=float)
    values = np.array([v for _, v in seen], dtype=float)
    if len(np.unique(steps)) >= 2:
        slope, intercept = np.polyfit(steps, values, 1)
        out = intercept + slope * val_steps
    elif len(steps) == 1 and steps[0] > 0:
        out = values[0] * val_steps / steps[0]
    else:
        out = tokens * val_steps / max(float(val_steps.max()), 1.0)
    return np.clip(out, 0.0, tokens)


def validation_curves(runs: pd.DataFrame, workspace: Workspace) -> pd.DataFrame:
    """The ``val/loss`` history of each run of ``runs`` (``run_id``, ``n_params``,
    ``tokens``), one row per validation: ``step``, ``tokens_seen``, ``fraction`` of the
    run's tokens, ``compute`` (6·N·tokens_seen) and ``loss``. Checkpoints at 0 tokens and
    runs without a curve are left out."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    rows = []
    for run in runs.itertuples(index=False):
        history = client.get_metric_history(run.run_id, VAL_LOSS)
        if not history:
            continue
        seen = [(m.step, m.value) for m in client.get_metric_history(run.run_id, TOKENS_SEEN)]
        steps = np.array([m.step for m in history], dtype=float)
        tokens_seen = _tokens_at_steps(steps, seen, float(run.tokens))
        rows += [
            {
                RUN_ID: run.run_id,
                N_PARAMS: run.n_params,
                TOKENS: run.tokens,
                STEP: m.step,
                TOKENS_SEEN: t,
                LOSS: m.value,
            }
            for m, t in zip(history, tokens_seen, strict=True)
        ]
    columns = [RUN_ID, N_PARAMS, TOKENS, STEP, TOKENS_SEEN, LOSS]
    table = pd.DataFrame(rows, columns=columns)
    table = table[table[TOKENS_SEEN] > 0]
    table = table.assign(
        fraction=table[TOKENS_SEEN] / table[TOKENS],
        compute=compute_6nd(table[N_PARAMS], table[TOKENS_SEEN]),
    )
    return table.sort_values([RUN_ID, STEP], ignore_index=True)


def read_mlflow_table(
    experiment: str,
    workspace: Workspace,
    *,
    curves: bool = False,
    best_of_cell: bool = False,
    sweeps: Sequence[str] | None = None,
) -> RunTable:
    """The runs of an MLflow experiment (runs with a final ``loss``), only the best trial of
    each sweep cell with ``best_of_cell``, with their ``val/loss`` curves when ``curves``."""
    runs = mlflow_runs(experiment, workspace, sweeps=sweeps)
    if best_of_cell:
        runs = best_per_cell(runs)
    table = validation_curves(runs, workspace) if curves else None
    if table is not None and table.empty:
        table = None
    return RunTable(f"experiment {experiment}", runs, table)
