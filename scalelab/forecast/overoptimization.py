"""Reward-model over-optimisation: gold reward against d = sqrt(KL) (Gao, Schulman, Hilton 2022).

Optimising a proxy reward model raises the proxy without bound, while the gold reward (what the
proxy was trained to imitate) rises, peaks and falls. Gao et al. measure the distance from the
initial policy as d = sqrt(KL(π‖π_init)) and fit the gold reward gain over the initial policy
with two functional forms:

- best-of-n sampling:  R_bon(d) = d·(α_bon − β_bon·d)
- reinforcement learning: R_RL(d) = d·(α_RL − β_RL·log d)

Both are linear in (α, β), so the fit is ordinary least squares (no intercept: R(0) = 0);
intervals come from a bootstrap over points, or over groups of points (e.g. the checkpoints of
one PPO run) when ``groups`` is given. Gao et al. find that α and β move smoothly with the
reward model's size; :func:`fit_overoptimization_by_size` fits each size and regresses each
coefficient on log10(size).

Best-of-n needs no training: its KL is analytic, KL_bon = log n − (n−1)/n (Stiennon et al.
2020, appendix; exact for distinct samples), and :func:`bon_estimate` gives the unbiased
estimate of E[reward of the best of n] from one pool of N ≥ n samples per prompt (Nakano et al.
2021, WebGPT appendix; used by Gao et al.), so every n ≤ N reuses the same samples.

Pure numpy/scipy/pandas: no torch, Lightning or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from scalelab.forecast.intervals import DEFAULT_LEVEL, check_level, quantile_interval
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")
special = lazy_module("scipy.special")

Form = Literal["bon", "rl"]
FORMS: tuple[str, ...] = get_args(Form)
_FORMULAS = {"bon": "d·(α − β·d)", "rl": "d·(α − β·log d)"}


# --- best-of-n ----------------------------------------------------------------------------
def bon_kl(n: Any) -> Any:
    """KL(π_bon‖π) = log n − (n−1)/n nats, the analytic KL of best-of-n sampling."""
    n_arr = np.asarray(n, dtype=float)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1; got {n}")
    out = np.log(n_arr) - (n_arr - 1.0) / n_arr
    return float(out) if out.ndim == 0 else out


def _check_pool(proxy: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proxy = np.atleast_2d(np.asarray(proxy, dtype=float))
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if proxy.shape != values.shape:
        raise ValueError(f"proxy {proxy.shape} and values {values.shape} must have one shape")
    if not (np.isfinite(proxy).all() and np.isfinite(values).all()):
        raise ValueError("proxy and values must be finite")
    return proxy, values


def bon_estimate(proxy: np.ndarray, values: np.ndarray, n: int) -> float:
    """Unbiased estimate of E[value of the best-of-n sample by ``proxy``], mean over prompts.

    ``proxy`` and ``values`` are (prompts, N) with N ≥ n samples per prompt. Sorting a row by
    proxy, the best of a uniformly drawn n-subset is the i-th smallest with probability
    C(i−1, n−1)/C(N, n), so the estimate is Σ_i C(i−1, n−1)/C(N, n)·value_(i).
    """
    proxy, values = _check_pool(proxy, values)
    pool = proxy.shape[1]
    if not 1 <= n <= pool:
        raise ValueError(f"n must be in [1, {pool}] (the samples per prompt); got {n}")
    order = np.argsort(proxy, axis=1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=1)
    i = np.arange(n, pool + 1)  # ranks that can be the best of n
    lg = special.gammaln
    log_w = lg(i) - lg(n) - lg(i - n + 1)  # log C(i−1, n−1)
    log_w -= lg(pool + 1) - lg(n + 1) - lg(pool - n + 1)  # log C(N, n)
    weights = np.zeros(pool)
    weights[n - 1 :] = np.exp(log_w)
    return float((sorted_values @ weights).mean())


def bon_curve(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]) -> pd.DataFrame:
    """Best-of-n at each n: ``n``, ``kl``, ``d`` = sqrt(kl), expected ``proxy`` and ``gold``
    reward of the chosen sample (the same pool for every n)."""
    proxy, gold = _check_pool(proxy, gold)
    rows = []
    for n in ns:
        kl = bon_kl(n)
        rows.append(
            {
                "n": int(n),
                "kl": kl,
                "d": math.sqrt(kl),
                "proxy": bon_estimate(proxy, proxy, n),
                "gold": bon_estimate(proxy, gold, n),
            }
        )
    return pd.DataFrame(rows)


# --- functional forms ---------------------------------------------------------------------
def _design(form: str, d: np.ndarray) -> np.ndarray:
    if form == "bon":
        return np.column_stack([d, -d * d])
    if form == "rl":
        with np.errstate(divide="ignore", invalid="ignore"):
            d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.column_stack([d, -d_log_d])
    raise ValueError(f"form must be one of {FORMS}; got {form!r}")


def gold_model(form: Form, d: Any, alpha: float, beta: float) -> Any:
    """R(d) of ``form``: d·(α − β·d) for ``bon``, d·(α − β·log d) for ``rl`` (R(0) = 0)."""
    d_arr = np.asarray(d, dtype=float)
    out = _design(form, np.atleast_1d(d_arr)) @ np.array([alpha, beta])
    return float(out[0]) if d_arr.ndim == 0 else out.reshape(d_arr.shape)


@dataclass(frozen=True)
class OveroptFit:
    """A fitted R(d) = d·(α − β·d) (``bon``) or d·(α − β·log d) (``rl``), with bootstrap
    samples of (α, β) and percentile intervals at ``level``."""

    form: str
    alpha: float
    beta: float
    samples: np.ndarray = field(repr=False)
    level: float = DEFAULT_LEVEL
    n_points: int = 0
    n_groups: int = 0
    rmse: float = math.nan
    seed: int = 0
    label: str = ""

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}

    def intervals(self, level: float | None = None) -> pd.DataFrame:
        """Estimate, interval and bootstrap standard error of α and β."""
        level = self.level if level is None else check_level(level)
        lo, hi = quantile_interval(self.samples, level)
        return pd.DataFrame(
            {
                "estimate": [self.alpha, self.beta],
                "lo": lo,
                "hi": hi,
                "se": self.samples.std(axis=0, ddof=1),
                "level": level,
            },
            index=pd.Index(["alpha", "beta"], name="param"),
        )

    def predict(self, d: Any) -> Any:
        """R(d), the gold reward gain at distance d = sqrt(KL)."""
        return gold_model(self.form, d, self.alpha, self.beta)  # type: ignore[arg-type]

    def peak(self) -> tuple[float, float]:
        """(d*, R(d*)): the distance of the largest gain and the gain there; (inf, inf) when
        β ≤ 0 (no peak: the gold reward keeps rising in this form)."""
        if self.beta <= 0:
            return math.inf, math.inf
        if self.form == "bon":
            d_star = self.alpha / (2.0 * self.beta)
        else:  # dR/dd = α − β·log d − β = 0
            d_star = math.exp(self.alpha / self.beta - 1.0)
        return d_star, float(self.predict(d_star))

    def __str__(self) -> str:
        table = self.intervals()
        d_star, r_star = self.peak()
        name = f"{self.label}: " if self.label else ""
        return (
            f"{name}R_{self.form}(d) = {_FORMULAS[self.form]}: "
            f"α = {self.alpha:.4g} [{table.loc['alpha', 'lo']:.4g}, "
            f"{table.loc['alpha', 'hi']:.4g}], β = {self.beta:.4g} "
            f"[{table.loc['beta', 'lo']:.4g}, {table.loc['beta', 'hi']:.4g}] "
            f"({self.level:.0%} bootstrap), peak d* = {d_star:.3g} (R = {r_star:.3g}), "
            f"RMSE {self.rmse:.3g}, {self.n_points} points"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "alpha": self.alpha,
            "beta": self.beta,
            "samples": self.samples.tolist(),
            "level": self.level,
            "n_points": self.n_points,
            "n_groups": self.n_groups,
            "rmse": self.rmse,
            "seed": self.seed,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> OveroptFit:
        data = dict(payload)
        samples = np.array(data.pop("samples"), dtype=float).reshape(-1, 2)
        return cls(samples=samples, **data)


def _lstsq(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    if w is not None:
        sw = np.sqrt(w)
        x, y = x * sw[:, None], y * sw
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def fit_overoptimization(
    d: Any,
    reward: Any,
    form: Form,
    *,
    groups: Any = None,
    n_resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    label: str = "",
) -> OveroptFit:
    """Least-squares fit of R(d) (``form`` "bon" or "rl") to gains ``reward`` at ``d``.

    ``reward`` is the gain over the initial policy (so R(0) = 0). ``groups`` (one label per
    point) makes the bootstrap resample whole groups, e.g. the evaluations of one run.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    d = np.asarray(d, dtype=float).ravel()
    reward = np.asarray(reward, dtype=float).ravel()
    if d.shape != reward.shape:
        raise ValueError(f"d ({d.size}) and reward ({reward.size}) must have the same length")
    if not (np.isfinite(d).all() and np.isfinite(reward).all()):
        raise ValueError("d and reward must be finite")
    if np.any(d < 0):
        raise ValueError(f"d = sqrt(KL) must be >= 0; got min {d.min():.4g}")
    if np.count_nonzero(d > 0) < 2 or np.unique(d[d > 0]).size < 2:
        raise ValueError("need at least two distinct positive d to fit α and β")
    level = check_level(level)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2; got {n_resamples}")

    x = _design(form, d)
    alpha, beta = _lstsq(x, reward)
    residuals = reward - x @ np.array([alpha, beta])

    labels = np.arange(d.size) if groups is None else np.asarray(groups).ravel()
    if labels.shape != d.shape:
        raise ValueError("groups needs one label per point")
    _, unit = np.unique(labels, return_inverse=True)
    n_units = int(unit.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples)
    samples = np.array([_lstsq(x, reward, c[unit].astype(float)) for c in counts])
    return OveroptFit(
        form=form,
        alpha=float(alpha),
        beta=float(beta),
        samples=samples,
        level=level,
        n_points=int(d.size),
        n_groups=n_units,
        rmse=float(np.sqrt(np.mean(residuals**2))),
        seed=seed,
        label=label,
    )


@dataclass(frozen=True)
class OveroptScaling:
    """One fit per reward-model size, and each coefficient regressed on log10(size).

    ``table`` has one row per size: ``size``, ``alpha``, ``alpha_lo``, ``alpha_hi``,
    ``beta``, ``beta_lo``, ``beta_hi``, ``d_peak``, ``r_peak``, ``rmse``, ``n_points``.
    ``trends`` maps ``alpha``/``beta`` to (intercept, slope per decade of size).
    """

    form: str
    fits: tuple[OveroptFit, ...]
    sizes: tuple[float, ...]
    trends: dict[str, tuple[float, float]]

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        for size, fit in zip(self.sizes, self.fits, strict=True):
            iv = fit.intervals()
            d_star, r_star = fit.peak()
            rows.append(
                {
                    "size": size,
                    "alpha": fit.alpha,
                    "alpha_lo": iv.loc["alpha", "lo"],
                    "alpha_hi": iv.loc["alpha", "hi"],
                    "beta": fit.beta,
                    "beta_lo": iv.loc["beta", "lo"],
                    "beta_hi": iv.loc["beta", "hi"],
                    "d_peak": d_star,
                    "r_peak": r_star,
                    "rmse": fit.rmse,
                    "n_points": fit.n_points,
                }
            )
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        lines = [f"R_{self.form}(d) = {_FORMULAS[self.form]} by reward-model size:"]
        lines += [f"  {f}" for f in self.fits]
        for name, (intercept, slope) in self.trends.items():
            sign = "−" if slope < 0 else "+"
            lines.append(f"  {name} ≈ {intercept:.4g} {sign} {abs(slope):.4g}·log10(size)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "fits": [f.to_dict() for f in self.fits],
            "sizes": list(self.sizes),
            "trends": {k: list(v) for k, v in self.trends.items()},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> OveroptScaling:
        return cls(
            form=payload["form"],
            fits=tuple(OveroptFit.from_dict(f) for f in payload["fits"]),
            sizes=tuple(float(s) for s in payload["sizes"]),
            trends={k: (float(v[0]), float(v[1])) for k, v in payload["trends"].items()},
        )


def fit_overoptimization_by_size(
    frame: pd.DataFrame,
    form: Form,
    *,
    size: str = "rm_n_params",
    d: str = "d",
    reward: str = "gold",
    group: str | None = None,
    n_resamples: int = 1000,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> OveroptScaling:
    """Fit ``form`` separately at each value of column ``size`` and regress α and β on
    log10(size) (least squares; with fewer than two sizes the slope is NaN).

    ``frame`` has one row per measured point: columns ``size``, ``d``, ``reward`` (the gain
    over the initial policy) and optionally ``group`` (bootstrap unit)."""
    missing = [c for c in (size, d, reward, group) if c is not None and c not in frame]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; has {list(frame.columns)}")
    sizes, fits = [], []
    for value, part in frame.groupby(size, sort=True):
        fits.append(
            fit_overoptimization(
                part[d].to_numpy(),
                part[reward].to_numpy(),
                form,
                groups=None if group is None else part[group].to_numpy(),
                n_resamples=n_resamples,
                level=level,
                seed=seed,
                label=f"{size}={value:,.0f}",
            )
        )
        sizes.append(float(value))
    if not fits:
        raise ValueError("frame has no rows")
    log_size = np.log10(np.array(sizes))
    trends = {}
    for name in ("alpha", "beta"):
        y = np.array([getattr(f, name) for f in fits])
        if len(fits) >= 2:
            slope, intercept = np.polyfit(log_size, y, 1)
        else:
            slope, intercept = math.nan, float(y[0])
        trends[name] = (float(intercept), float(slope))
    return OveroptScaling(form=form, fits=tuple(fits), sizes=tuple(sizes), trends=trends)
