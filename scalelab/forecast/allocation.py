"""Compute-optimal allocation: N_opt(C) = G_N·C^a and D_opt(C) = G_D·C^b, with intervals.

All three approaches of Hoffmann et al. (2022) end in these two power laws; they differ in how
the optima are found: the envelope of training curves (Approach 1, ``approaches.envelope_fit``),
the minima of IsoFLOP profiles (Approach 2, ``approaches.isoflop_fit``), or the closed form of a
fitted parametric law (Approach 3, :func:`compute_optimal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scalelab.forecast.intervals import (
    DEFAULT_LEVEL,
    Prediction,
    check_level,
    quantile_interval,
)
from scalelab.forecast.laws import Law
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from scalelab.forecast.bootstrap import BootstrapResult

# Two reference budgets to read a law's allocation exponents and coefficients off exactly.
_C1, _C2 = 1e20, 1e22
SAMPLE_COLUMNS = ("log_n_coef", "a", "log_d_coef", "b")


@dataclass(frozen=True)
class AllocationFit:
    """N_opt(C) = n_coef·C^a and D_opt(C) = d_coef·C^b, with bootstrap samples.

    ``samples`` has columns ``SAMPLE_COLUMNS``; ``points`` holds the optima the power laws were
    fitted to (Approaches 1 and 2).
    """

    approach: str
    n_coef: float
    a: float
    d_coef: float
    b: float
    samples: np.ndarray
    level: float = DEFAULT_LEVEL
    points: pd.DataFrame | None = None
    warnings: tuple[str, ...] = ()

    def summary(self, level: float | None = None) -> pd.DataFrame:
        """Estimate and interval of a, b, n_coef and d_coef."""
        level = self.level if level is None else check_level(level)
        lo, hi = quantile_interval(self.samples, level)
        rows = {
            "a": (self.a, lo[1], hi[1]),
            "b": (self.b, lo[3], hi[3]),
            "n_coef": (self.n_coef, math.exp(lo[0]), math.exp(hi[0])),
            "d_coef": (self.d_coef, math.exp(lo[2]), math.exp(hi[2])),
        }
        df = pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "lo", "hi"])
        df["level"] = level
        return df

    def _predict(self, quantity: str, compute: Any, level: float | None) -> Prediction:
        level = self.level if level is None else check_level(level)
        c = np.asarray(compute, dtype=float)
        if not np.all(np.isfinite(c)) or np.any(c <= 0):
            raise ValueError(f"compute must be positive and finite; got {c}")
        lc = np.log(np.atleast_1d(c)).ravel()
        s = self.samples
        point = np.array([math.log(self.n_coef), self.a, math.log(self.d_coef), self.b])
        both = np.vstack([point, s])
        log_n = both[:, 0, None] + both[:, 1, None] * lc
        log_d = both[:, 2, None] + both[:, 3, None] * lc
        values = {"n_params": log_n, "tokens": log_d, "tokens_per_param": log_d - log_n}[quantity]
        values = np.exp(values)
        lo, hi = quantile_interval(values[1:], level)
        if np.ndim(c) == 0:
            return Prediction(
                float(values[0, 0]),
                float(lo[0]),
                float(hi[0]),
                level=level,
                quantity=quantity,
                kind="confidence",
                inputs={"compute": float(c)},
            )
        shape = c.shape
        return Prediction(
            values[0].reshape(shape),
            lo.reshape(shape),
            hi.reshape(shape),
            level=level,
            quantity=quantity,
            kind="confidence",
            inputs={"compute": c},
        )

    def n_opt(self, compute: Any, *, level: float | None = None) -> Prediction:
        """Compute-optimal parameters N_opt(C)."""
        return self._predict("n_params", compute, level)

    def tokens_opt(self, compute: Any, *, level: float | None = None) -> Prediction:
        """Compute-optimal tokens D_opt(C)."""
        return self._predict("tokens", compute, level)

    def tokens_per_param(self, compute: Any, *, level: float | None = None) -> Prediction:
        """D_opt(C)/N_opt(C), the tokens-per-parameter ratio (about 20 in Hoffmann et al.)."""
        return self._predict("tokens_per_param", compute, level)

    def at(self, compute: Any, *, level: float | None = None) -> pd.DataFrame:
        """A table of N_opt, D_opt and D/N with intervals at the given budgets."""
        c = np.atleast_1d(np.asarray(compute, dtype=float))
        df = pd.DataFrame({"compute": c})
        for name, fn in (
            ("n_params", self.n_opt),
            ("tokens", self.tokens_opt),
            ("tokens_per_param", self.tokens_per_param),
        ):
            p = fn(c, level=level)
            df[name], df[f"{name}_lo"], df[f"{name}_hi"] = p.value, p.lo, p.hi
        return df

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"{self.approach}: N_opt(C) = {self.n_coef:.4g}·C^{self.a:.4f} "
            f"(a {s.level.iloc[0]:.0%} interval {s.loc['a', 'lo']:.4f} to {s.loc['a', 'hi']:.4f}), "
            f"D_opt(C) = {self.d_coef:.4g}·C^{self.b:.4f} "
            f"(b interval {s.loc['b', 'lo']:.4f} to {s.loc['b', 'hi']:.4f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "approach": self.approach,
            "n_coef": self.n_coef,
            "a": self.a,
            "d_coef": self.d_coef,
            "b": self.b,
            "samples": self.samples.tolist(),
            "level": self.level,
            "points": None if self.points is None else self.points.to_dict(orient="list"),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> AllocationFit:
        data = dict(payload)
        points = data.pop("points", None)
        return cls(
            samples=np.array(data.pop("samples"), dtype=float).reshape(-1, 4),
            points=None if points is None else pd.DataFrame(points),
            warnings=tuple(data.pop("warnings", ())),
            **data,
        )


def power_fit(log_c: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Least-squares log y = log coef + slope·log C; returns (log coef, slope)."""
    if len(np.unique(log_c)) < 2:
        raise ValueError("need optima at two or more distinct compute budgets")
    slope, intercept = np.polyfit(log_c, log_y, 1)
    return float(intercept), float(slope)


def law_allocation(law: Law) -> tuple[float, float, float, float]:
    """(log n_coef, a, log d_coef, b) of a law's compute-optimal allocation."""
    n1, d1 = (float(v) for v in law.optimal_allocation(_C1))
    n2, d2 = (float(v) for v in law.optimal_allocation(_C2))
    span = math.log(_C2 / _C1)
    a = math.log(n2 / n1) / span
    b = math.log(d2 / d1) / span
    return math.log(n1) - a * math.log(_C1), a, math.log(d1) - b * math.log(_C1), b


def compute_optimal(result: BootstrapResult, *, level: float | None = None) -> AllocationFit:
    """Approach 3: the closed-form allocation of a fitted law of N and D, with intervals.

    For Chinchilla, N_opt(C) = G·(C/6)^a and D_opt(C) = G^-1·(C/6)^b with a = β/(α+β),
    b = α/(α+β), G = (αA/(βB))^(1/(α+β)) (Hoffmann et al. 2022, eq. 4); the interval comes
    from the bootstrap samples of (α, β, A, B).
    """
    law = result.fit.law
    if law.variables != ("n_params", "tokens"):
        raise ValueError(
            f"compute-optimal allocation needs a law of N and D; got {law.name} "
            f"in {', '.join(law.variables)}"
        )
    log_n, a, log_d, b = law_allocation(law)
    samples = np.array([law_allocation(s) for s in result.sample_laws()])
    return AllocationFit(
        approach="parametric",
        n_coef=math.exp(log_n),
        a=a,
        d_coef=math.exp(log_d),
        b=b,
        samples=samples,
        level=result.level if level is None else check_level(level),
        warnings=result.warnings,
    )
