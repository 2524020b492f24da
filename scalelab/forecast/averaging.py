"""Fitting an average of forms: each member on its own points, bootstrapped with the same
seed, then side by side as one :class:`~scalelab.forecast.laws_average.AverageLaw`.

A member that cannot be fitted to the runs (a law of N and D when every run saw one D; a
checkpoint form without curves) is left out and said so in the warnings, as the benchmark
left it out of the average it scored.
"""

from __future__ import annotations

import numpy as np

from scalelab.forecast.bootstrap import BootstrapResult, bootstrap
from scalelab.forecast.chooser import MIN_FRONTIER
from scalelab.forecast.fit import FitResult, fit_law
from scalelab.forecast.fit import _residual_stats as residual_stats
from scalelab.forecast.forms import FORMS, Form, form_points, frontier_points, law_for_key
from scalelab.forecast.laws_average import AverageLaw
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")


def _member_points(name: str, runs: pd.DataFrame, curves: pd.DataFrame | None) -> pd.DataFrame:
    """The member's points, refused as ``auto`` refuses a form: a frontier form needs
    ``MIN_FRONTIER`` points, as every fit of the benchmark had."""
    points = form_points(FORMS[name], runs, curves)
    if FORMS[name].points == "frontier" and len(points) < MIN_FRONTIER:
        raise ValueError(
            f"the frontier has {len(points)} points (a frontier form needs {MIN_FRONTIER})"
        )
    return points


def average_law(form: Form, runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> AverageLaw:
    """The average of ``form``'s members fitted to ``runs`` (no bootstrap)."""
    laws = []
    for name in form.members:
        try:
            points = _member_points(name, runs, curves)
            laws.append(fit_law(points, law_for_key(name, runs), check_identifiability=False).law)
        except (ValueError, RuntimeError):
            continue
    if not laws:
        raise ValueError(f"no member of {form.name} could be fitted to these runs")
    return AverageLaw.of(laws)


def fit_average(
    form: Form,
    runs: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    *,
    n_resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
    n_jobs: int = 1,
) -> BootstrapResult:
    """The bootstrap of ``form``'s average (its ``members``) fitted to ``runs``."""
    boots, warnings = [], []
    how = {"n_resamples": n_resamples, "level": level, "seed": seed, "n_jobs": n_jobs}
    for name in form.members:
        try:
            points = _member_points(name, runs, curves)
            fit = fit_law(points, law_for_key(name, runs))
            boots.append(bootstrap(fit, points, **how))
        except (ValueError, RuntimeError) as err:
            warnings.append(f"{name} left out of the average: {str(err).splitlines()[0]}")
            continue
        warnings += [f"{name}: {w}" for w in boots[-1].warnings]
    if not boots:
        raise ValueError(f"no member of {form.name} could be fitted: " + "; ".join(warnings))
    law = AverageLaw.of([b.law for b in boots])
    # Sample i of the average is sample i of every member (the members share the seed).
    n = min(len(b.samples) for b in boots)
    samples = np.hstack([b.samples[:n] for b in boots])
    front = frontier_points(runs)
    inputs = {v: front[v].to_numpy(dtype=float) for v in law.variables}
    residuals = np.log(front["loss"].to_numpy(dtype=float)) - np.log(law.predict(**inputs))
    first = boots[0].fit
    fit = FitResult(
        law=law,
        objective=first.objective,
        value=float(sum(b.fit.value for b in boots)),
        converged=all(b.fit.converged for b in boots),
        n_points=len(runs),
        residuals=residual_stats(residuals),
        warnings=tuple(warnings),
        loss_min=float(runs["loss"].min()),
        seconds=float(sum(b.fit.seconds for b in boots)),
    )
    return BootstrapResult(
        fit=fit,
        samples=samples,
        level=level,
        seed=seed,
        n_resamples=n_resamples,
        n_failed=n_resamples - n,
        n_unconverged=max(b.n_unconverged for b in boots),
        unit=boots[0].unit,
        n_units=boots[0].n_units,
        residuals=residuals,
        warnings=tuple(warnings),
    )
