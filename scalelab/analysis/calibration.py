"""Calibrated forecast intervals: the bootstrap combined with a form-error term per decade.

A bootstrap interval covers the fitted law's parameter noise and the scatter of runs, not the
error of the law's form, which grows with the distance of the extrapolation: on published
ladders nominal 90% bootstrap intervals covered about half of the runs 10x or more beyond
the fit (issue 12). The form-error term is measured on the forecasting benchmark
(``analysis/forecast_benchmark.py``) as a split-conformal correction (Vovk et al. 2005;
Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction") whose
exchangeable unit is a **ladder**, not a forecast:

- each benchmark forecast i, made ``d_i`` decades of compute beyond its fit with log error
  ``e_i`` and bootstrap log half-width ``b_i`` on the side of the error, needed the per-decade
  form error ``sqrt(max(e_i² − b_i², 0)) / d_i`` to be covered;
- a ladder's score is the largest of its forecasts' (at any distance): the term that would
  have covered all of them;
- a new forecast ``d`` decades out takes ``k``, the conformal quantile of the ladders'
  scores, and its log half-widths become ``sqrt(b² + (k·d)²)`` on each side.

Why ladders: forecasts of one ladder share its corpus, tokenizer and recipe, so their errors
move together; a quantile over forecasts is set by the many forecasts of well-behaved ladders
and covered 76% of held-out ladders' runs (leave one ladder out) where 90% was asked. A new
ladder is exchangeable with the benchmark's ladders, and the quantile over them covered 88%.
A forecast inside the fitted range (d ≤ 0) keeps its bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Decades of extrapolation grouping forecasts in reports: 10x, 30x, 100x, 1000x and beyond.
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
    """Per-decade form-error scores of one form (or of ``auto``): one per benchmark ladder."""

    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.scores:
            raise ValueError("no benchmark scores to calibrate with")

    def per_decade(self, decades: float, level: float) -> float:
        """k: the per-decade term for a forecast ``decades`` out at ``level``."""
        return 0.0 if decades <= 0 else conformal_quantile(self.scores, level)

    def widen(
        self, value: Any, lo: Any, hi: Any, decades: Any, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The interval [lo, hi] around ``value`` combined with the form-error term."""
        value, lo, hi, decades = np.broadcast_arrays(
            *(np.asarray(a, dtype=float) for a in (value, lo, hi, decades))
        )
        form = self.per_decade(1.0, level) * np.maximum(decades, 0.0)
        down = np.hypot(np.log(value / lo), form)
        up = np.hypot(np.log(hi / value), form)
        return value * np.exp(-down), value * np.exp(up)

    def to_dict(self) -> dict[str, Any]:
        return {"unit": "ladder", "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FormError:
        if payload.get("unit") != "ladder":
            raise ValueError(
                "fit record holds a per-forecast form-error table from an older version: "
                "refit with scalelab fit"
            )
        return cls(tuple(float(v) for v in payload["scores"]))

    @classmethod
    def from_forecasts(
        cls,
        log_errors: Sequence[float],
        half_widths: Sequence[float],
        decades: Sequence[float],
        ladders: Sequence[str],
    ) -> FormError:
        """Scores of benchmark forecasts: their log errors (log actual − log predicted), the
        bootstrap log half-width on the side of each error, their decades and their ladders;
        each ladder scores the largest per-decade term one of its forecasts needed."""
        worst: dict[str, float] = {}
        for e, b, d, ladder in zip(log_errors, half_widths, decades, ladders, strict=True):
            if d > 0:
                score = round(needed_per_decade(e, b, d), 6)
                worst[ladder] = max(worst.get(ladder, 0.0), score)
        return cls(tuple(sorted(worst.values())))


def stored_form_error(form: str) -> FormError | None:
    """The benchmark's form-error scores for ``form`` (a form name or ``auto``), if measured."""
    from scalelab.analysis.chooser import stored_payload

    table = stored_payload().get("form_error", {})
    return FormError.from_dict(table[form]) if form in table else None
