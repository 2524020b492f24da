"""Forecast a large run from a ladder of small ones: pick the law by backtest, size the
interval by how that law extrapolated, and predict the whole loss curve.

The GPT-4 technical report predicted a final loss from runs with at most 1/1,000 of the
compute. Which law and which fit range extrapolate well is an empirical question of the
ladder at hand, so it is settled here by backtesting inside the ladder, never by looking at
the target:

1. ``cell_table(runs)``: the best trial of each (size, budget) cell.
2. ``select_law(cells)``: the form ``scalelab fit --law auto`` would choose, by the rule the
   forecasting benchmark learned on published ladders (``scalelab.forecast.chooser``): a
   ladder's own backtest could not tell the forms apart on the CPU ladder (RMS log errors
   0.017-0.033 for all ten candidates, the frontier's noise) and chose one of the worst at
   1000x (issue 12). Every candidate (a law, the points it is fitted to and how far down the
   ladder it starts) is still backtested inside the ladder, fitted without the largest
   budget, then the two largest, up to half the ladder, as a diagnostic;
   ``select_law(cells, by="backtest")`` chooses by it, as the study did before.
3. ``forecast(cells, target)``: the chosen law's prediction for the target run, with its
   bootstrap interval combined with the benchmark's form error per decade of extrapolation
   (``scalelab.forecast.calibration``), the interval ``scalelab predict`` gives.
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

from scalelab.forecast.averaging import average_law, fit_average
from scalelab.forecast.bootstrap import bootstrap
from scalelab.forecast.calibration import stored_form_error
from scalelab.forecast.chooser import MIN_FRONTIER, Choice, choose_form
from scalelab.forecast.fit import fit_law
from scalelab.forecast.forms import FORMS, frontier_points, law_for_key
from scalelab.forecast.laws import Chinchilla, Law, PlateauLaw, PowerLaw
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import compute_6nd

pd = lazy_module("pandas")

Points = Literal["frontier", "cells", "runs"]
LEVEL = 0.9
Z_LEVEL = 1.6448536269514722  # two-sided 90% normal quantile
RIVAL_FACTOR = 2.0  # backtest errors within this factor of the best are indistinguishable


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
    form: str = ""  # an average of forms (``runs``): its members take their own points

    def data(self, cells: pd.DataFrame) -> pd.DataFrame:
        budgets = sorted(cells["budget"].unique())[self.skip :]
        kept = cells[cells["budget"].isin(budgets)]
        if self.points == "runs":
            return kept.reset_index(drop=True)
        if self.points == "frontier":
            best = kept.loc[kept.groupby("budget")["loss"].idxmin()]
            return pd.DataFrame({"compute": best[self.compute_column], "loss": best["loss"]})
        return pd.DataFrame(
            {"n_params": kept[self.n_column], "tokens": kept["tokens"], "loss": kept["loss"]}
        )

    def inputs(self, run: Mapping[str, Any], law: Law | None = None) -> dict[str, float]:
        """What the fitted ``law`` (default: the template) reads of ``run``: an average
        whose members of C could not be fitted is a law of N and D."""
        if self.points == "runs":
            return {v: float(run[v]) for v in (law or self.law).variables}
        if self.points == "frontier":
            return {"compute": float(run[self.compute_column])}
        return {"n_params": float(run[self.n_column]), "tokens": float(run["tokens"])}

    def min_budgets(self) -> int:
        if self.points == "runs":
            return MIN_FRONTIER
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
            # The backtest holds out up to half the budgets; the fit needs enough below them.
            if n_budgets - max(holdouts(n_budgets)) - skip >= c.min_budgets():
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
    best["compute"] = compute_6nd(best["n_params"], best["tokens"])
    return best.sort_values(["budget", "n_params"], ignore_index=True)


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


def fit_candidate(candidate: Candidate, cells: pd.DataFrame) -> Law:
    if candidate.points == "runs":
        return average_law(FORMS[candidate.form], candidate.data(cells))
    return fit_law(candidate.data(cells), candidate.law, check_identifiability=False).law


@dataclass
class Backtest:
    """One held-out prediction: fitted on the budgets up to a cut, scored on a larger one."""

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
    def log_error(self) -> float:
        return math.log(self.predicted / self.actual)


def holdouts(n_budgets: int) -> range:
    """How many of the largest budgets each backtest leaves out: 1 to half the ladder.

    One held-out budget is a short extrapolation, where a few per cent of noise in the best
    run decides; leaving out up to half the ladder scores the laws on the longer
    extrapolations that matter, with the same held-out points for every candidate.
    """
    return range(1, max(1, n_budgets // 2) + 1)


def backtest_candidate(candidate: Candidate, cells: pd.DataFrame) -> list[Backtest] | None:
    """Fit without the ``h`` largest budgets and predict each of their best runs, for every
    ``h`` in ``holdouts``; None if the candidate cannot be fitted on the smallest fit set."""
    budgets = sorted(cells["budget"].unique())
    best = frontier_points(cells)
    out = []
    for h in holdouts(len(budgets)):
        train = cells[cells["budget"] < budgets[-h]]
        fitted = len(budgets) - h - candidate.skip
        if fitted < candidate.min_budgets():
            return None
        try:
            law = fit_candidate(candidate, train)
        except ValueError:
            return None
        largest_fitted = frontier_points(train)[candidate.compute_column].max()
        for _, target in best[best["budget"] >= budgets[-h]].iterrows():
            out.append(
                Backtest(
                    candidate=candidate,
                    fit_budgets=fitted,
                    held_out=float(target["budget"]),
                    predicted=float(law.predict(**candidate.inputs(target, law))),
                    actual=float(target["loss"]),
                    decades=math.log10(float(target[candidate.compute_column]) / largest_fitted),
                )
            )
    return out


@dataclass
class Selection:
    chosen: Candidate
    backtests: list[Backtest]
    choice: Choice | None = None  # the benchmark rule's choice, when it chose

    def table(self) -> pd.DataFrame:
        """One row per candidate: its held-out errors and their root mean square."""
        rows = []
        for candidate in dict.fromkeys(b.candidate for b in self.backtests):
            mine = self.of(candidate)
            rows.append(
                {
                    "law": candidate.name,
                    "fit from budget": candidate.skip + 1,
                    "held-out errors": " ".join(f"{b.error:+.1%}" for b in mine),
                    "rms log error": _rms(mine),
                    "chosen": candidate == self.chosen,
                }
            )
        return pd.DataFrame(rows)

    def of(self, candidate: Candidate) -> list[Backtest]:
        return [b for b in self.backtests if b.candidate == candidate]

    def rivals(self) -> list[Candidate]:
        """Candidates the backtest cannot tell from the chosen one: RMS log error within
        ``RIVAL_FACTOR`` times the chosen one's."""
        best = _rms(self.of(self.chosen))
        return [
            c
            for c in dict.fromkeys(b.candidate for b in self.backtests)
            if c != self.chosen and _rms(self.of(c)) <= RIVAL_FACTOR * best
        ]

    def error_per_decade(self, candidate: Candidate) -> float:
        """Root mean square of the candidate's log errors per decade of extrapolation."""
        mine = self.of(candidate)
        return math.sqrt(np.mean([(b.log_error / max(b.decades, 0.05)) ** 2 for b in mine]))


def _rms(backtests: list[Backtest]) -> float:
    return math.sqrt(np.mean([b.log_error**2 for b in backtests]))


def rule_candidate(choice: Choice, cells: pd.DataFrame) -> Candidate:
    """The study's candidate for a form the chooser picked (fitted from the first budget)."""
    form = choice.form
    law = law_for_key(form.name, cells)
    if form.members:
        return Candidate(f"{form.summary} ({form.name})", law, "runs", form=form.name)
    if form.points == "all":
        return Candidate(f"{form.summary} ({form.name}), N non-embedding", law, "cells")
    return Candidate(f"{form.summary} ({form.name})", law, "frontier")


def select_law(cells: pd.DataFrame, by: Literal["rule", "backtest"] = "rule") -> Selection:
    """The candidate ``scalelab fit --law auto`` would choose (``by="rule"``), or the one whose
    in-ladder held-out predictions have the smallest root-mean-square log error (fewer
    parameters break ties); every candidate's backtest is kept as a diagnostic."""
    n_budgets = cells["budget"].nunique()
    if n_budgets < 3:
        raise ValueError(f"a ladder needs at least 3 budgets to backtest; got {n_budgets}")
    plateau = float(cells["unigram"].iloc[0]) if "unigram" in cells else math.nan
    known = plateau if math.isfinite(plateau) else None
    choice = None
    tried = candidates(n_budgets, known)
    if by == "rule":
        choice = choose_form(cells.assign(compute=compute_6nd(cells["n_params"], cells["tokens"])))
        tried = [rule_candidate(choice, cells), *tried]
    results = {c: b for c in tried if (b := backtest_candidate(c, cells))}
    if not results:
        raise ValueError("no candidate law could be backtested on this ladder")
    chosen = min(results, key=lambda c: (_rms(results[c]), len(c.law.param_names)))
    if choice is not None:
        chosen = tried[0]
    return Selection(chosen, [b for bs in results.values() for b in bs], choice)


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
    points it was fitted to) and a law-form error that grows with the decades of compute
    beyond the ladder (6·N·D, as ``scalelab predict`` counts it): the forecasting benchmark's
    form-error model for ``auto`` when the rule chose (the same rule as every answer,
    ``FormError.widen``), else the chosen law's own in-ladder backtest error per decade.
    The predictions of the *rivals* (candidates whose backtest error is within
    ``RIVAL_FACTOR`` of the chosen one's) are reported in ``extra``; with ``by="backtest"``
    they also widen the interval, as they did before the benchmark existed.
    """
    chosen = selection.chosen
    data = chosen.data(cells)
    if chosen.points == "runs":
        boot = fit_average(
            FORMS[chosen.form], data, n_resamples=n_resamples, level=LEVEL, seed=seed
        )
    else:
        fit = fit_law(data, chosen.law, check_identifiability=False)
        boot = bootstrap(fit, data, n_resamples=n_resamples, level=LEVEL, seed=seed)
    fit = boot.fit
    inputs = chosen.inputs(target, boot.law)
    point = float(fit.law.predict(**inputs))
    p = boot.predict(**inputs, level=LEVEL)
    boot_half = max(abs(math.log(float(p.hi) / point)), abs(math.log(point / float(p.lo))))
    largest = float(frontier_points(cells)[chosen.compute_column].max())
    decades = math.log10(float(target[chosen.compute_column]) / largest)
    form_error = None if selection.choice is None else stored_form_error(selection.choice.form.name)
    if form_error is not None:
        # The one interval rule of every answer (``FormError.widen``, as scalelab predict).
        decades = math.log10(float(target["compute"]) / float(cells["compute"].max()))
        form_half = float(form_error.half_width(decades, LEVEL))
        lo, hi = (float(x) for x in form_error.widen(point, p.lo, p.hi, decades, LEVEL))
    else:
        form_half = Z_LEVEL * selection.error_per_decade(chosen) * max(decades, 0.0)
        half = math.hypot(boot_half, form_half)
        lo, hi = point * math.exp(-half), point * math.exp(half)
    rivals = {
        f"{c.name} (from budget {c.skip + 1})": float(
            (law := fit_candidate(c, cells)).predict(**c.inputs(target, law))
        )
        for c in selection.rivals()
    }
    naive = fit_candidate(NAIVE, cells).predict(**NAIVE.inputs(target))
    return Forecast(
        target={k: float(target[k]) for k in target},
        candidate=f"{chosen.name} (from budget {chosen.skip + 1})",
        law=fit.law.to_dict(),
        loss=point,
        lo=lo if selection.choice is not None else min([lo, *rivals.values()]),
        hi=hi if selection.choice is not None else max([hi, *rivals.values()]),
        level=LEVEL,
        boot_halfwidth=boot_half,
        form_halfwidth=form_half,
        decades=decades,
        naive_loss=float(naive),
        ladder_max_compute=largest,
        extra={
            "rivals": rivals,
            "choice": None if selection.choice is None else selection.choice.to_dict(),
        },
    )


def curve_shape(curves: pd.DataFrame, floor: float) -> pd.Series:
    """Median normalised curve ``(L(f) − floor) / (L(1) − floor)`` by fraction ``f``.

    ``curves``: ``run_id``, ``fraction`` (tokens seen over the run's budget) and ``loss``,
    for the runs whose shape is transferred (the ladder's frontier).
    """
    rows = []
    for _, run in curves.groupby("run_id"):
        # A grouped run logs its last validation and its final one at the same tokens.
        run = run.assign(fraction=run["fraction"].round(3)).sort_values("fraction", kind="stable")
        run = run.drop_duplicates("fraction", keep="last")
        final = float(run["loss"].iloc[-1])
        if not math.isclose(float(run["fraction"].iloc[-1]), 1.0, rel_tol=0.02):
            continue
        rows.append(
            pd.Series(
                ((run["loss"] - floor) / (final - floor)).to_numpy(),
                index=run["fraction"].to_numpy(),
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
