"""Whether the fitted runs support an answer: checks a law's prediction must pass to be printed
as an answer rather than flagged.

A fitted law can answer what its runs contradict: with two token budgets a Chinchilla fit may
put β at its bound and predict that a 1e9-parameter model trained on 2e10 tokens ends worse
than a 4.6e5-parameter run already did, or that the compute-optimal model at 1e21 FLOPs has
4.6e12 parameters and 3.7e7 tokens. Such answers are flagged in the text and JSON output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# Compute-optimal tokens per parameter outside this range is outside every published ladder
# (Chinchilla ~20; Kaplan et al.'s fits ~1 at their largest budgets; over-trained recipes are
# not compute-optimal) and signals an allocation the runs do not identify.
TOKENS_PER_PARAM_RANGE = (0.5, 2000.0)
# A prediction counts as worse than a run only by more than this many residual SDs (log).
NOISE_SDS = 2.0
# Cells kept as the frontier; a table with more distinct (N, D) cells is not checked.
MAX_CELLS = 20_000


def undominated_runs(points: pd.DataFrame) -> list[list[float]] | None:
    """[N, D, C, loss] of the runs no other run beats with at most its N and D (or at most its
    C when N and D are unknown): the losses a larger model must not predict worse than."""
    both = "n_params" in points and "tokens" in points
    keys = ["n_params", "tokens"] if both else ["compute"]
    if "compute" not in points:
        return None
    extra = {"compute": ("compute", "min")} if keys != ["compute"] else {}
    cells = points.groupby(keys, as_index=False).agg(loss=("loss", "min"), **extra)
    if len(cells) > MAX_CELLS:
        return None
    cells = cells.sort_values("loss", kind="stable")
    coords = cells[keys].to_numpy(float)
    kept: list[int] = []
    for i, row in enumerate(coords):
        # Sorted by loss: a point is dominated iff a kept (lower-loss) point is no larger.
        if kept and np.any(np.all(coords[kept] <= row, axis=1)):
            continue
        kept.append(i)
    front = cells.iloc[kept]
    n = front["n_params"] if "n_params" in front else np.full(len(front), math.nan)
    d = front["tokens"] if "tokens" in front else np.full(len(front), math.nan)
    return [
        [float(a), float(b), float(c), float(loss)]
        for a, b, c, loss in zip(n, d, front["compute"], front["loss"], strict=True)
    ]


def beaten_by_a_run(
    runs: list[list[float]] | None,
    loss: float,
    *,
    rmse: float,
    n_params: float | None = None,
    tokens: float | None = None,
    compute: float | None = None,
) -> str | None:
    """Why a predicted ``loss`` contradicts a fitted run with fewer resources, or None.

    With N and D given, a run with at most both counts; with C alone (a compute-optimal model),
    a run with at most that compute. Only a gap beyond the fit's noise counts.
    """
    if not runs or not math.isfinite(loss):
        return None
    margin = NOISE_SDS * (rmse if math.isfinite(rmse) else 0.0) + 0.005
    for n, d, c, achieved in runs:
        if n_params is not None and tokens is not None:
            if not (n <= n_params and d <= tokens):
                continue
            where = f"N={n:.3g}, D={d:.3g}"
        elif compute is not None:
            if not c <= compute:
                continue
            where = f"C={c:.3g}"
        else:
            return None
        if math.log(loss) - math.log(achieved) > margin:
            return (
                f"the law predicts loss {loss:.4g}, worse than the {achieved:.4g} a fitted run "
                f"already reached with less ({where}); the fit does not identify the law here"
            )
    return None


def absurd_allocation(n_opt: float, tokens_opt: float, a: float, b: float) -> str | None:
    """Why a compute-optimal N and D cannot be an answer, or None."""
    if not (0 < a < 1 and 0 < b < 1):
        return (
            f"the allocation exponents (a={a:.3g}, b={b:.3g}) leave (0, 1): N_opt or D_opt "
            "would shrink as compute grows; the runs do not identify the N/D split"
        )
    ratio = tokens_opt / n_opt
    lo, hi = TOKENS_PER_PARAM_RANGE
    if not lo <= ratio <= hi:
        return (
            f"the allocation puts {ratio:.3g} tokens per parameter, outside the {lo:g} to "
            f"{hi:g} of published compute-optimal ladders; the runs do not identify the "
            "N/D split (add token budgets)"
        )
    return None
