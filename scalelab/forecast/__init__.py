"""The forecasting engine: fit laws to runs, answer with calibrated intervals, allocate compute.

Pure numpy/scipy/pandas: importing this package does not import torch, Lightning, MLflow or
Optuna. Every forecast of the project (``scalelab fit``/``predict``/``backtest``, dashboards, a
sweep's closing fit, the studies) answers through it; ``scalelab.results`` only stores records.

Forms and the default (``forms``, ``chooser``, ``calibration``, ``benchmark``)
    :data:`FORMS` is the one registry of the laws users name (``--law KEY``): a law template
    built from the runs and the points it is fitted to. ``auto`` is the default the
    forecasting benchmark (``scalelab benchmark forecasts``) chose leave-one-source-out on
    published ladders, stored with each form's model of its form error
    (``forecast_rule.json``, package data).

Answers (``answer``)
    ``fit_runs(runs, law="auto") -> Fit``; ``Fit.answer(params=, tokens=)``,
    ``answer(compute=)`` or ``answer(loss=)`` give the loss, the compute-optimal model or the
    compute a loss needs, with the bootstrap interval widened by the form-error model.

Data
    A pandas DataFrame of runs in the project vocabulary: ``n_params`` (N), ``tokens`` (D),
    ``compute`` (C, default 6·N·D), ``loss``; optional ``run_id``, ``group``/``cell``,
    ``step``, ``tokens_seen``. Loaders: :func:`load_runs_csv`, :func:`load_epoch_chinchilla`
    (tracked runs: ``scalelab.results.runs``). Bad input raises ``ValueError``
    naming the problem.

Laws (``laws``, ``laws_bounded``)
    :class:`PowerLaw` (``E + A·x^-alpha`` in x ∈ {n_params, tokens, compute}, or without E),
    :class:`Chinchilla` (``E + A·N^-alpha + B·D^-beta``, or without E), :class:`KaplanJoint`
    (``[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``). Each has named parameters, a pure
    vectorised ``predict``, ``__str__``, ``to_dict``/``Law.from_dict``. :class:`M4Law` and
    :class:`BoundedNDLaw` are bounded by a plateau L0 and a floor E set from the runs. New laws
    subclass :class:`Law` (which registers them) and declare parameters, bounds and a grid.

Fitting (``fit``, ``objectives``, ``varpro``)
    ``fit_law(runs, law="chinchilla", *, objective="huber", engine="lbfgs") -> FitResult``.
    Default objective: sum of Huber(δ=1e-3) on log residuals (Hoffmann et al. 2022; Besiroglu
    et al. 2024), minimised by L-BFGS-B from Epoch's 4,500-point grid. ``engine="varpro"``
    searches exponents only and solves coefficients by NNLS.

Uncertainty (``bootstrap``, ``intervals``)
    ``bootstrap(fit, runs, n_resamples=1000, level=0.9, seed=0, n_jobs=1) -> BootstrapResult``
    resamples runs. ``BootstrapResult.predict(n_params=, tokens=)`` or ``predict(compute=)``
    return a :class:`Prediction` (value, lo, hi, level); ``compute_for_loss(target)`` inverts
    the law; ``param_intervals()`` tabulates the parameters.

Allocation (``allocation``, ``approaches``)
    ``envelope_fit(checkpoints)`` (Approach 1), ``isoflop_fit(runs)`` (Approach 2) and
    ``compute_optimal(bootstrap_result)`` (Approach 3) each return an :class:`AllocationFit`:
    N_opt(C) = n_coef·C^a, D_opt(C) = d_coef·C^b, tokens per parameter, with intervals.

Backtests (``backtest``)
    ``backtest(runs, factors=(10, 100, 1000)) -> BacktestResult``: fit below a compute cut,
    predict every run above it, report relative errors and interval coverage per law.

Forecasts from a ladder (``forecast``)
    ``select_law(cells)`` picks a law and fit range by holding out the ladder's largest
    budgets; ``forecast(cells, target, selection)`` predicts one planned run with an interval
    that carries the law's backtest error and its rivals. :class:`PlateauLaw`
    (``E + (L0 − E)/(1 + (C/C0)^alpha)``) follows small models out of the unigram plateau.

Capabilities (``capability``)
    ``capability_runs(per_problem)`` turns per-problem pass rates into −mean log pass rate per
    run (the GPT-4 report's form, ``gpt4_law()``); ``pass_rate_runs`` a pass-rate column for
    :class:`SigmoidLaw`; ``forecast_pass_rate`` predicts one with an interval;
    ``problem_curves`` flags problems whose pass rate falls as compute grows.

Example::

    from scalelab.forecast import bootstrap, fit_law, load_runs_csv

    runs = load_runs_csv("runs.csv")
    fit = fit_law(runs, "chinchilla")
    boot = bootstrap(fit, runs, n_resamples=1000, seed=0, n_jobs=2)
    print(boot.predict(n_params=70e9, tokens=1.4e12))  # the bootstrap interval alone

    from scalelab.forecast import fit_runs

    fit = fit_runs(runs, law="auto")  # the calibrated interval, as scalelab predict prints
    print("\n".join(fit.answer(compute=1e24).lines()))
"""

from __future__ import annotations

import importlib
from typing import Any

# What each public name is imported from: imported on first use (PEP 562), so that
# ``scalelab predict`` pays only for the modules an answer needs.
_EXPORTS: dict[str, str] = {
    "AllocationFit": "allocation",
    "Answer": "answer",
    "backtest": "backtest",
    "BacktestResult": "backtest",
    "bon_curve": "overoptimization",
    "bon_estimate": "overoptimization",
    "bon_kl": "overoptimization",
    "bootstrap": "bootstrap",
    "BootstrapResult": "bootstrap",
    "BoundedNDLaw": "laws_bounded",
    "Chinchilla": "laws",
    "compute_optimal": "allocation",
    "default_laws": "backtest",
    "envelope_fit": "approaches",
    "Fit": "answer",
    "fit_law": "fit",
    "fit_overoptimization": "overoptimization",
    "fit_overoptimization_by_size": "overoptimization",
    "fit_runs": "answer",
    "FitResult": "fit",
    "forecast": "forecast",
    "Form": "forms",
    "FORMS": "forms",
    "gold_model": "overoptimization",
    "isoflop_fit": "approaches",
    "KaplanJoint": "laws",
    "Law": "laws",
    "LAWS": "laws",
    "load_epoch_chinchilla": "io",
    "load_runs_csv": "io",
    "M4Law": "laws_bounded",
    "make_law": "laws",
    "Objective": "objectives",
    "OveroptFit": "overoptimization",
    "OveroptScaling": "overoptimization",
    "PlateauLaw": "laws",
    "PowerLaw": "laws",
    "Prediction": "intervals",
    "prepare_runs": "runs",
    "select_law": "forecast",
    "SigmoidLaw": "laws",
}

__all__ = sorted(_EXPORTS)

# Every law registers itself when its module is imported: the forms import them all, so a
# law read back from a record (``Law.from_dict``) is always known.
import scalelab.forecast.forms  # noqa: E402, F401

# Functions named as their modules are bound now: importing a submodule binds its name in
# this package to the module, which would shadow the function on first use.
from scalelab.forecast.backtest import backtest  # noqa: E402, F401
from scalelab.forecast.bootstrap import bootstrap  # noqa: E402, F401
from scalelab.forecast.forecast import forecast  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
