"""Forecast a large run from a ladder of small ones: pick the law by backtest, size the
interval by how that law extrapolated, and predict the whole loss curve.

The GPT-4 technical report predicted a final loss from runs with at most 1/1,000 of the
compute. Which law and which fit range extrapolate well is an empirical question of the
ladder at hand, so it is settled here by backtesting inside the ladder, never by looking at
the target:

1. ``cell_table(runs)``: the best trial of each (size, budget) cell.
2. ``select_law(cells)``: every candidate (a law, the points it is fitted to and how far down
   the ladder it starts) is fitted without the largest budget and scored by its error on the
   best run of that budget. The winner is refitted on the whole ladder.
3. ``forecast(cells, target)``: the winner's prediction for the target run, with a bootstrap
   interval widened by the candidate's own backtest error per decade of extrapolation: a
   nominal interval that ignores error in the law's form under-covers when extrapolating.
4. ``curve_shape`` / ``predict_curve``: loss curves of compute-optimal runs with one schedule
   collapse once normalised by their final loss (Qiu et al. 2025, "Scaling collapse"):
   ``(L(f·D) − E) / (L(D) − E)`` depends on the fraction ``f`` of training only, so the
   ladder's frontier runs give the target's curve from its predicted final loss.

Columns: ``n_params`` (non-embedding), ``n_params_total``, ``tokens``, ``compute`` (6·N·D),
``compute_full`` (the full training FLOPs, attention and unembedding included), ``budget``
(the nominal compute budget of the cell), ``loss``; optionally ``unigram``, the corpus's
unigram entropy, the plateau the smallest models start from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from scalelab.analysis.bootstrap import bootstrap
from scalelab.analysis.fit import fit_law
from scalelab.analysis.laws import Chinchilla, Law, PlateauLaw, PowerLaw

Points = Literal["frontier", "cells"]
LEVEL = 0.9
Z_LEVEL = 1.6448536269514722  # two-sided 90% normal quantile


@dataclass(frozen=True)
class Candidate:
    """A law, the points it is fitted to, and which inputs it reads.

    ``frontier`` fits the best run of each budget against ``compute_column`` (the GPT-4
    report's form); ``cells`` fits every cell's best trial in N and D, with N read from
    ``n_column`` (Kaplan's non-embedding count or the total, as Chinchilla counts).
    ``skip`` leaves out that many of the smallest budgets, whose runs may be pre-asymptotic.
    """

    name: str
    law: Law
    points: Points
    compute_column: str = "compute_full"
    n_column: str = "n_params"
    skip: int = 0

    def data(self, cells: pd.DataFrame) -> pd.DataFrame:
        budgets = sorted(cells["budget"].unique())[self.skip :]
        kept = cells[cells["budget"].isin(budgets)]
        if self.points == "frontier":
            best = kept.loc[kept.groupby("budget")["loss"].idxmin()]
            return pd.DataFrame({"compute": best[self.compute_column], "loss": best["loss"]})
        return pd.DataFrame(
            {"n_params": kept[self.n_column], "tokens": kept["tokens"], "loss": kept["loss"]}
        )

    def inputs(self, run: Mapping[str, Any]) -> dict[str, float]:
        if self.points == "frontier":
            return {"compute": float(run[self.compute_column])}
        return {"n_params": float(run[self.n_column]), "tokens": float(run["tokens"])}

    def min_budgets(self) -> int:
        return len(self.law.param_names) if self.points == "frontier" else 2


def candidates(n_budgets: int, plateau: float | None = None) -> list[Candidate]:
    """The laws tried, each from the full ladder and without its smallest budget(s).

    ``plateau``, the corpus's unigram entropy, adds the plateau law (``PlateauLaw``).
    """
    base = [
        Candidate(
            "L(C) = E + A·C^-α, best run per budget", PowerLaw(variable="compute"), "frontier"
        ),
        Candidate(
            "L(C) = A·C^-α, best run per budget",
            PowerLaw(variable="compute", irreducible=False),
            "frontier",
        ),
        Candidate("Chinchilla L(N, D), N non-embedding", Chinchilla(), "cells"),
        Candidate("Chinchilla L(N, D), N total", Chinchilla(), "cells", n_column="n_params_total"),
    ]
    if plateau is not None:
        base += [
            Candidate(
                "L(C) = E + (L0 − E)/(1 + (C/C0)^α), L0 = unigram entropy, best run per budget",
                PlateauLaw(plateau=plateau),
                "frontier",
            ),
            Candidate(
                "L(C) = L0/(1 + (C/C0)^α), L0 = unigram entropy, best run per budget",
                PlateauLaw(plateau=plateau, irreducible=False),
                "frontier",
            ),
        ]
    out = []
    for skip in range(n_budgets):
        for c in base:
            # The backtest holds out the largest budget, so the fit needs enough budgets
            # below it.
            if n_budgets - 1 - skip >= c.min_budgets():
                out.append(Candidate(c.name, c.law, c.points, c.compute_column, c.n_column, skip))
    return out


NAIVE = Candidate(
    "naive: L(C) = E + A·C^-α on 6·N·D, best run per budget",
    PowerLaw(variable="compute"),
    "frontier",
    compute_column="compute",
)


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The best completed trial of each cell (``cell`` column), sorted by budget then N."""
    need = {"cell", "budget", "n_params", "n_params_total", "tokens", "compute_full", "loss"}
    missing = sorted(need - set(runs.columns))
    if missing:
        raise ValueError(f"ladder runs lack columns {missing}")
    ok = runs[np.isfinite(runs["loss"].astype(float))]
    if ok.empty:
        raise ValueError("no ladder run has a finite loss")
    best = ok.loc[ok.groupby("cell")["loss"].idxmin()].copy()
    best["compute"] = 6.0 * best["n_params"] * best["tokens"]
    return best.sort_values(["budget", "n_params"], ignore_index=True)


def frontier(cells: pd.DataFrame) -> pd.DataFrame:
    """The best cell of each budget."""
    return cells.loc[cells.groupby("budget")["loss"].idxmin()].sort_values("budget")


def edge_budgets(cells: pd.DataFrame) -> dict[float, str]:
    """Budgets whose best size is the smallest or largest tried: ``{budget: "low"|"high"}``.

    An optimum at an edge is not bracketed: the ladder should add a size beyond it.
    """
    out = {}
    for budget, group in cells.groupby("budget"):
        best = group.loc[group["loss"].idxmin(), "n_params"]
        if best == group["n_params"].min():
            out[float(budget)] = "low"
        elif best == group["n_params"].max():
            out[float(budget)] = "high"
    return out


def _fit(candidate: Candidate, cells: pd.DataFrame) -> Law:
    return fit_law(candidate.data(cells), candidate.law, check_identifiability=False).law


@dataclass
class Backtest:
    candidate: Candidate
    fit_budgets: int
    held_out: float  # the held-out budget
    predicted: float
    actual: float
    decades: float  # log10 of the held-out run's compute over the largest fitted one

    @property
    def error(self) -> float:
        return self.predicted / self.actual - 1.0

    @property
    def error_per_decade(self) -> float:
        return abs(math.log(self.predicted / self.actual)) / max(self.decades, 1e-9)


def backtest_candidate(candidate: Candidate, cells: pd.DataFrame) -> Backtest | None:
    """Fit without the largest budget; predict that budget's best run. None if too few points."""
    budgets = sorted(cells["budget"].unique())
    held_out = budgets[-1]
    train = cells[cells["budget"] < held_out]
    if len(budgets) - 1 - candidate.skip < candidate.min_budgets():
        return None
    try:
        law = _fit(candidate, train)
    except ValueError:
        return None
    target = frontier(cells).iloc[-1]
    largest_fitted = frontier(train)[candidate.compute_column].max()
    return Backtest(
        candidate=candidate,
        fit_budgets=len(budgets) - 1 - candidate.skip,
        held_out=float(held_out),
        predicted=float(law.predict(**candidate.inputs(target))),
        actual=float(target["loss"]),
        decades=math.log10(float(target[candidate.compute_column]) / largest_fitted),
    )


@dataclass
class Selection:
    chosen: Candidate
    backtests: list[Backtest]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "law": b.candidate.name,
                    "fit from budget": b.candidate.skip + 1,
                    "budgets fitted": b.fit_budgets,
                    "held-out budget": b.held_out,
                    "predicted": b.predicted,
                    "actual": b.actual,
                    "error": b.error,
                    "chosen": b.candidate == self.chosen,
                }
                for b in self.backtests
            ]
        )

    def backtest_of(self, candidate: Candidate) -> Backtest:
        return next(b for b in self.backtests if b.candidate == candidate)


def select_law(cells: pd.DataFrame) -> Selection:
    """The candidate with the smallest error on the held-out largest budget."""
    n_budgets = cells["budget"].nunique()
    if n_budgets < 3:
        raise ValueError(f"a ladder needs at least 3 budgets to backtest; got {n_budgets}")
    plateau = float(cells["unigram"].iloc[0]) if "unigram" in cells else math.nan
    tried = candidates(n_budgets, plateau if math.isfinite(plateau) else None)
    results = [b for c in tried if (b := backtest_candidate(c, cells))]
    if not results:
        raise ValueError("no candidate law could be backtested on this ladder")
    best = min(results, key=lambda b: (abs(b.error), len(b.candidate.law.param_names)))
    return Selection(best.candidate, results)


@dataclass
class Forecast:
    """A prediction for one target run, with what it came from."""

    target: dict[str, float]
    candidate: str
    law: dict[str, Any]
    loss: float
    lo: float
    hi: float
    level: float
    boot_halfwidth: float  # log-space half-widths of the two parts of the interval
    form_halfwidth: float
    decades: float
    naive_loss: float
    ladder_max_compute: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def forecast(
    cells: pd.DataFrame,
    target: Mapping[str, float],
    selection: Selection,
    *,
    n_resamples: int = 200,
    seed: int = 0,
) -> Forecast:
    """Predict ``target`` (``n_params``, ``n_params_total``, ``tokens``, ``compute``,
    ``compute_full``) with the selected law fitted on the whole ladder.

    The interval combines, in log space, the bootstrap interval of the fit (resampling the
    points it was fitted to) and the law-form error the backtest measured, scaled from the
    backtest's extrapolation distance to this one in decades of compute.
    """
    chosen = selection.chosen
    data = chosen.data(cells)
    fit = fit_law(data, chosen.law, check_identifiability=False)
    boot = bootstrap(fit, data, n_resamples=n_resamples, level=LEVEL, seed=seed)
    inputs = chosen.inputs(target)
    point = float(fit.law.predict(**inputs))
    p = boot.predict(**inputs, level=LEVEL)
    boot_half = max(abs(math.log(float(p.hi) / point)), abs(math.log(point / float(p.lo))))
    largest = float(frontier(cells)[chosen.compute_column].max())
    decades = math.log10(float(target[chosen.compute_column]) / largest)
    form_half = Z_LEVEL * selection.backtest_of(chosen).error_per_decade * max(decades, 0.0)
    half = math.hypot(boot_half, form_half)
    naive = _fit(NAIVE, cells).predict(**NAIVE.inputs(target))
    return Forecast(
        target={k: float(target[k]) for k in target},
        candidate=f"{chosen.name} (from budget {chosen.skip + 1})",
        law=fit.law.to_dict(),
        loss=point,
        lo=point * math.exp(-half),
        hi=point * math.exp(half),
        level=LEVEL,
        boot_halfwidth=boot_half,
        form_halfwidth=form_half,
        decades=decades,
        naive_loss=float(naive),
        ladder_max_compute=largest,
    )


def curve_shape(curves: pd.DataFrame, floor: float) -> pd.Series:
    """Median normalised curve ``(L(f) − floor) / (L(1) − floor)`` by fraction ``f``.

    ``curves``: ``run_id``, ``fraction`` (tokens seen over the run's budget) and ``loss``,
    for the runs whose shape is transferred (the ladder's frontier).
    """
    rows = []
    for _, run in curves.groupby("run_id"):
        run = run.sort_values("fraction")
        final = float(run["loss"].iloc[-1])
        if not math.isclose(float(run["fraction"].iloc[-1]), 1.0, rel_tol=0.02):
            continue
        rows.append(
            pd.Series(
                ((run["loss"] - floor) / (final - floor)).to_numpy(),
                index=run["fraction"].round(3).to_numpy(),
            )
        )
    if not rows:
        raise ValueError("no complete curve to take a shape from")
    return pd.concat(rows, axis=1).median(axis=1).sort_index()


def predict_curve(final: float, floor: float, shape: pd.Series) -> pd.Series:
    """The loss at each fraction of training for a run whose final loss is ``final``."""
    return floor + (final - floor) * shape


def fit_rule(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(coefficient, exponent) of y = k·x^p by least squares in log-log."""
    p, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_k)), float(p)
