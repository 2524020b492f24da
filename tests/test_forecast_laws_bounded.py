"""The plateau-anchored laws: M4 and the bounded (N, D) law solve their forms, have exact
gradients, stay inside the bounds their runs set, and recover known parameters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import fit_law
from scalelab.forecast.forms import FORMS, law_for_key
from scalelab.forecast.laws import LAWS, Law, OddsLaw
from scalelab.forecast.laws_bounded import BoundedNDLaw, M4Law

RNG = np.random.default_rng(0)
COMPUTE = np.log(np.geomspace(1e15, 1e21, 9))[None, :]
ND = np.log(np.stack([np.geomspace(1e6, 1e9, 9), np.geomspace(1e8, 1e11, 9)[::-1]]))


@pytest.mark.parametrize(
    ("law", "z"),
    [
        (M4Law(e_max=2.0, l0_min=5.0), COMPUTE),
        (M4Law(e_max=2.0, plateau=5.5), COMPUTE),
        (BoundedNDLaw(e_max=2.0, l0_min=5.0), ND),
        (BoundedNDLaw(e_max=2.0, plateau=5.5), ND),
    ],
)
def test_the_analytic_jacobian_matches_finite_differences(law: Law, z: np.ndarray) -> None:
    bounds = np.array(law.theta_bounds())
    grid = law.theta_grid()
    for theta in grid[RNG.choice(len(grid), 6, replace=False)]:
        theta = np.clip(theta, bounds[:, 0] + 1e-3, bounds[:, 1] - 1e-3)
        _, jac = law.log_model(theta, z, jac=True)
        for i in range(len(theta)):
            step = np.zeros_like(theta)
            step[i] = 1e-6
            numeric = (law.log_model(theta + step, z) - law.log_model(theta - step, z)) / 2e-6
            np.testing.assert_allclose(jac[i], numeric, atol=1e-6)


def test_m4_solves_its_implicit_form_and_contains_the_odds_law() -> None:
    law = M4Law(e_max=2.0, l0_min=5.0, E=1.5, L0=6.0, beta=math.exp(20.0), c=0.4, k=1.7)
    c = np.array([1e14, 1e16, 1e18, 1e22])
    loss = law.predict(compute=c)
    np.testing.assert_allclose((loss - 1.5) / (6.0 - loss) ** 1.7, math.exp(20.0) * c**-0.4)
    assert np.all((loss > 1.5) & (loss < 6.0)) and law.asymptote() == 1.5
    # k = 1 and E → 0: L0/L − 1 = (C/C0)^c, the odds law with β = C0^c.
    near_zero = M4Law(e_max=2.0, l0_min=3.0, E=1e-9, L0=3.2, beta=1e19**0.3, c=0.3, k=1.0)
    odds = OddsLaw(L0=3.2, C0=1e19, alpha=0.3)
    np.testing.assert_allclose(near_zero.predict(compute=c), odds.predict(compute=c), rtol=1e-6)


def test_the_bounded_nd_law_saturates_at_both_ends_and_allocates_like_chinchilla() -> None:
    law = BoundedNDLaw(e_max=2.0, l0_min=5.0, E=1.8, L0=6.0, a=400.0, b=600.0, alpha=0.34, beta=0.3)
    assert law.predict(n_params=1e40, tokens=1e40) == pytest.approx(1.8, rel=1e-6)
    assert law.predict(n_params=1.0, tokens=1.0) == pytest.approx(6.0, rel=1e-3)
    n, d = law.optimal_allocation(1e22)
    assert 6 * n * d == pytest.approx(1e22)
    # At the optimum no shift of compute between N and D lowers the loss.
    best = law.predict(n_params=n, tokens=d)
    for f in (0.8, 1.25):
        assert law.predict(n_params=n * f, tokens=d / f) > best


def test_fits_recover_known_parameters_within_the_bounds_the_runs_set() -> None:
    truth = M4Law(e_max=2.0, l0_min=5.0, E=1.6, L0=5.5, beta=math.exp(14.0), c=0.35, k=1.3)
    c = np.geomspace(1e15, 1e19, 14)
    runs = pd.DataFrame({"compute": c, "loss": truth.predict(compute=c)})
    law = law_for_key("m4", runs)
    assert law.e_max == pytest.approx(runs["loss"].min()) and law.plateau is None
    fit = fit_law(runs, law, check_identifiability=False)
    far = 1e22
    assert fit.law.predict(compute=far) == pytest.approx(truth.predict(compute=far), rel=0.01)
    assert runs["loss"].min() > fit.law.E and runs["loss"].max() < fit.law.L0


def test_a_unigram_entropy_above_every_loss_fixes_the_plateau() -> None:
    runs = pd.DataFrame({"compute": [1e15, 1e16], "loss": [4.0, 3.0], "unigram": [5.2, 5.2]})
    assert law_for_key("m4", runs).plateau == 5.2
    assert law_for_key("bounded_nd", runs).plateau == 5.2
    # An entropy below a loss the runs reached cannot be their plateau: L0 is fitted.
    assert law_for_key("m4", runs.assign(unigram=3.5)).plateau is None
    with pytest.raises(ValueError, match="plateau L0 or a lower bound"):
        M4Law(e_max=2.0)


def test_every_law_registers_itself_once_and_every_form_builds() -> None:
    assert LAWS["m4"] is M4Law and LAWS["bounded_nd"] is BoundedNDLaw
    with pytest.raises(TypeError, match="two laws"):
        type("Again", (M4Law,), {"name": "m4", "__annotations__": {}})
    runs = pd.DataFrame({"compute": [1e15, 1e16], "loss": [4.0, 3.0], "unigram": [5.2, 5.2]})
    for form in FORMS.values():
        law = form.build({"unigram": 5.2, "min_loss": 3.0, "max_loss": 4.0})
        assert Law.from_dict(law.to_dict()) == law, form.name
    assert law_for_key("compute", runs).variables == ("compute",)
