"""Calibrated forecast intervals: the bootstrap combined with a model of the law-form error.

A bootstrap interval covers the fitted law's parameter noise and the scatter of runs, not the
error of the law's form, which grows with the distance of the extrapolation: on published
ladders nominal 90% bootstrap intervals covered about half of the runs 10x or more beyond
the fit. The form error is modelled on the forecasting benchmark's held-out forecasts
(``scalelab.forecast.benchmark``): a forecast ``d`` decades of compute beyond its fit has log
error

    e ~ t_nu(0, s),  s² = (sigma·d^gamma)² + (b / z90)²

with ``b`` its bootstrap 90% log half-width on the side of the error and ``z90`` the normal
quantile that turns it into a scale. ``sigma``, ``gamma`` and ``nu`` are fitted by maximum
likelihood with every ladder weighted equally (forecasts of one ladder share its corpus and
recipe, so their errors move together; a ladder with many forecasts must not set the model).
A heavy-tailed t with a fitted ``nu`` lets 80%, 90% and 95% intervals differ as the errors
do; the maximum over ladders (the previous rule) gave one width at every level above 87.5%.

A new forecast's log half-width on each side, at level q, is
``hypot(b_q, t_nu(q)·sigma·d^gamma)`` with ``b_q`` its bootstrap half-width at q.
A forecast inside the fitted range (d ≤ 0) keeps its bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.lazy_imports import lazy_module

special = lazy_module("scipy.special")
optimize = lazy_module("scipy.optimize")

# Decades of extrapolation grouping forecasts in reports: 10x, 30x, 100x, 1000x and beyond.
BIN_EDGES: tuple[float, ...] = (1.25, 1.75, 2.5)
BIN_LABELS: tuple[str, ...] = ("10x", "30x", "100x", "1000x")


def distance_bin(decades: float) -> int:
    """Index of the bin of a forecast ``decades`` beyond its fit."""
    return int(np.searchsorted(BIN_EDGES, decades, side="right"))


Z90 = 1.6448536269514722  # the normal quantile of a two-sided 90% interval
MIN_NU = 1.0  # the Cauchy distribution: heavier tails are not fitted
_T_GRID = 200_001


def t_quantile(nu: float, level: float) -> float:
    """The half-width, in scales, of a two-sided ``level`` interval of Student's t with ``nu``
    degrees of freedom (``nu`` ≥ 1).

    With x = √ν·tan θ the t density's mass between 0 and x is proportional to ∫ cos^(ν−1) φ dφ
    from 0 to θ, a bounded integrand for ν ≥ 1: a cumulative trapezoid on a fine grid of θ,
    inverted by interpolation, matches scipy's ``stdtrit`` to 1e-6 without importing
    ``scipy.special`` (a quarter of a second: most of what ``scalelab predict`` costs).
    """
    if not nu >= MIN_NU:
        raise ValueError(f"t quantiles need nu >= {MIN_NU}; got {nu}")
    theta = np.linspace(0.0, math.pi / 2, _T_GRID)
    density = np.cos(theta) ** (nu - 1.0)
    mass = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2.0)])
    angle = float(np.interp(level * mass[-1], mass, theta))
    return math.sqrt(nu) * math.tan(angle)


@dataclass(frozen=True)
class FormError:
    """The fitted form-error model: scale ``sigma`` at one decade, growth ``gamma`` with the
    decades of extrapolation, and the t distribution's degrees of freedom ``nu``."""

    sigma: float
    gamma: float
    nu: float
    n_forecasts: int = 0
    n_ladders: int = 0

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and self.nu > 0 and math.isfinite(self.gamma)):
            raise ValueError(f"form-error model needs sigma >= 0, nu > 0; got {self}")

    def half_width(self, decades: Any, level: float) -> np.ndarray:
        """The form term's log half-width at ``level`` for forecasts ``decades`` out."""
        d = np.maximum(np.asarray(decades, dtype=float), 0.0)
        t = t_quantile(self.nu, level)
        with np.errstate(divide="ignore"):
            return np.where(d > 0, t * self.sigma * d**self.gamma, 0.0)

    def per_decade(self, decades: float, level: float) -> float:
        """The form term at ``level`` divided by the decades (what answers print)."""
        if decades <= 0:
            return 0.0
        return float(self.half_width(decades, level)) / decades

    def widen(
        self, value: Any, lo: Any, hi: Any, decades: Any, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The interval [lo, hi] around ``value`` combined with the form-error term."""
        value, lo, hi, decades = np.broadcast_arrays(
            *(np.asarray(a, dtype=float) for a in (value, lo, hi, decades))
        )
        form = self.half_width(decades, level)
        down = np.hypot(np.log(value / lo), form)
        up = np.hypot(np.log(hi / value), form)
        return value * np.exp(-down), value * np.exp(up)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "t-model",
            "sigma": self.sigma,
            "gamma": self.gamma,
            "nu": self.nu,
            "n_forecasts": self.n_forecasts,
            "n_ladders": self.n_ladders,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FormError:
        if payload.get("unit") != "t-model":
            raise ValueError(
                "fit record holds a form-error term from an older version: refit with scalelab fit"
            )
        keys = ("sigma", "gamma", "nu", "n_forecasts", "n_ladders")
        return cls(**{k: payload[k] for k in keys if k in payload})

    @classmethod
    def from_forecasts(
        cls,
        log_errors: Sequence[float],
        half_widths: Sequence[float],
        decades: Sequence[float],
        ladders: Sequence[str],
    ) -> FormError:
        """The model fitted to benchmark forecasts: their log errors, the bootstrap 90% log
        half-width on the side of each error, their decades and their ladders (forecasts
        inside the fitted range are left out)."""
        e, b, d = (np.asarray(a, dtype=float) for a in (log_errors, half_widths, decades))
        ladder = np.asarray(ladders, dtype=object)
        keep = (d > 0) & np.isfinite(e) & np.isfinite(b)
        e, b, d, ladder = e[keep], b[keep], d[keep], ladder[keep]
        if len(e) < 3:
            raise ValueError(f"{len(e)} benchmark forecasts are too few to calibrate with")
        names, inverse, counts = np.unique(ladder, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        boot = b / Z90
        log_d = np.log(d)

        def nll(x: np.ndarray) -> float:
            log_sigma, gamma, log_nu = x
            nu = math.exp(log_nu)
            scale = np.sqrt(np.exp(2 * (log_sigma + gamma * log_d)) + boot**2)
            logpdf = (
                special.gammaln((nu + 1) / 2)
                - special.gammaln(nu / 2)
                - 0.5 * math.log(nu * math.pi)
                - np.log(scale)
                - (nu + 1) / 2 * np.log1p((e / scale) ** 2 / nu)
            )
            return -float(np.sum(weights * logpdf))

        spread = max(float(np.median(np.abs(e) / d)), 1e-4)
        starts = [
            (math.log(spread * f), g, math.log(n))
            for f in (0.5, 1.0, 2.0)
            for g in (0.5, 1.0, 1.5)
            for n in (2.0, 8.0)
        ]
        bounds = [(math.log(1e-5), math.log(5.0)), (0.0, 2.5), (math.log(MIN_NU), math.log(100.0))]
        best = min(
            (optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds) for x0 in starts),
            key=lambda r: r.fun,
        )
        log_sigma, gamma, log_nu = best.x
        return cls(
            sigma=round(math.exp(log_sigma), 8),
            gamma=round(float(gamma), 6),
            nu=round(math.exp(log_nu), 6),
            n_forecasts=len(e),
            n_ladders=len(names),
        )


def stored_form_error(form: str) -> FormError | None:
    """The benchmark's form-error model for ``form`` (a form name or ``auto``), if measured."""
    from scalelab.forecast.chooser import stored_payload

    table = stored_payload().get("form_error", {})
    return FormError.from_dict(table[form]) if form in table else None
