"""Predictions with intervals, and percentile intervals from bootstrap samples."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

IntervalKind = Literal["prediction", "confidence"]
DEFAULT_LEVEL = 0.9


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1); got {level}")
    return level


def quantile_interval(
    samples: np.ndarray, level: float = DEFAULT_LEVEL, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Central percentile interval over ``axis``.

    Infinite samples (e.g. a compute that no budget reaches) are kept: the interval is then
    taken from order statistics so that it can say ``inf`` rather than NaN.
    """
    level = check_level(level)
    samples = np.asarray(samples, dtype=float)
    if samples.shape[axis] == 0:
        raise ValueError("no bootstrap samples to build an interval from")
    if np.isnan(samples).any():
        raise ValueError("bootstrap samples contain NaN")
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    method = "linear" if np.isfinite(samples).all() else "inverted_cdf"
    lo, hi = np.quantile(samples, q, axis=axis, method=method)
    return lo, hi


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else str(x)  # JSON has no inf; "inf" round-trips
    if isinstance(x, np.integer):
        return int(x)
    return x


def _unjson(x: Any) -> Any:
    if isinstance(x, list):
        return np.array([float(v) for v in x])
    if isinstance(x, str):
        return float(x)
    return x


@dataclass(frozen=True)
class Prediction:
    """A point value with its ``level`` interval [lo, hi].

    ``kind="prediction"`` intervals include the scatter of single runs around the law (the
    fit's residuals), so they are meant to cover the loss of one planned run;
    ``kind="confidence"`` intervals cover the law itself (parameter uncertainty only).
    Arrays when the inputs were arrays, floats for scalar inputs.
    """

    value: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray
    level: float
    quantity: str = "loss"
    kind: IntervalKind = "prediction"
    inputs: dict[str, Any] = field(default_factory=dict)

    def covers(self, truth: Any) -> bool | np.ndarray:
        """Whether ``truth`` lies in [lo, hi] (element-wise for arrays)."""
        t = np.asarray(truth, dtype=float)
        out = (self.lo <= t) & (t <= self.hi)
        return bool(out) if np.ndim(out) == 0 else out

    def to_frame(self) -> pd.DataFrame:
        """One row per predicted point: the inputs, the value, lo, hi and level."""
        names = [*self.inputs, self.quantity, "lo", "hi"]
        values = [*self.inputs.values(), self.value, self.lo, self.hi]
        arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(v, dtype=float)) for v in values])
        df = pd.DataFrame({n: a.ravel() for n, a in zip(names, arrays, strict=True)})
        df["level"] = self.level
        return df

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "value": _jsonable(self.value),
            "lo": _jsonable(self.lo),
            "hi": _jsonable(self.hi),
            "level": self.level,
            "kind": self.kind,
            "inputs": {k: _jsonable(v) for k, v in self.inputs.items()},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Prediction:
        return cls(
            value=_unjson(payload["value"]),
            lo=_unjson(payload["lo"]),
            hi=_unjson(payload["hi"]),
            level=float(payload["level"]),
            quantity=payload.get("quantity", "loss"),
            kind=payload.get("kind", "prediction"),
            inputs={k: _unjson(v) for k, v in payload.get("inputs", {}).items()},
        )

    def __str__(self) -> str:
        if np.ndim(self.value) == 0:
            return (
                f"{self.quantity} {self.value:.5g} ({self.level:.0%} {self.kind} interval "
                f"{self.lo:.5g} to {self.hi:.5g})"
            )
        return self.to_frame().to_string(index=False)
