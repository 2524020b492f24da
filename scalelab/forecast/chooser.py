"""``--law auto``: the default the forecasting benchmark chose, applied to the runs.

Which form extrapolates best depends on the ladder, and a ladder's own backtest cannot tell
the forms apart. So the default is chosen on a benchmark of published ladders
(``scalelab benchmark forecasts``, ``analysis/forecast-benchmark.md``), scored
leave-one-source-out, never on the ladder being forecast: among every single form, every
average of forms, and a rule learned from features of the runs a fit would see,

- ``n_frontier``: how many compute levels the frontier has (a budget's best run, or the
  lower envelope of loss against compute);
- ``span``: how many decades of compute the frontier spans;
- ``curvature``: the quadratic coefficient of log L against log10 C on the frontier
  (negative: the slope steepens, the plateau bend; positive: it flattens towards a floor);
- ``slope``: the frontier's log-log slope at its largest compute, from the same quadratic.

The choice is data (:data:`RULE_PATH`, written by the benchmark, shipped as package data): one
form (or average), or a threshold on one feature with a form on each side, and a fallback for
a form that cannot be fitted to the runs (Chinchilla needs two distinct N and D; checkpoints
need curves; a frontier form needs :data:`MIN_FRONTIER` points, as every benchmark fit had).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.forecast.forms import FORMS, Form, frontier_points
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

# Package data: read through importlib.resources (an installed wheel has no source tree);
# the benchmark, run from a clone, rewrites the file at this path.
RULE_FILE = "forecast_rule.json"
RULE_PATH = Path(__file__).with_name(RULE_FILE)
FEATURES: tuple[str, ...] = ("n_frontier", "span", "curvature", "slope")
# A frontier form's fit needs this many points (three parameters plus one); the benchmark
# forecasts only from training sets that have them, so the rule knows nothing below it.
MIN_FRONTIER = 4
# What a frontier too short for the rule's form falls back to when N and D both vary: a law
# of every run, not of the few budgets' best runs.
SHORT_FRONTIER_FORM = "chinchilla_no_e"


def ladder_features(runs: pd.DataFrame) -> dict[str, float]:
    """The features the rule reads, from the runs a fit would see (``compute``, ``loss``)."""
    front = frontier_points(runs)
    x = np.log10(front["compute"].to_numpy(dtype=float))
    y = np.log(front["loss"].to_numpy(dtype=float))
    out = {
        "n_frontier": float(len(front)),
        "span": float(x.max() - x.min()) if len(x) else 0.0,
        "curvature": math.nan,
        "slope": math.nan,
    }
    if len(x) >= 3 and out["span"] > 0:
        c2, c1, _ = np.polyfit(x - x.max(), y, 2)
        # At x = max the derivative of c2·u² + c1·u + c0 (u = x − max) is c1.
        out["curvature"], out["slope"] = float(c2), float(c1 / math.log(10))
    return out


@dataclass(frozen=True)
class Rule:
    """``form`` always, or ``below`` when ``feature < threshold`` else ``above``; a form
    that cannot be fitted falls back to ``fallback``."""

    form: str | None = None
    feature: str | None = None
    threshold: float = math.nan
    below: str | None = None
    above: str | None = None
    fallback: str = "compute_no_e"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        named = [self.form] if self.form else [self.below, self.above]
        for name in [*named, self.fallback]:
            if name not in FORMS:
                raise ValueError(f"rule names unknown form {name!r}; forms: {', '.join(FORMS)}")
        if self.form is None and self.feature not in FEATURES:
            raise ValueError(f"rule needs a form, or a feature of {FEATURES}")

    def pick(self, features: Mapping[str, float]) -> tuple[str, str]:
        """(form name, why) for a ladder with these features."""
        if self.form is not None:
            return self.form, "the forecasting benchmark's default"
        value = float(features.get(self.feature, math.nan))  # type: ignore[arg-type]
        if math.isfinite(value) and value < self.threshold:
            return self.below, f"{self.feature} {value:.3g} < {self.threshold:.3g}"  # type: ignore[return-value]
        return self.above, f"{self.feature} {value:.3g} ≥ {self.threshold:.3g}"  # type: ignore[return-value]

    def describe(self) -> str:
        if self.form is not None:
            return f"always {self.form}"
        return (
            f"{self.below} if {self.feature} < {self.threshold:.3g}, else {self.above}"
            f" (fallback {self.fallback})"
        )

    def to_dict(self) -> dict[str, Any]:
        keys = ("form", "feature", "threshold", "below", "above", "fallback")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["threshold"] = None if math.isnan(self.threshold) else self.threshold
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], meta: dict[str, Any] | None = None) -> Rule:
        threshold = payload.get("threshold")
        return cls(
            form=payload.get("form"),
            feature=payload.get("feature"),
            threshold=math.nan if threshold is None else float(threshold),
            below=payload.get("below"),
            above=payload.get("above"),
            fallback=payload.get("fallback", "compute_no_e"),
            meta=meta or {},
        )


@lru_cache(maxsize=1)
def stored_payload() -> dict[str, Any]:
    """The benchmark's record (:data:`RULE_PATH`): the rule, the form errors, provenance."""
    return json.loads(resources.files("scalelab.forecast").joinpath(RULE_FILE).read_text())


def stored_rule() -> Rule:
    payload = stored_payload()
    return Rule.from_dict(payload["rule"], meta={k: payload.get(k) for k in ("command", "ladders")})


@dataclass(frozen=True)
class Choice:
    """The form ``auto`` chose, why, and the features it saw."""

    form: Form
    reason: str
    features: dict[str, float]
    rule: str

    def line(self) -> str:
        """One line for the user: which law and why."""
        return f"law auto: {self.form.name} ({self.form.summary}), because {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form.name,
            "law_key": self.form.name,
            "points": self.form.points,
            "exclude_before": self.form.exclude_before,
            "reason": self.reason,
            "features": {k: (v if math.isfinite(v) else None) for k, v in self.features.items()},
            "rule": self.rule,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Choice:
        features = {k: math.nan if v is None else float(v) for k, v in payload["features"].items()}
        return cls(FORMS[payload["form"]], payload["reason"], features, payload.get("rule", ""))


def choose_form(
    runs: pd.DataFrame,
    *,
    has_curves: bool = False,
    can_fit_nd: bool | None = None,
    rule: Rule | None = None,
) -> Choice:
    """The form ``rule`` (default: the stored one) picks for ``runs``.

    ``has_curves``: whether intermediate checkpoints exist (else a checkpoint form falls
    back); ``can_fit_nd``: whether N and D each take two or more values (else a law of N and
    D falls back); inferred from ``runs`` when None.
    """
    rule = rule or stored_rule()
    features = ladder_features(runs)
    name, why = rule.pick(features)
    if can_fit_nd is None:
        can_fit_nd = all(c in runs and runs[c].nunique() > 1 for c in ("n_params", "tokens"))

    def unfit(form: Form) -> str:
        """Why ``form`` cannot be fitted to these runs ("" if it can)."""
        if form.members:  # an average fits with the members that can be fitted
            why = [unfit(FORMS[m]) for m in form.members]
            return "" if not all(why) else f"no member can be fitted ({why[0]})"
        if form.exclude_before is not None and not has_curves:
            return "the runs have no training curves"
        if form.points == "all" and not can_fit_nd:
            return "N or D takes a single value"
        if form.points == "frontier" and features["n_frontier"] < MIN_FRONTIER:
            return (
                f"the frontier has {features['n_frontier']:.0f} points"
                f" (a frontier form needs {MIN_FRONTIER})"
            )
        return ""

    form = FORMS[name]
    missing = unfit(form)
    if missing:
        # The rule's fallback, else a law of every run; if neither can be fitted, no form the
        # benchmark scored has runs like these to forecast from.
        options = (rule.fallback, SHORT_FRONTIER_FORM)
        fallback = next((o for o in options if not unfit(FORMS[o])), None)
        if fallback is None:
            lacks = "; ".join(f"{o}: {unfit(FORMS[o])}" for o in options)
            raise ValueError(
                f"law auto cannot forecast from these runs: {name}: {missing}; {lacks}. Add "
                f"budgets (a frontier form needs {MIN_FRONTIER}) or vary N and D, or name a law"
            )
        why = f"{why}, but {missing}: fell back to {fallback}"
        form = FORMS[fallback]
    reason = (
        f"{why} (rule: {rule.describe()}; scored leave-one-source-out on published ladders, "
        "analysis/forecast-benchmark.md)"
    )
    return Choice(form, reason, features, rule.describe())
