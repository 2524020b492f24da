"""The geometric mean of several fitted laws: model averaging as a law.

On the forecasting benchmark no single form extrapolates best on every ladder, and the forms'
errors are far from perfectly correlated, so the mean of their log predictions errs less far
out than any one of them (``analysis/forecast-benchmark.md``). :class:`AverageLaw` holds its
members' templates and parameters side by side (``"<i>.<param>"``), so a bootstrap of the
average is its members' bootstrap samples side by side and every answer (loss, compute for a
loss, intervals) goes through the same code as a single law's. It is fitted member by member
(``scalelab.forecast.averaging``), never by ``fit_law``.

A member of N and D inside an average of C answers at C with its compute-optimal model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from scalelab.forecast.laws import Law
from scalelab.lazy_imports import lazy_module

optimize = lazy_module("scipy.optimize")


def _template(law: Law) -> dict[str, Any]:
    """``law.to_dict()`` without its parameter values."""
    payload = law.to_dict()
    return {**payload, "params": dict.fromkeys(payload["params"])}


def _log_loss_at_compute(law: Law, compute: np.ndarray) -> np.ndarray:
    """log of a law of N and D at its compute-optimal allocation, kept inside 1 ≤ N ≤ C/6: a
    bootstrap sample with a coefficient at its bound allocates everything to one input (e.g.
    N_opt = 0), whose limit is the loss at the edge."""
    with np.errstate(all="ignore"):
        n, _ = law.optimal_allocation(compute)
    k = compute / 6.0
    n = np.where(np.isfinite(n), np.clip(n, 1.0, k), np.sqrt(k))
    return np.log(np.atleast_1d(law.predict(n_params=n, tokens=k / n)))


_NOT_FITTED_BY_FIT_LAW = (
    "an average is fitted member by member (scalelab.forecast.averaging.fit_average)"
)


@dataclass(frozen=True, kw_only=True)
class AverageLaw(Law):
    """exp(mean of log member laws): ``members`` are the members' templates (JSON of
    ``Law.to_dict``), ``values`` every member's parameters in order."""

    name: ClassVar[str] = "average"
    irreducible: bool = False
    members: tuple[str, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an average needs at least one member law")
        if self.values and len(self.values) != len(self.param_names):
            raise ValueError(
                f"average of {len(self.templates)} laws has {len(self.param_names)} "
                f"parameters; got {len(self.values)} values"
            )

    @cached_property
    def templates(self) -> tuple[Law, ...]:
        return tuple(Law.from_dict(json.loads(m)) for m in self.members)

    @classmethod
    def of(cls, laws: list[Law]) -> AverageLaw:
        """The average of fitted ``laws``."""
        members = tuple(json.dumps(_template(law)) for law in laws)
        values = tuple(v for law in laws for v in law.params.values())
        return cls(members=members, values=values)

    def fitted_members(self) -> list[Law]:
        out, i = [], 0
        for law in self.templates:
            k = len(law.param_names)
            out.append(
                law.with_params(**dict(zip(law.param_names, self.values[i : i + k], strict=True)))
            )
            i += k
        return out

    # ---- what a law declares ----------------------------------------------------------------
    @property
    def variables(self) -> tuple[str, ...]:
        if all(law.variables == ("n_params", "tokens") for law in self.templates):
            return ("n_params", "tokens")
        return ("compute",)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"{i}.{p}" for i, law in enumerate(self.templates) for p in law.param_names)

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset(
            f"{i}.{p}"
            for i, law in enumerate(self.templates)
            for p in law.param_names
            if p in law.log_params
        )

    @property
    def params(self) -> dict[str, float]:
        values = self.values or (math.nan,) * len(self.param_names)
        return dict(zip(self.param_names, (float(v) for v in values), strict=True))

    @property
    def config(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def with_theta(self, theta: np.ndarray) -> Law:
        values = [
            math.exp(t) if p in self.log_params else float(t)
            for p, t in zip(self.param_names, np.asarray(theta, dtype=float), strict=True)
        ]
        return replace(self, values=tuple(values))

    def with_params(self, **values: float) -> Law:
        unknown = set(values) - set(self.param_names)
        if unknown:
            raise ValueError(f"the average has no parameter(s) {sorted(unknown)}")
        merged = {**self.params, **{k: float(v) for k, v in values.items()}}
        return replace(self, values=tuple(merged[p] for p in self.param_names))

    @classmethod
    def from_parts(cls, config: Mapping[str, Any], params: Mapping[str, float]) -> Law:
        law = cls(members=tuple(config["members"]))
        known = any(math.isfinite(v) for v in params.values())
        return law.with_params(**params) if known else law  # a template has no values

    def log_model(self, theta, z, jac=False):
        if jac:
            raise NotImplementedError(_NOT_FITTED_BY_FIT_LAW)
        theta = np.asarray(theta, dtype=float)
        rows = np.atleast_2d(theta)
        total, i = 0.0, 0
        for law in self.templates:
            k = len(law.param_names)
            part = rows[:, i : i + k]
            i += k
            if law.variables == self.variables:
                total = total + law.log_model(part, z)
                continue
            # A law of N and D in an average of C: its compute-optimal loss at C.
            compute = np.exp(z[0])
            total = total + np.array(
                [_log_loss_at_compute(law.with_theta(t), compute) for t in part]
            )
        out = total / len(self.templates)
        return out if theta.ndim == 2 else out[0]

    def theta_bounds(self):
        raise NotImplementedError(_NOT_FITTED_BY_FIT_LAW)

    def theta_grid(self):
        raise NotImplementedError(_NOT_FITTED_BY_FIT_LAW)

    def formula(self) -> str:
        return "geometric mean of " + "; ".join(law.formula() for law in self.templates)

    def optimal_allocation(self, compute: Any) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising the averaged loss at C = 6·N·D (an average of laws of N
        and D only). Its log is the mean of the members' log losses, each convex in log N
        at fixed C (a log-sum-exp of affine terms), so one bounded 1-D search finds it."""
        if self.variables != ("n_params", "tokens"):
            return super().optimal_allocation(compute)
        c = np.atleast_1d(np.asarray(compute, dtype=float))
        n_opt = np.empty(c.size)
        for i, k in enumerate(c.ravel() / 6.0):

            def log_loss(log_n: float, k: float = k) -> float:
                n = math.exp(log_n)
                return float(self.log_model(self.to_theta(), np.log([[n], [k / n]]))[0])

            # Search log N within 60 e-folds of N = D: wide enough for any allocation.
            middle = math.log(k) / 2.0
            found = optimize.minimize_scalar(
                log_loss,
                bounds=(middle - 60.0, middle + 60.0),
                method="bounded",
                options={"xatol": 1e-7},
            )
            n_opt[i] = math.exp(found.x)
        n_opt = n_opt.reshape(np.shape(compute))
        return n_opt, np.asarray(compute, dtype=float) / 6.0 / n_opt

    def asymptote(self) -> float:
        floors = [law.asymptote() for law in self.fitted_members()]
        return 0.0 if min(floors) <= 0 else float(np.exp(np.mean(np.log(floors))))

    def __str__(self) -> str:
        if not self.is_fitted:
            return f"average (unfitted) of {', '.join(law.name for law in self.templates)}"
        inner = "; ".join(str(law) for law in self.fitted_members())
        return f"average: L = geometric mean of [{inner}]"
