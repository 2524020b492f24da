"""Calibrated forecast intervals: the bootstrap combined with a form-error term per decade.

A bootstrap interval covers the fitted law's parameter noise and the scatter of runs, not the
error of the law's form, which grows with the distance of the extrapolation: on published
ladders nominal 90% bootstrap intervals covered about half of the runs 10x or more beyond
the fit (issue 12). The form-error term is measured on the forecasting benchmark
(``analysis/forecast_benchmark.py``) as a split-conformal correction (Vovk et al. 2005;
Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction"):

- each benchmark forecast i, made ``d_i`` decades of compute beyond its fit with log error
  ``e_i`` and bootstrap log half-width ``b_i`` on the side of the error, scores
  ``s_i = sqrt(max(e_i² − b_i², 0)) / d_i``, the per-decade form error it needed to be
  covered;
- a new forecast ``d`` decades out takes ``k``, the conformal quantile of the scores of the
  benchmark forecasts in its distance bin, and its log half-widths become
  ``sqrt(b² + (k·d)²)`` on each side.

The scores are grouped by distance (``BIN_EDGES``), since the form error per decade need not
be constant; a forecast inside the fitted range (d ≤ 0) keeps its bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Decades of extrapolation grouping the scores: 10x, 30x, 100x, 1000x and beyond.
BIN_EDGES: tuple[float, ...] = (1.25, 1.75, 2.5)
BIN_LABELS: tuple[str, ...] = ("10x", "30x", "100x", "1000x")


def distance_bin(decades: float) -> int:
    """Index of the bin of a forecast ``decades`` beyond its fit."""
    return int(np.searchsorted(BIN_EDGES, decades, side="right"))


def needed_per_decade(log_error: float, half_width: float, decades: float) -> float:
    """The per-decade form error a forecast needed to be covered (its conformal score)."""
    if decades <= 0:
        return 0.0
    return math.sqrt(max(log_error**2 - half_width**2, 0.0)) / decades


def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest score (split conformal; the largest if n is too small)."""
    s = np.sort(np.asarray(scores, dtype=float))
    if len(s) == 0:
        raise ValueError("no benchmark scores to calibrate with")
    rank = math.ceil((len(s) + 1) * level)
    return float(s[min(rank, len(s)) - 1])


@dataclass(frozen=True)
class FormError:
    """Per-decade form-error scores of one form (or of ``auto``), by distance bin."""

    scores: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.scores) != len(BIN_LABELS):
            raise ValueError(f"need scores for {len(BIN_LABELS)} bins; got {len(self.scores)}")

    def per_decade(self, decades: float, level: float) -> float:
        """k: the per-decade term for a forecast ``decades`` out at ``level``.

        A bin without scores borrows the nearest shorter bin's (or the next longer one's).
        """
        if decades <= 0:
            return 0.0
        index = distance_bin(decades)
        order = [*range(index, -1, -1), *range(index + 1, len(self.scores))]
        for i in order:
            if self.scores[i]:
                return conformal_quantile(self.scores[i], level)
        raise ValueError("no benchmark scores to calibrate with")

    def widen(
        self, value: Any, lo: Any, hi: Any, decades: Any, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The interval [lo, hi] around ``value`` combined with the form-error term."""
        value, lo, hi, decades = np.broadcast_arrays(
            *(np.asarray(a, dtype=float) for a in (value, lo, hi, decades))
        )
        k = np.vectorize(lambda d: self.per_decade(float(d), level))(decades)
        form = k * np.maximum(decades, 0.0)
        down = np.hypot(np.log(value / lo), form)
        up = np.hypot(np.log(hi / value), form)
        return value * np.exp(-down), value * np.exp(up)

    def to_dict(self) -> dict[str, Any]:
        return {"bins": list(BIN_LABELS), "scores": [list(s) for s in self.scores]}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FormError:
        return cls(tuple(tuple(float(v) for v in s) for s in payload["scores"]))

    @classmethod
    def from_forecasts(
        cls, log_errors: Sequence[float], half_widths: Sequence[float], decades: Sequence[float]
    ) -> FormError:
        """Scores of benchmark forecasts: their log errors (log actual − log predicted), the
        bootstrap log half-width on the side of each error, and their decades."""
        bins: list[list[float]] = [[] for _ in BIN_LABELS]
        for e, b, d in zip(log_errors, half_widths, decades, strict=True):
            if d > 0:
                bins[distance_bin(d)].append(round(needed_per_decade(e, b, d), 6))
        return cls(tuple(tuple(sorted(b)) for b in bins))


def stored_form_error(form: str) -> FormError | None:
    """The benchmark's form-error scores for ``form`` (a form name or ``auto``), if measured."""
    from scalelab.analysis.chooser import stored_payload

    table = stored_payload().get("form_error", {})
    return FormError.from_dict(table[form]) if form in table else None
