"""The forms users name (``--law KEY``, ``fit(runs, law=KEY)``, a dashboard's ``law:``): one
registry.

A *form* is a law template built from what the runs know, and the points it is fitted to:
every run, the frontier of best runs by compute (the GPT-4 report's practice for a law of C),
or intermediate checkpoints from a fraction of training on. The forecasting benchmark scores
every form here (``scalelab.forecast.benchmark``), and ``auto`` is the default it chose.

A new form is one :class:`Form` line in :data:`FORMS` (and its law, if new, one ``Law``
subclass, which registers itself in ``scalelab.forecast.laws.LAWS``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from scalelab.forecast.laws import Chinchilla, KaplanJoint, Law, OddsLaw, PlateauLaw, PowerLaw
from scalelab.forecast.laws_average import AverageLaw
from scalelab.forecast.laws_bounded import BoundedNDLaw, M4Law
from scalelab.lazy_imports import lazy_module
from scalelab.vocab import AUTO_LAW, compute_6nd

pd = lazy_module("pandas")

Context = Mapping[str, float]


@dataclass(frozen=True)
class Form:
    """A law as users name it: how to build its template from the runs' context (the
    ``unigram`` entropy of their corpus, their lowest and highest loss), which points it is
    fitted to, and, for fits on checkpoints, the fraction of training they start from."""

    name: str
    summary: str
    build: Callable[[Context], Law]
    points: Literal["all", "frontier"] = "all"
    exclude_before: float | None = None
    members: tuple[str, ...] = ()  # an average: these forms, each fitted on its own points


def _unigram(context: Context) -> float | None:
    value = context.get("unigram", math.nan)
    return value if isinstance(value, float) and math.isfinite(value) and value > 0 else None


def _plateau(context: Context) -> float:
    value = _unigram(context)
    if value is None:
        raise ValueError(
            "the plateau law starts at the corpus's unigram entropy L0: runs trained by "
            "scalelab carry it; give a CSV a 'unigram' column (nats/token)"
        )
    return value


def _odds(context: Context) -> Law:
    # With the corpus's unigram entropy known, L0 is fixed there; published ladders do not
    # report it, so L0 is fitted.
    plateau = _unigram(context)
    return OddsLaw() if plateau is None else PlateauLaw(plateau=plateau, irreducible=False)


def _bounds(context: Context) -> dict[str, Any]:
    """E below the lowest loss; L0 the unigram entropy, else fitted above the highest loss
    (a unigram entropy below a loss the runs reached cannot be their plateau)."""
    low, high = context.get("min_loss", math.nan), context.get("max_loss", math.nan)
    if not (math.isfinite(low) and math.isfinite(high) and low > 0):
        raise ValueError("a bounded law needs the runs' losses to set its bounds")
    plateau = _unigram(context)
    if plateau is not None and plateau > high:
        return {"e_max": low, "plateau": plateau}
    return {"e_max": low, "l0_min": high}


def _average(members: tuple[str, ...]) -> Callable[[Context], Law]:
    def build(context: Context) -> Law:
        templates = [FORMS[m].build(context).to_dict() for m in members]
        return AverageLaw(members=tuple(json.dumps(t) for t in templates))

    return build


def average(name: str, members: tuple[str, ...], what: str) -> Form:
    """A form that averages ``members`` (geometric mean of their predictions)."""
    summary = f"geometric mean of {', '.join(members)} ({what}), each on its own points"
    return Form(name, summary, _average(members), members=members)


FORMS: dict[str, Form] = {
    f.name: f
    for f in (
        Form(
            "chinchilla",
            "E + A·N^-alpha + B·D^-beta on every run (Hoffmann et al. 2022)",
            lambda _: Chinchilla(),
        ),
        Form(
            "chinchilla_no_e",
            "A·N^-alpha + B·D^-beta on every run (Chinchilla without E)",
            lambda _: Chinchilla(irreducible=False),
        ),
        Form(
            "compute",
            "E + A·C^-alpha on the frontier (GPT-4 technical report, Fig. 1)",
            lambda _: PowerLaw(variable="compute"),
            "frontier",
        ),
        Form(
            "compute_no_e",
            "A·C^-alpha on the frontier (a pure power law in compute)",
            lambda _: PowerLaw(variable="compute", irreducible=False),
            "frontier",
        ),
        Form(
            "odds",
            "L0/(1 + (C/C0)^alpha) on the frontier, i.e. L0/L − 1 = (C/C0)^alpha; L0 the "
            "unigram entropy when the runs carry it, else fitted",
            _odds,
            "frontier",
        ),
        Form(
            "m4",
            "(L − E)/(L0 − L)^k = beta·C^-c on the frontier (M4, Alabdulmohsin et al. 2022); "
            "E below the lowest loss, L0 the unigram entropy or fitted above the highest",
            lambda ctx: M4Law(**_bounds(ctx)),
            "frontier",
        ),
        Form(
            "bounded_nd",
            "E + (L0 − E)·h/(1 + h), h = a·N^-alpha + b·D^-beta on every run (Bryant & Liu "
            "2026); bounded as m4",
            lambda ctx: BoundedNDLaw(**_bounds(ctx)),
        ),
        Form(
            "plateau",
            "E + (L0 − E)/(1 + (C/C0)^alpha) on every run, L0 the corpus's unigram entropy",
            lambda ctx: PlateauLaw(plateau=_plateau(ctx)),
        ),
        Form("params", "E + A·N^-alpha on every run", lambda _: PowerLaw(variable="n_params")),
        Form("tokens", "E + A·D^-alpha on every run", lambda _: PowerLaw(variable="tokens")),
        Form(
            "kaplan",
            "[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D on every run (Kaplan et al. 2020)",
            lambda _: KaplanJoint(),
        ),
        Form(
            "chinchilla_ckpt30",
            "E + A·N^-alpha + B·D^-beta on checkpoints past 30% of training",
            lambda _: Chinchilla(),
            exclude_before=0.3,
        ),
        average("avg_frontier", ("compute", "compute_no_e", "odds", "m4"), "the frontier forms"),
        average("avg_bounded", ("odds", "m4", "bounded_nd"), "the plateau-anchored forms"),
        average(
            "avg_all",
            ("chinchilla", "chinchilla_no_e", "compute", "compute_no_e", "odds", "m4"),
            "the forms of N and D and of C",
        ),
    )
}


def check_law_key(key: str) -> str:
    """``key`` if it names a form of :data:`FORMS` or is ``auto`` (the benchmark's default,
    ``scalelab.forecast.chooser``), else ``ValueError`` listing them."""
    if key != AUTO_LAW and key not in FORMS:
        listed = "; ".join(f"{f.name} ({f.summary})" for f in FORMS.values())
        raise ValueError(
            f"--law must be one of: {AUTO_LAW} (the default the forecasting benchmark chose); "
            f"{listed}; got {key!r}"
        )
    return key


def runs_context(runs: Any) -> dict[str, float]:
    """What a form's builder reads from the runs: the unigram entropy of their corpus (the
    median, when runs carry it) and their lowest and highest loss."""
    context: dict[str, float] = {}
    columns = getattr(runs, "columns", ())
    if "unigram" in columns:
        values = np.asarray(runs["unigram"], dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            context["unigram"] = float(np.median(values))
    if "loss" in columns:
        loss = np.asarray(runs["loss"], dtype=float)
        loss = loss[np.isfinite(loss) & (loss > 0)]
        if len(loss):
            context["min_loss"], context["max_loss"] = float(loss.min()), float(loss.max())
    return context


def law_for_key(key: str, runs: Any = None) -> Law:
    """The template of form ``key`` for fitting ``runs`` (a DataFrame, or None)."""
    if check_law_key(key) == AUTO_LAW:
        raise ValueError(f"{AUTO_LAW} is resolved by scalelab.forecast.chooser.choose_form")
    return FORMS[key].build(runs_context(runs))


def frontier_points(runs: pd.DataFrame) -> pd.DataFrame:
    """The best run of each budget (a ``budget`` column, as sweeps log), else the runs on the
    lower envelope of loss against compute (no cheaper run has a lower loss)."""
    ok = runs[np.isfinite(runs["loss"].astype(float))]
    if "budget" in ok.columns and ok["budget"].notna().all() and ok["budget"].nunique() > 1:
        best = ok.loc[ok.groupby("budget")["loss"].idxmin()]
    else:
        ordered = ok.sort_values(["compute", "loss"])
        best = ordered[ordered["loss"] < ordered["loss"].cummin().shift(fill_value=np.inf)]
    return best.sort_values("compute").reset_index(drop=True)


def form_points(form: Form, runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows ``form`` is fitted to: every run, the frontier, or the checkpoints of the runs
    from ``form.exclude_before`` of their tokens on (an average: every run, which its
    members each reduce to their own points)."""
    if form.exclude_before is not None:
        return checkpoint_points(runs, curves, form.exclude_before, what=f"the {form.name} form")
    return frontier_points(runs) if form.points == "frontier" else runs


def checkpoint_points(
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    fraction: float,
    what: str = "--exclude-before",
    source: str = "these runs",
) -> pd.DataFrame:
    """Every validation checkpoint of ``runs`` at or after ``fraction`` of its run's tokens,
    as a point at D = tokens seen and C = 6·N·D (the bootstrap then resamples whole runs,
    since checkpoints of one run are not independent)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--exclude-before must be a fraction in [0, 1); got {fraction}")
    if curves is None or curves.empty:
        raise ValueError(
            f"{what} fits checkpoints, but {source} has final losses only (no training curves)"
        )
    keep = curves[
        (curves["tokens_seen"] >= fraction * curves["tokens"]) & (curves["tokens_seen"] > 0)
    ]
    if "run_id" in runs and "run_id" in keep:
        keep = keep[keep["run_id"].isin(runs["run_id"])]
    points = keep.assign(
        tokens=keep["tokens_seen"], compute=compute_6nd(keep["n_params"], keep["tokens_seen"])
    )
    order = ("run_id", "step", "tokens_seen", "n_params", "tokens", "compute", "loss")
    return points[[c for c in order if c in points]].reset_index(drop=True)
