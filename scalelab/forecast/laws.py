"""Scaling-law forms: named parameters, a pure vectorised ``predict``, and what the fitter needs.

Every law is a frozen dataclass. Its *configuration* (which variable, whether it has an
irreducible term) is set when it is created; its *parameters* default to NaN, so
``Chinchilla()`` is an unfitted template and ``fit_law`` returns a copy with numbers filled in.

For the fitter each law declares, in terms of an internal vector ``theta``:

- ``theta_names`` and ``theta_bounds()``: coefficients are fitted as logarithms (``A = e^a``),
  the log-sum-exp parametrisation of Hoffmann et al. (2022, App. D.2), which keeps them
  positive and well scaled; exponents are fitted as they are;
- ``theta_grid()``: the default grid of starting points;
- ``log_model(theta, z)``: log L at log inputs ``z`` (shape ``(n_variables, n)``), vectorised
  over a batch of ``theta`` rows, with the analytic Jacobian when ``jac=True``;
- optionally, for variable projection, ``exponent_names``, ``exponent_grid()`` and
  ``basis(exponents, z)``: for fixed exponents the law is linear in its non-negative
  coefficients, whose columns ``basis`` returns.

A new form only needs these members; ``fit_law``, ``bootstrap`` and ``backtest`` stay unchanged.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal

import numpy as np

from scalelab.lazy_imports import lazy_module

optimize = lazy_module("scipy.optimize")

Variable = Literal["n_params", "tokens", "compute"]
VARIABLES: tuple[str, ...] = ("n_params", "tokens", "compute")
SYMBOLS: dict[str, str] = {"n_params": "N", "tokens": "D", "compute": "C"}

# Bounds keep the optimiser in a region where exp() neither overflows nor underflows to 0.
_LOG_COEF_BOUNDS = (-30.0, 80.0)
_EXPONENT_BOUNDS = (0.0, 5.0)
_LOG_E_BOUNDS = (-20.0, 5.0)


# Every Law subclass with a ``name`` of its own registers itself here when it is defined.
LAWS: dict[str, type[Law]] = {}


def lse(terms: np.ndarray) -> np.ndarray:
    """log(sum(exp(terms), axis=0)), stable; faster than scipy's for small leading axes."""
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def _as_positive_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[:3]
        raise ValueError(f"{name} must be positive and finite; got {bad.tolist()}")
    return arr


def _fmt(x: float) -> str:
    return "?" if not np.isfinite(x) else f"{x:.4g}"


@dataclass(frozen=True, kw_only=True)
class Law(ABC):
    """Base class of a scaling law L(inputs) with named parameters.

    ``irreducible`` says whether the form has an irreducible loss E (the loss that no amount of
    parameters or data removes); without it, the law falls to 0 in the limit.
    """

    name: ClassVar[str]
    irreducible: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in LAWS:
                raise TypeError(f"two laws are named {cls.name!r}")
            LAWS[cls.name] = cls

    # ---- what a law declares -------------------------------------------------------------
    @property
    @abstractmethod
    def variables(self) -> tuple[str, ...]:
        """Input columns the law reads, in the order of the rows of ``z``."""

    @property
    @abstractmethod
    def param_names(self) -> tuple[str, ...]:
        """Public parameter names, in the order of ``theta``."""

    @property
    @abstractmethod
    def log_params(self) -> frozenset[str]:
        """Parameters fitted through their logarithm (theta = log value)."""

    @abstractmethod
    def log_model(
        self, theta: np.ndarray, z: np.ndarray, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """log L at log inputs ``z``; ``theta`` of shape (k,) or (m, k).

        Returns shape (n,) or (m, n); with ``jac=True`` (single theta only) also the Jacobian
        of shape (k, n).
        """

    @abstractmethod
    def theta_bounds(self) -> list[tuple[float, float]]:
        """Box bounds on theta for L-BFGS-B."""

    @abstractmethod
    def theta_grid(self) -> np.ndarray:
        """Default starting points, shape (m, k)."""

    @abstractmethod
    def formula(self) -> str:
        """The form with ``{param}`` placeholders, e.g. ``{E} + {A}·N^-{alpha}``."""

    # ---- optional: variable projection ----------------------------------------------------
    exponent_names: ClassVar[tuple[str, ...]] = ()

    @property
    def linear_names(self) -> tuple[str, ...]:
        """Coefficients that enter linearly once the exponents are fixed (order of ``basis``)."""
        return ()

    @property
    def supports_varpro(self) -> bool:
        return bool(self.exponent_names) and bool(self.linear_names)

    def exponent_grid(self) -> np.ndarray:
        """Exponent grid searched by variable projection, shape (m, len(exponent_names))."""
        raise NotImplementedError(f"{self.name} has no variable-projection form")

    def basis(self, exponents: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Columns multiplying ``linear_names``: shape (m, n, q) for exponents of shape (m, p)."""
        raise NotImplementedError(f"{self.name} has no variable-projection form")

    # ---- parameters <-> theta ------------------------------------------------------------
    @property
    def theta_names(self) -> tuple[str, ...]:
        return tuple(f"log_{p}" if p in self.log_params else p for p in self.param_names)

    @property
    def params(self) -> dict[str, float]:
        return {p: float(getattr(self, p)) for p in self.param_names}

    @property
    def is_fitted(self) -> bool:
        return all(np.isfinite(v) for v in self.params.values())

    def to_theta(self) -> np.ndarray:
        return np.array(
            [math.log(v) if p in self.log_params else v for p, v in self.params.items()]
        )

    def with_theta(self, theta: np.ndarray) -> Law:
        """A copy of this law (same configuration) with parameters from ``theta``."""
        values = {
            p: float(np.exp(t)) if p in self.log_params else float(t)
            for p, t in zip(self.param_names, np.asarray(theta, dtype=float), strict=True)
        }
        return replace(self, **values)

    def with_params(self, **values: float) -> Law:
        unknown = set(values) - set(self.param_names)
        if unknown:
            raise ValueError(f"{self.name} has no parameter(s) {sorted(unknown)}")
        return replace(self, **{k: float(v) for k, v in values.items()})

    @property
    def config(self) -> dict[str, Any]:
        """Non-parameter fields (the form's configuration), e.g. ``variable``, ``irreducible``."""
        # Parameter fields are the float-annotated ones (annotations are strings here).
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type != "float"}

    # ---- evaluation ------------------------------------------------------------------------
    def _log_inputs(self, inputs: Mapping[str, Any]) -> tuple[np.ndarray, bool]:
        missing = [v for v in self.variables if inputs.get(v) is None]
        if missing:
            raise ValueError(
                f"{self.name} needs {', '.join(self.variables)}; missing {', '.join(missing)}"
            )
        arrays = [_as_positive_array(v, inputs[v]) for v in self.variables]
        scalar = all(a.ndim == 0 for a in arrays)
        arrays = np.broadcast_arrays(*[np.atleast_1d(a) for a in arrays])
        return np.log(np.stack([a.ravel() for a in arrays])), scalar

    def predict(self, **inputs: Any) -> np.ndarray | float:
        """The loss at the given inputs (arrays broadcast); a float for scalar inputs.

        Pure and vectorised: ``law.predict(n_params=[1e8, 1e9], tokens=2e10)``.
        """
        if not self.is_fitted:
            raise ValueError(f"{self.name} has unfitted parameters: {self.params}")
        z, scalar = self._log_inputs(inputs)
        shape = np.broadcast_shapes(*[np.shape(inputs[v]) for v in self.variables])
        out = np.exp(self.log_model(self.to_theta(), z)).reshape(shape)
        return float(out) if scalar else out

    def asymptote(self) -> float:
        """The loss as every input grows without bound (E, or 0 without an irreducible term)."""
        return float(getattr(self, "E", 0.0)) if self.irreducible else 0.0

    # ---- compute-optimal allocation (laws of N and D) ----------------------------------------
    def allocation_exponents(self) -> tuple[float, float]:
        """(a, b) with N_opt ∝ C^a and D_opt ∝ C^b."""
        raise ValueError(f"{self.name} in {self.variables} has no compute-optimal allocation")

    def optimal_allocation(self, compute: Any) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising the loss at compute C = 6·N·D."""
        raise ValueError(f"{self.name} in {self.variables} has no compute-optimal allocation")

    def loss_at_compute(self, compute: Any) -> np.ndarray | float:
        """Loss of the compute-optimal model (or of the law in C) at compute C."""
        if self.variables == ("compute",):
            return self.predict(compute=compute)
        n, d = self.optimal_allocation(compute)
        out = self.predict(n_params=n, tokens=d)
        return float(out) if np.ndim(compute) == 0 else out

    def compute_for_loss(self, target: float) -> float:
        """Smallest compute C whose (compute-optimal) loss reaches ``target``.

        Returns ``inf`` when the target is at or below the law's asymptote.
        """
        target = float(target)
        if not np.isfinite(target) or target <= 0:
            raise ValueError(f"target loss must be positive and finite; got {target}")
        if target <= self.asymptote():
            return math.inf
        lo, hi = 1.0, 1e60

        def gap(log_c: float) -> float:
            return math.log(float(self.loss_at_compute(math.exp(log_c)))) - math.log(target)

        if gap(math.log(hi)) > 0:
            return math.inf
        if gap(math.log(lo)) < 0:
            raise ValueError(f"target {target} is above the loss at 1 FLOP; check the law")
        return math.exp(optimize.brentq(gap, math.log(lo), math.log(hi), xtol=1e-10, rtol=1e-12))

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: ``{"law", "config", "params"}``."""
        return {
            "law": self.name,
            "config": self.config,
            "params": {k: (v if np.isfinite(v) else None) for k, v in self.params.items()},
        }

    @staticmethod
    def from_dict(payload: Mapping[str, Any]) -> Law:
        """Inverse of :meth:`to_dict` (dispatches on ``payload["law"]``)."""
        try:
            cls = LAWS[payload["law"]]
        except KeyError as err:
            raise ValueError(
                f"unknown law {payload.get('law')!r}; known laws: {', '.join(sorted(LAWS))}"
            ) from err
        params = {k: (math.nan if v is None else float(v)) for k, v in payload["params"].items()}
        return cls.from_parts(payload.get("config", {}), params)

    @classmethod
    def from_parts(cls, config: Mapping[str, Any], params: Mapping[str, float]) -> Law:
        """The law of configuration ``config`` with parameters ``params``."""
        return cls(**config, **params)

    def __str__(self) -> str:
        body = self.formula()
        lhs = f"L({', '.join(SYMBOLS[v] for v in self.variables)})"
        if self.is_fitted:
            for p, v in sorted(self.params.items(), key=lambda kv: -len(kv[0])):
                body = body.replace(f"{{{p}}}", _fmt(v))
            return f"{self.name}: {lhs} = {body}"
        body = body.replace("{", "").replace("}", "")
        return f"{self.name} (unfitted): {lhs} = {body}"


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PowerLaw(Law):
    """L(x) = E + A·x^-alpha in one variable x ∈ {n_params, tokens, compute}.

    With ``irreducible=False``, L(x) = A·x^-alpha (Kaplan et al. 2020). With the offset and
    x = compute it is the form of the GPT-4 technical report (OpenAI 2023, Fig. 1).
    """

    name: ClassVar[str] = "power_law"
    variable: Variable = "compute"
    E: float = math.nan
    A: float = math.nan
    alpha: float = math.nan
    exponent_names: ClassVar[tuple[str, ...]] = ("alpha",)

    def __post_init__(self) -> None:
        if self.variable not in VARIABLES:
            raise ValueError(f"variable must be one of {VARIABLES}; got {self.variable!r}")
        if not self.irreducible and not (math.isnan(self.E) or self.E == 0.0):
            raise ValueError("a power law without irreducible term has no E")

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable,)

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("E", "A", "alpha") if self.irreducible else ("A", "alpha")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"E", "A"})

    @property
    def linear_names(self) -> tuple[str, ...]:
        return ("E", "A") if self.irreducible else ("A",)

    def formula(self) -> str:
        x = SYMBOLS[self.variable]
        term = f"{{A}}·{x}^-{{alpha}}"
        return f"{{E}} + {term}" if self.irreducible else term

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        lx = z[0]
        if self.irreducible:
            e, a, alpha = (theta[..., i, None] for i in range(3))
            power = a - alpha * lx
            terms = np.stack(np.broadcast_arrays(e, power))
            out = lse(terms)
            if not jac:
                return out
            w = np.exp(terms - out)
            return out, np.stack([w[0], w[1], -w[1] * lx])
        a, alpha = (theta[..., i, None] for i in range(2))
        out = np.broadcast_to(a - alpha * lx, np.broadcast_shapes(a.shape, lx.shape))
        if not jac:
            return out
        return out, np.stack([np.ones_like(lx), -lx])

    def theta_bounds(self):
        b = [_LOG_COEF_BOUNDS, _EXPONENT_BOUNDS]
        return [_LOG_E_BOUNDS, *b] if self.irreducible else b

    def theta_grid(self):
        # Epoch AI's grid for the coefficient and exponent (Besiroglu et al. 2024).
        a = np.arange(0.0, 30.0, 5.0)
        alpha = np.arange(0.0, 2.5, 0.5)
        if self.irreducible:
            e = np.arange(-1.0, 1.5, 0.5)
            return np.array(list(itertools.product(e, a, alpha)))
        return np.array(list(itertools.product(a, alpha)))

    def exponent_grid(self):
        return np.geomspace(0.005, 3.0, 400)[:, None]

    def basis(self, exponents, z):
        power = np.exp(-exponents[:, 0, None] * z[0])  # (m, n)
        if self.irreducible:
            return np.stack([np.ones_like(power), power], axis=-1)
        return power[..., None]


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Chinchilla(Law):
    """L(N, D) = E + A·N^-alpha + B·D^-beta (Hoffmann et al. 2022, eq. 2).

    ``irreducible=False`` drops E (the "no-offset" joint power law).
    """

    name: ClassVar[str] = "chinchilla"
    E: float = math.nan
    A: float = math.nan
    B: float = math.nan
    alpha: float = math.nan
    beta: float = math.nan
    exponent_names: ClassVar[tuple[str, ...]] = ("alpha", "beta")

    def __post_init__(self) -> None:
        if not self.irreducible and not (math.isnan(self.E) or self.E == 0.0):
            raise ValueError("a Chinchilla law without irreducible term has no E")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("n_params", "tokens")

    @property
    def param_names(self) -> tuple[str, ...]:
        # Epoch's theta order (a, b, e, alpha, beta) with the offset last among coefficients.
        base = ("A", "B", "E", "alpha", "beta")
        return base if self.irreducible else ("A", "B", "alpha", "beta")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"A", "B", "E"})

    @property
    def linear_names(self) -> tuple[str, ...]:
        return ("A", "B", "E") if self.irreducible else ("A", "B")

    def formula(self) -> str:
        base = "{A}·N^-{alpha} + {B}·D^-{beta}"
        return f"{{E}} + {base}" if self.irreducible else base

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        ln, ld = z[0], z[1]
        cols = [theta[..., i, None] for i in range(theta.shape[-1])]
        if self.irreducible:
            a, b, e, alpha, beta = cols
        else:
            a, b, alpha, beta = cols
        t_n = a - alpha * ln
        t_d = b - beta * ld
        parts = [t_n, t_d, e] if self.irreducible else [t_n, t_d]
        terms = np.stack(np.broadcast_arrays(*parts))
        out = lse(terms)
        if not jac:
            return out
        w = np.exp(terms - out)
        if self.irreducible:
            return out, np.stack([w[0], w[1], w[2], -w[0] * ln, -w[1] * ld])
        return out, np.stack([w[0], w[1], -w[0] * ln, -w[1] * ld])

    def theta_bounds(self):
        coef = [_LOG_COEF_BOUNDS, _LOG_COEF_BOUNDS]
        exps = [_EXPONENT_BOUNDS, _EXPONENT_BOUNDS]
        return [*coef, _LOG_E_BOUNDS, *exps] if self.irreducible else [*coef, *exps]

    def theta_grid(self):
        # The 4,500-point grid of Besiroglu et al. (2024), Epoch AI's Chinchilla replication.
        a = b = np.arange(0.0, 30.0, 5.0)
        e = np.arange(-1.0, 1.5, 0.5)
        alpha = beta = np.arange(0.0, 2.5, 0.5)
        if self.irreducible:
            return np.array(list(itertools.product(a, b, e, alpha, beta)))
        return np.array(list(itertools.product(a, b, alpha, beta)))

    def exponent_grid(self):
        g = np.geomspace(0.01, 2.5, 48)
        return np.array(list(itertools.product(g, g)))

    def basis(self, exponents, z):
        pn = np.exp(-exponents[:, 0, None] * z[0])
        pd_ = np.exp(-exponents[:, 1, None] * z[1])
        cols = [pn, pd_, np.ones_like(pn)] if self.irreducible else [pn, pd_]
        return np.stack(cols, axis=-1)

    def allocation_exponents(self):
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def optimal_allocation(self, compute):
        # Minimise A·N^-α + B·D^-β subject to 6·N·D = C (Hoffmann et al. 2022, eq. 4):
        # N_opt = G·(C/6)^a, D_opt = G^-1·(C/6)^b, G = (αA/(βB))^(1/(α+β)).
        c = _as_positive_array("compute", compute)
        a, b = self.allocation_exponents()
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        with np.errstate(divide="ignore"):  # A = 0 (at its bound): N_opt = 0, D_opt infinite
            return g * (c / 6.0) ** a, (c / 6.0) ** b / g


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class KaplanJoint(Law):
    """L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5).

    The form has no irreducible term; ``irreducible`` must stay ``False``.
    """

    name: ClassVar[str] = "kaplan"
    irreducible: bool = False
    N_c: float = math.nan
    D_c: float = math.nan
    alpha_N: float = math.nan
    alpha_D: float = math.nan

    def __post_init__(self) -> None:
        if self.irreducible:
            raise ValueError("Kaplan's joint law has no irreducible term")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("n_params", "tokens")

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("N_c", "D_c", "alpha_N", "alpha_D")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"N_c", "D_c"})

    def formula(self) -> str:
        return "[({N_c}/N)^({alpha_N}/{alpha_D}) + {D_c}/D]^{alpha_D}"

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        nc, dc, an, ad = (theta[..., i, None] for i in range(4))
        ln, ld = z[0], z[1]
        ratio = an / ad
        u = ratio * (nc - ln)
        v = dc - ld
        terms = np.stack(np.broadcast_arrays(u, v))
        s = lse(terms)
        out = ad * s
        if not jac:
            return out
        w = np.exp(terms - s)
        # d/d log N_c = alpha_N·w_u; d/d alpha_N = w_u·(log N_c - log N);
        # d/d alpha_D = s - w_u·u (u depends on alpha_D through alpha_N/alpha_D).
        return out, np.stack([an * w[0], ad * w[1], w[0] * (nc - ln), s - w[0] * u])

    def theta_bounds(self):
        return [(0.0, 100.0), (0.0, 100.0), (1e-3, 2.0), (1e-3, 2.0)]

    def theta_grid(self):
        logs = np.arange(15.0, 45.0, 5.0)
        exps = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
        return np.array(list(itertools.product(logs, logs, exps, exps)))

    def allocation_exponents(self):
        p = self.alpha_N / self.alpha_D
        return 1.0 / (1.0 + p), p / (1.0 + p)

    def optimal_allocation(self, compute):
        # With p = α_N/α_D and K = C/6: minimise (N_c/N)^p + D_c·N/K, so
        # N_opt = (p·N_c^p·K/D_c)^(1/(1+p)) and D_opt = K/N_opt.
        c = _as_positive_array("compute", compute)
        p = self.alpha_N / self.alpha_D
        k = c / 6.0
        n = (p * self.N_c**p * k / self.D_c) ** (1.0 / (1.0 + p))
        return n, k / n


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PlateauLaw(Law):
    """L(C) = E + (L0 − E) / (1 + (C/C0)^alpha): a plateau at L0, then a power law down to E.

    Hestness et al. (2017) describe three regions of a learning curve: a small-budget region
    near the best guess, a power-law region and an irreducible floor. Tiny language models
    sit in the first bend: the loss starts at the unigram entropy of the corpus (what a model
    that uses no context can reach) and its log-log slope steepens with compute, which the
    GPT-4 report's E + A·C^-alpha (whose slope only flattens) cannot follow. ``L0`` is not
    fitted: give the corpus's unigram entropy (``scalelab.data`` baselines). For C ≫ C0 the
    law is E + (L0 − E)·(C/C0)^-alpha. With ``irreducible=False``, E = 0.
    """

    name: ClassVar[str] = "plateau"
    plateau: float | None = None  # L0, fixed (a configuration, not a fitted parameter)
    E: float = math.nan
    C0: float = math.nan
    alpha: float = math.nan

    def __post_init__(self) -> None:
        if self.plateau is None or not (math.isfinite(self.plateau) and self.plateau > 0):
            raise ValueError(f"plateau (L0) must be a positive loss; got {self.plateau!r}")
        if not self.irreducible and not (math.isnan(self.E) or self.E == 0.0):
            raise ValueError("a plateau law without irreducible term has no E")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("compute",)

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("E", "C0", "alpha") if self.irreducible else ("C0", "alpha")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"E", "C0"})

    def formula(self) -> str:
        if not self.irreducible:
            return f"{self.plateau:.4g} / (1 + (C/{{C0}})^{{alpha}})"
        return f"{{E}} + ({self.plateau:.4g} − {{E}}) / (1 + (C/{{C0}})^{{alpha}})"

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        if self.irreducible:
            log_e, c0, alpha = (theta[..., i, None] for i in range(3))
            e = np.exp(log_e)
        else:
            c0, alpha = (theta[..., i, None] for i in range(2))
            e = np.zeros_like(c0)
        x = np.clip(alpha * (z[0] - c0), -700.0, 700.0)
        s = 0.5 * (1.0 - np.tanh(0.5 * x))  # 1 / (1 + e^x), without overflow
        height = self.plateau - e
        if self.irreducible:
            loss = e + height * s
            out = np.log(loss)
            ds_over_loss = s * (1.0 - s) / loss
        else:  # loss = height·s: its log by log-sum-exp stays finite where s underflows to 0
            out = np.log(height) - np.logaddexp(0.0, x)
            ds_over_loss = (1.0 - s) / height
        if not jac:
            return out
        rows = [height * alpha * ds_over_loss, -height * (z[0] - c0) * ds_over_loss]
        if self.irreducible:
            rows.insert(0, e * (1.0 - s) / loss)
        return out, np.stack(rows)

    def theta_bounds(self):
        b = [(0.0, 120.0), (1e-3, 5.0)]
        return [(-20.0, math.log(self.plateau)), *b] if self.irreducible else b

    def theta_grid(self):
        c0 = np.arange(5.0, 70.0, 5.0)
        alpha = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.8])
        if not self.irreducible:
            return np.array(list(itertools.product(c0, alpha)))
        log_e = math.log(self.plateau) + np.log([0.05, 0.2, 0.4, 0.6, 0.8])
        return np.array(list(itertools.product(log_e, c0, alpha)))


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class OddsLaw(Law):
    """L(C) = L0 / (1 + (C/C0)^alpha), with the plateau L0 fitted: a power law in the odds.

    Equivalently L0/L − 1 = (C/C0)^alpha, whose log-log slope −alpha·(1 − L/L0) steepens as
    the loss falls below L0 (the bend tiny models leave the unigram plateau through), and
    tends to a pure power law A·C^-alpha when L ≪ L0. ``PlateauLaw(irreducible=False)`` is
    the same form with L0 fixed at the corpus's unigram entropy; this one is for runs whose
    plateau is not known (published ladders). There is no irreducible term.
    """

    name: ClassVar[str] = "odds"
    irreducible: bool = False
    L0: float = math.nan
    C0: float = math.nan
    alpha: float = math.nan

    def __post_init__(self) -> None:
        if self.irreducible:
            raise ValueError("the odds law has no irreducible term")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("compute",)

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("L0", "C0", "alpha")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"L0", "C0"})

    def formula(self) -> str:
        return "{L0} / (1 + (C/{C0})^{alpha})"

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        log_l0, c0, alpha = (theta[..., i, None] for i in range(3))
        x = alpha * (z[0] - c0)
        out = log_l0 - np.logaddexp(0.0, x)  # log L0 − log(1 + e^x)
        if not jac:
            return out
        s = 0.5 * (1.0 + np.tanh(0.5 * x))  # e^x / (1 + e^x), without overflow
        return out, np.stack([np.ones_like(x), alpha * s, -(z[0] - c0) * s])

    def theta_bounds(self):
        return [(-3.0, 5.0), (0.0, 120.0), (1e-3, 5.0)]

    def theta_grid(self):
        log_l0 = np.log([1.5, 2.5, 4.0, 7.0, 12.0])
        c0 = np.arange(5.0, 70.0, 5.0)
        alpha = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.8])
        return np.array(list(itertools.product(log_l0, c0, alpha)))


# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SigmoidLaw(Law):
    """P(C) = 1 / (1 + (C/C0)^-alpha): a pass rate that rises as a logistic in log compute,
    from 0 to 1, half way at C0 (the form used for emergent abilities, e.g. Wei et al. 2022).

    Fitted, like every law, on the log of the value (``loss`` holds the pass rate), so pass
    rates must be positive: give a floor to rates of 0 (``scalelab.forecast.capability``).
    """

    name: ClassVar[str] = "pass_sigmoid"
    irreducible: bool = False
    C0: float = math.nan
    alpha: float = math.nan

    def __post_init__(self) -> None:
        if self.irreducible:
            raise ValueError("a pass-rate sigmoid has no irreducible term")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("compute",)

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("C0", "alpha")

    @property
    def log_params(self) -> frozenset[str]:
        return frozenset({"C0"})

    def formula(self) -> str:
        return "1 / (1 + (C/{C0})^-{alpha})"

    def log_model(self, theta, z, jac=False):
        theta = np.asarray(theta, dtype=float)
        c0, alpha = (theta[..., i, None] for i in range(2))
        x = alpha * (z[0] - c0)
        out = -np.logaddexp(0.0, -x)  # log σ(x)
        if not jac:
            return out
        rest = 0.5 * (1.0 - np.tanh(0.5 * x))  # 1 − σ(x), without overflow
        return out, np.stack([-alpha * rest, (z[0] - c0) * rest])

    def theta_bounds(self):
        return [(0.0, 120.0), (1e-3, 10.0)]

    def theta_grid(self):
        c0 = np.arange(5.0, 90.0, 5.0)
        alpha = np.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
        return np.array(list(itertools.product(c0, alpha)))


def make_law(spec: str | Law | Mapping[str, Any]) -> Law:
    """A law template from a name (``"chinchilla"``, ``"kaplan"``, ``"power_law"``,
    ``"power_law:n_params"``), a dict from :meth:`Law.to_dict`, or a law (returned as is)."""
    if isinstance(spec, Law):
        return spec
    if isinstance(spec, Mapping):
        return Law.from_dict(spec)
    name, _, variable = str(spec).partition(":")
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))}")
    if variable:
        if name != "power_law":
            raise ValueError(f"only power_law takes a variable; got {spec!r}")
        return PowerLaw(variable=variable)  # type: ignore[arg-type]
    return LAWS[name]()
