"""Variable projection: search only the exponents; solve the coefficients by NNLS.

For fixed exponents a Chinchilla-type law, L = E + A·N^-α + B·D^-β, is linear in its
non-negative coefficients (E, A, B) (Golub & Pereyra 1973, "variable projection"). For every
point of an exponent grid we solve those coefficients by non-negative least squares on
relative residuals (L_obs - L_pred)/L_obs, which to first order are the log residuals the
objective uses; we then score each candidate with the true objective and hand the best few to
L-BFGS (see ``fit.fit_law``). The search needs no grid over coefficients, whose useful range
depends on the units of N and D, which is what makes it robust as well as fast.
"""

from __future__ import annotations

import numpy as np

from scalelab.forecast.laws import Law
from scalelab.lazy_imports import lazy_module

optimize = lazy_module("scipy.optimize")

# Coefficients solved as exactly 0 are mapped to a tiny positive value (their log-bound).
_TINY = 1e-300
# Elements of one (grid points × rows × columns) design batch: 2**22 doubles (32 MB). The
# whole 2,304-point grid at 10^5 rows would be 5.5 GB; each point is solved on its own, so
# batches give the same coefficients.
_DESIGN_ELEMENTS = 2**22


def solve_coefficients(
    design: np.ndarray, target: np.ndarray, row_weight: np.ndarray
) -> np.ndarray:
    """Non-negative least squares for a batch: ``design`` (m, n, q), ``target`` (n,).

    Rows are weighted by ``row_weight`` (n,). Columns are rescaled to unit norm first since
    powers like N^-2 span many orders of magnitude. A batched QR solve handles the common case
    where the unconstrained solution is already non-negative; scipy's NNLS handles the rest.
    """
    x = design * row_weight[None, :, None]
    b = target * row_weight
    scale = np.linalg.norm(x, axis=1)  # (m, q)
    scale = np.where(scale > 0, scale, 1.0)
    xs = x / scale[:, None, :]
    q, r = np.linalg.qr(xs)
    rhs = np.einsum("mnq,n->mq", q, b)
    with np.errstate(all="ignore"):
        try:
            coef = np.linalg.solve(r, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            coef = np.full(rhs.shape, -1.0)
    bad = ~np.all(np.isfinite(coef) & (coef >= 0), axis=1)
    for i in np.flatnonzero(bad):
        coef[i], _ = optimize.nnls(xs[i], b, maxiter=50 * xs.shape[2])
    return coef / scale


def varpro_candidates(
    law: Law,
    z: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    exponent_grid: np.ndarray | None = None,
) -> np.ndarray:
    """Starting points (theta rows) from the exponent grid, one per grid point.

    ``z`` holds the log inputs (n_variables, n), ``y`` the log losses, ``weights`` optional
    per-point multiplicities (bootstrap counts).
    """
    if not law.supports_varpro:
        raise ValueError(f"{law.name} is not linear in its coefficients; use engine='lbfgs'")
    grid = law.exponent_grid() if exponent_grid is None else np.atleast_2d(exponent_grid)
    loss = np.exp(y)
    row_weight = 1.0 / loss
    if weights is not None:
        row_weight = row_weight * np.sqrt(weights)
    n_columns = len(law.linear_names)
    batch = max(1, _DESIGN_ELEMENTS // max(1, loss.size * n_columns))
    coef = np.concatenate(
        [
            solve_coefficients(law.basis(grid[i : i + batch], z), loss, row_weight)
            for i in range(0, len(grid), batch)
        ]
    )  # (m, q)
    values: dict[str, np.ndarray] = dict(zip(law.linear_names, coef.T, strict=True))
    values.update(zip(law.exponent_names, grid.T, strict=True))
    theta = np.stack(
        [
            np.log(np.maximum(values[p], _TINY)) if p in law.log_params else values[p]
            for p in law.param_names
        ],
        axis=1,
    )
    lo, hi = np.array(law.theta_bounds()).T
    return np.clip(theta, lo, hi)
