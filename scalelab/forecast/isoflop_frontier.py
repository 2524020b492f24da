"""A ladder's compute frontier from parabolas over its IsoFLOP profiles, not its best cells.

The best single cell of a budget sits a little off the budget's optimum (the size grid is
coarse and each cell's loss carries noise), which scattered the first predictable-scaling
ladder's frontier by about 1% around any smooth law. Hoffmann et al. (2022, Approach 2) fit
a parabola in log N to each IsoFLOP profile; its vertex is the budget's optimum. Here the
parabola is fitted to the ``points`` sizes nearest the profile's best (all of them if fewer),
and a profile whose vertex is not inside them keeps its best cell, flagged ``interior=False``.

Columns in: ``budget``, ``n_params``, ``tokens``, ``compute_full``, ``loss`` (one row per
cell, e.g. ``forecast.cell_table`` with seed means); optionally ``n_params_total`` and
``unigram``. Out: one row per budget with the same columns at the optimum (``n_params``,
``n_params_total`` and ``tokens`` interpolated in log-log between the profile's sizes,
``compute_full`` the budget's mean), ``compute`` = 6·N·D, ``interior`` and ``n_sizes``.
"""

from __future__ import annotations

import math

import numpy as np

from scalelab.forecast.approaches import _profile_minimum
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import compute_6nd

pd = lazy_module("pandas")

POINTS = 5  # sizes around each profile's best that its parabola is fitted to


def _nearest(group: pd.DataFrame, points: int) -> pd.DataFrame:
    """The ``points`` sizes nearest (in rank) the profile's best, as a contiguous run."""
    ordered = group.sort_values("n_params", ignore_index=True)
    best = int(ordered["loss"].idxmin())
    lo = max(0, min(best - points // 2, len(ordered) - points))
    return ordered.iloc[lo : lo + points]


def interpolated_frontier(cells: pd.DataFrame, points: int = POINTS) -> pd.DataFrame:
    """The optimum of every budget's IsoFLOP profile (see the module docstring)."""
    rows = []
    for budget, group in cells.groupby("budget", sort=True):
        near = _nearest(group, points)
        log_n = np.log(near["n_params"].to_numpy(dtype=float))
        found = _profile_minimum(log_n, near["loss"].to_numpy(dtype=float), "parabola")
        best = near.loc[near["loss"].idxmin()]
        row = {
            "budget": float(budget),
            "compute_full": float(group["compute_full"].mean()),
            "n_sizes": int(len(near)),
            "interior": found is not None,
        }
        if found is None:
            row |= {c: float(best[c]) for c in ("n_params", "tokens", "loss")}
            if "n_params_total" in near:
                row["n_params_total"] = float(best["n_params_total"])
        else:
            x, loss, _ = found
            row |= {"n_params": math.exp(x), "loss": loss}
            for column in ("tokens", "n_params_total"):
                if column in near:
                    values = np.log(near[column].to_numpy(dtype=float))
                    row[column] = float(np.exp(np.interp(x, log_n, values)))
        if "unigram" in group:
            row["unigram"] = float(group["unigram"].iloc[0])
        rows.append(row)
    out = pd.DataFrame(rows)
    out["compute"] = compute_6nd(out["n_params"], out["tokens"])
    return out


def scatter(frontier: pd.DataFrame, predicted: np.ndarray) -> float:
    """Root mean square of the frontier's relative deviations from a law's ``predicted``."""
    return float(np.sqrt(np.mean(np.log(frontier["loss"].to_numpy() / predicted) ** 2)))
