"""Laws bounded above by a plateau L0 and below by a floor E, both anchored in the runs.

A small model starts near L0, the loss of a predictor that uses no context (the unigram
entropy of the corpus), and no model goes below the irreducible loss E. Forms whose log-log
slope only flattens (E + A·C^-α) cannot follow the bend out of the plateau, and pure power
laws cannot stop at a floor; the forms here do both:

- :class:`M4Law`, the M4 estimator of Alabdulmohsin, Neyshabur & Zhai (NeurIPS 2022,
  "Revisiting neural scaling laws"): (L − E)/(L0 − L)^k = β·C^-c. With k = 1 and E = 0 it is
  the odds law L0/L − 1 = (C/C0)^c; as L0 → ∞ it becomes the GPT-4 form E + A·C^-c.
- :class:`BoundedNDLaw`: L = E + (L0 − E)·h/(1 + h), h = a·N^-α + b·D^-β, the (N, D) form of
  Bryant & Liu ("Practical scaling laws", 2026): Chinchilla's terms inside a logistic that
  saturates at L0 for tiny models and at E for large ones.

Both are bounded by the runs they are fitted to: E lies in (0, the lowest loss observed) and a
fitted L0 above the highest loss observed (or L0 is fixed at the corpus's unigram entropy,
when the runs carry it). The bounds are configuration set by the form's builder
(``scalelab.forecast.forms``) from the runs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from scalelab.forecast.laws import Chinchilla, Law, lse

_NEWTON_STEPS = 60
# A fitted plateau may sit at most e^3 ≈ 20x above the highest loss observed.
_LOG_L0_SPAN = 3.0


def _log_sigmoid(t: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -t)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _check_bounds(law: Law, e_max: float | None, l0: float | None, l0_min: float | None) -> None:
    if e_max is not None and not (math.isfinite(e_max) and e_max > 0):
        raise ValueError(f"{law.name}: e_max must be a positive loss; got {e_max!r}")
    if l0 is None and l0_min is None:
        raise ValueError(f"{law.name}: give the plateau L0 or a lower bound l0_min for it")
    for name, v in (("plateau", l0), ("l0_min", l0_min)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{law.name}: {name} must be a positive loss; got {v!r}")


@dataclass(frozen=True, kw_only=True)
class _Bounded(Law):
    """Shared configuration: the floor's upper bound and the plateau (fixed or bounded)."""

    e_max: float | None = None  # E < e_max: the lowest loss of the fitted runs
    plateau: float | None = None  # L0 fixed (the corpus's unigram entropy), else fitted
    l0_min: float | None = None  # a fitted L0 lies above this (the highest loss fitted)
    E: float = math.nan
    L0: float = math.nan

    def __post_init__(self) -> None:
        if not self.irreducible:
            raise ValueError(f"{self.name} always has a floor E")
        _check_bounds(self, self.e_max, self.plateau, self.l0_min)

    @property
    def _fits_l0(self) -> bool:
        return self.plateau is None

    def _e_bounds(self) -> tuple[float, float]:
        top = self.e_max if self.e_max is not None else (self.plateau or self.l0_min)
        return (-20.0, math.log(float(top)) - 1e-9)

    def _l0_bounds(self) -> tuple[float, float]:
        low = math.log(float(self.l0_min)) + 1e-9  # type: ignore[arg-type]
        return (low, low + _LOG_L0_SPAN)

    def _e_l0(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = np.exp(theta[..., 0, None])
        if self._fits_l0:
            return e, np.exp(theta[..., 1, None])
        return e, np.full_like(e, float(self.plateau))  # type: ignore[arg-type]

    def _grid_e_l0(self) -> list[tuple[float, ...]]:
        top = self.e_max if self.e_max is not None else (self.plateau or self.l0_min)
        log_e = [math.log(float(top) * f) for f in (0.1, 0.5, 0.9)]
        if not self._fits_l0:
            return [(e,) for e in log_e]
        lo = self._l0_bounds()[0]
        return [(e, lo + s) for e in log_e for s in (0.05, 0.5, 1.5)]


@dataclass(frozen=True, kw_only=True)
class M4Law(_Bounded):
    """(L − E)/(L0 − L)^k = beta·C^-c, solved for L in (E, L0) (Alabdulmohsin et al. 2022)."""

    name: ClassVar[str] = "m4"
    beta: float = math.nan
    c: float = math.nan
    k: float = math.nan

    @property
    def variables(self) -> tuple[str, ...]:
        return ("compute",)

    @property
    def param_names(self) -> tuple[str, ...]:
        rest = ("beta", "c", "k")
        return ("E", "L0", *rest) if self._fits_l0 else ("E", *rest)

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"E", "L0", "beta"})

    def formula(self) -> str:
        l0 = "{L0}" if self._fits_l0 else f"{self.plateau:.4g}"
        return f"(L − {{E}})/({l0} − L)^{{k}} = {{beta}}·C^-{{c}}"

    def _split(self, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        i = 2 if self._fits_l0 else 1
        return tuple(theta[..., j, None] for j in range(i, i + 3))

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        e, l0 = self._e_l0(theta)
        log_beta, c, k = self._split(theta)
        gap = l0 - e
        log_gap = np.log(gap)
        # L = E + (L0 − E)·σ(t) turns the implicit equation into g(t) = 0 with
        # g = (1 − k)·log(L0 − E) + log σ(t) − k·log σ(−t) − log β + c·log C, whose slope
        # dg/dt = (1 − σ) + k·σ lies between min(1, k) and max(1, k): Newton converges.
        rhs = log_beta - c * z[0] - (1.0 - k) * log_gap
        t = np.broadcast_to(rhs / np.maximum(k, 1.0), np.broadcast_shapes(rhs.shape, z[0].shape))
        t = np.array(t)
        for _ in range(_NEWTON_STEPS):
            s = _sigmoid(t)
            g = _log_sigmoid(t) - k * _log_sigmoid(-t) - rhs
            step = g / ((1.0 - s) + k * s)
            t = t - np.clip(step, -5.0, 5.0)
            if np.all(np.abs(step) < 1e-12):
                break
        s = _sigmoid(t)
        loss = e + gap * s
        out = np.log(loss)
        if not jac:
            return out
        dg_dt = (1.0 - s) + k * s
        # dt/dθ = −(∂g/∂θ)/(dg/dt) at fixed t; then dL = dE·(1 − s) + dL0·s + gap·s(1−s)·dt.
        ds = gap * s * (1.0 - s)
        log_s_neg = _log_sigmoid(-t)

        def through_t(dg: np.ndarray) -> np.ndarray:
            return -ds * dg / dg_dt

        rows = [
            (e * (1.0 - s) + through_t((1.0 - k) * (-e) / gap)) / loss,  # d/d log E
        ]
        if self._fits_l0:
            rows.append((l0 * s + through_t((1.0 - k) * l0 / gap)) / loss)  # d/d log L0
        rows += [
            through_t(-np.ones_like(t)) / loss,  # d/d log β
            through_t(np.broadcast_to(z[0], t.shape)) / loss,  # d/d c
            through_t(-log_gap - log_s_neg) / loss,  # d/d k
        ]
        return out, np.stack([np.broadcast_to(r, out.shape) for r in rows])

    def theta_bounds(self):
        head = [self._e_bounds()] + ([self._l0_bounds()] if self._fits_l0 else [])
        return [*head, (-60.0, 120.0), (1e-3, 3.0), (0.05, 5.0)]

    def theta_grid(self):
        log_beta = np.arange(-10.0, 70.0, 8.0)
        c = np.array([0.05, 0.15, 0.35, 0.7])
        k = np.array([0.5, 1.0, 2.0])
        rows = itertools.product(self._grid_e_l0(), log_beta, c, k)
        return np.array([(*head, *rest) for head, *rest in rows])


@dataclass(frozen=True, kw_only=True)
class BoundedNDLaw(_Bounded):
    """L(N, D) = E + (L0 − E)·h/(1 + h), h = a·N^-alpha + b·D^-beta (Bryant & Liu 2026)."""

    name: ClassVar[str] = "bounded_nd"
    a: float = math.nan
    b: float = math.nan
    alpha: float = math.nan
    beta: float = math.nan

    @property
    def variables(self) -> tuple[str, ...]:
        return ("n_params", "tokens")

    @property
    def param_names(self) -> tuple[str, ...]:
        rest = ("a", "b", "alpha", "beta")
        return ("E", "L0", *rest) if self._fits_l0 else ("E", *rest)

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"E", "L0", "a", "b"})

    def formula(self) -> str:
        l0 = "{L0}" if self._fits_l0 else f"{self.plateau:.4g}"
        return f"{{E}} + ({l0} − {{E}})·h/(1 + h), h = {{a}}·N^-{{alpha}} + {{b}}·D^-{{beta}}"

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        e, l0 = self._e_l0(theta)
        i = 2 if self._fits_l0 else 1
        la, lb, alpha, beta = (theta[..., j, None] for j in range(i, i + 4))
        terms = np.stack(np.broadcast_arrays(la - alpha * z[0], lb - beta * z[1]))
        log_h = lse(terms)
        s = _sigmoid(log_h)
        gap = l0 - e
        loss = e + gap * s
        out = np.log(loss)
        if not jac:
            return out
        w = np.exp(terms - log_h)
        ds = gap * s * (1.0 - s) / loss  # d log L / d log h
        rows = [e * (1.0 - s) / loss]
        if self._fits_l0:
            rows.append(l0 * s / loss)
        rows += [ds * w[0], ds * w[1], -ds * w[0] * z[0], -ds * w[1] * z[1]]
        return out, np.stack([np.broadcast_to(r, out.shape) for r in rows])

    def theta_bounds(self):
        head = [self._e_bounds()] + ([self._l0_bounds()] if self._fits_l0 else [])
        coef = (-30.0, 80.0)
        return [*head, coef, coef, (0.0, 3.0), (0.0, 3.0)]

    def theta_grid(self):
        coef = np.arange(0.0, 30.0, 7.5)
        exps = np.array([0.1, 0.3, 0.6, 1.2])
        rows = itertools.product(self._grid_e_l0(), coef, coef, exps, exps)
        return np.array([(*head, *rest) for head, *rest in rows])

    def allocation_exponents(self):
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def optimal_allocation(self, compute):
        # The loss rises with h, so the optimum minimises h = a·N^-α + b·D^-β at 6·N·D = C:
        # Chinchilla's closed form with A = a, B = b.
        terms = Chinchilla(A=self.a, B=self.b, E=1.0, alpha=self.alpha, beta=self.beta)
        return terms.optimal_allocation(compute)

    def asymptote(self) -> float:
        return float(self.E)
