"""Scaling-law forms: predictions, Jacobians, allocation, inversion and serialisation."""

import json
import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize_scalar

from scalelab.forecast import Chinchilla, KaplanJoint, Law, PowerLaw, make_law
from scalelab.forecast.forms import law_for_key
from scalelab.forecast.laws import OddsLaw, PlateauLaw

CHINCHILLA = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
KAPLAN = KaplanJoint(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095)
LAWS = {
    "chinchilla": CHINCHILLA,
    "chinchilla_no_offset": Chinchilla(irreducible=False, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "kaplan": KAPLAN,
    "power_n": PowerLaw(variable="n_params", E=1.8, A=400.0, alpha=0.34),
    "power_c": PowerLaw(variable="compute", E=1.7, A=2000.0, alpha=0.15),
    "power_c_no_offset": PowerLaw(variable="compute", irreducible=False, A=50.0, alpha=0.05),
    "plateau": PlateauLaw(plateau=3.2, E=1.6, C0=1e19, alpha=0.3),
    "plateau_no_offset": PlateauLaw(plateau=3.2, irreducible=False, C0=1e19, alpha=0.3),
    "odds": OddsLaw(L0=3.2, C0=1e19, alpha=0.3),
}
INPUTS = {
    "n_params": np.array([1e7, 3e8, 7e10]),
    "tokens": np.array([2e9, 6e9, 1.4e12]),
    "compute": np.array([1e18, 1e20, 5.76e23]),
}


def test_predict_matches_the_written_formulas():
    n, d, c = INPUTS["n_params"], INPUTS["tokens"], INPUTS["compute"]
    np.testing.assert_allclose(
        CHINCHILLA.predict(n_params=n, tokens=d), 1.69 + 406.4 * n**-0.34 + 410.7 * d**-0.28
    )
    np.testing.assert_allclose(
        KAPLAN.predict(n_params=n, tokens=d),
        ((8.8e13 / n) ** (0.076 / 0.095) + 5.4e13 / d) ** 0.095,
    )
    np.testing.assert_allclose(LAWS["power_c"].predict(compute=c), 1.7 + 2000.0 * c**-0.15)
    np.testing.assert_allclose(LAWS["power_c_no_offset"].predict(compute=c), 50.0 * c**-0.05)
    np.testing.assert_allclose(
        LAWS["plateau"].predict(compute=c), 1.6 + 1.6 / (1 + (c / 1e19) ** 0.3)
    )
    # From the plateau at small compute, the slope steepens towards -alpha (no E).
    flat = LAWS["plateau_no_offset"]
    assert flat.predict(compute=1e9) == pytest.approx(3.2, rel=1e-2)
    slopes = np.diff(np.log(flat.predict(compute=np.array([1e17, 1e18, 1e25, 1e26])))) / np.log(10)
    assert -0.3 < slopes[-1] < slopes[0] < 0 and slopes[-1] == pytest.approx(-0.3, rel=2e-2)


def test_the_odds_law_is_a_power_law_in_the_odds_with_l0_fixed_or_fitted():
    c = INPUTS["compute"]
    odds = LAWS["odds"]
    # L0/L − 1 = (C/C0)^alpha: the plateau law without E, with L0 a parameter.
    np.testing.assert_allclose(3.2 / odds.predict(compute=c) - 1, (c / 1e19) ** 0.3)
    np.testing.assert_allclose(
        odds.predict(compute=c), LAWS["plateau_no_offset"].predict(compute=c)
    )
    assert law_for_key("odds") == OddsLaw()  # no unigram entropy: L0 is fitted
    import pandas as pd

    runs = pd.DataFrame({"compute": [1e18], "loss": [3.0], "unigram": [3.4]})
    assert law_for_key("odds", runs) == PlateauLaw(plateau=3.4, irreducible=False)
    with pytest.raises(ValueError, match="chooser"):
        law_for_key("auto", runs)


def test_predict_is_vectorised_and_returns_floats_for_scalars():
    out = CHINCHILLA.predict(n_params=np.array([[1e8], [1e9]]), tokens=np.array([1e10, 1e11]))
    assert out.shape == (2, 2)
    assert out[0, 1] == pytest.approx(CHINCHILLA.predict(n_params=1e8, tokens=1e11))
    assert isinstance(CHINCHILLA.predict(n_params=1e8, tokens=1e10), float)


@pytest.mark.parametrize("name", LAWS)
def test_analytic_jacobian_matches_finite_differences(name):
    law = LAWS[name]
    z = np.log(np.stack([INPUTS[v] for v in law.variables]))
    theta = law.to_theta()
    _, jac = law.log_model(theta, z, jac=True)
    for i in range(z.shape[1]):
        numeric = approx_fprime(theta, lambda t, i=i: law.log_model(t, z)[i], 1e-7)
        np.testing.assert_allclose(jac[:, i], numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", LAWS)
def test_batched_log_model_matches_row_by_row(name):
    law = LAWS[name]
    z = np.log(np.stack([INPUTS[v] for v in law.variables]))
    thetas = law.theta_grid()[:7]
    batch = law.log_model(thetas, z)
    for row, theta in zip(batch, thetas, strict=True):
        np.testing.assert_allclose(row, law.log_model(theta, z))


@pytest.mark.parametrize("name", LAWS)
def test_theta_round_trip_and_json_serialisation(name):
    law = LAWS[name]
    assert law.with_theta(law.to_theta()).params == pytest.approx(law.params)
    restored = Law.from_dict(json.loads(json.dumps(law.to_dict())))
    assert restored == law
    assert type(restored) is type(law)


def test_str_is_readable_for_fitted_and_unfitted_laws():
    text = str(CHINCHILLA)
    assert text == "chinchilla: L(N, D) = 1.69 + 406.4·N^-0.34 + 410.7·D^-0.28"
    assert "unfitted" in str(Chinchilla()) and "E + A·N^-alpha" in str(Chinchilla())
    assert str(LAWS["power_c"]).startswith("power_law: L(C) = 1.7 + 2000·C^-0.15")


def test_unfitted_law_refuses_to_predict():
    with pytest.raises(ValueError, match="unfitted"):
        Chinchilla().predict(n_params=1e9, tokens=1e10)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_predict_rejects_non_positive_or_non_finite_inputs(bad):
    with pytest.raises(ValueError, match="n_params must be positive and finite"):
        CHINCHILLA.predict(n_params=[1e9, bad], tokens=1e10)


def test_predict_names_missing_inputs():
    with pytest.raises(ValueError, match="missing tokens"):
        CHINCHILLA.predict(n_params=1e9)


@pytest.mark.parametrize("law", [CHINCHILLA, KAPLAN])
def test_closed_form_allocation_is_the_numerical_minimum(law):
    for c in (1e19, 1e22, 5.76e23):
        n_opt, d_opt = law.optimal_allocation(c)
        assert 6 * n_opt * d_opt == pytest.approx(c)
        res = minimize_scalar(
            lambda x, c=c: law.predict(n_params=math.exp(x), tokens=c / (6 * math.exp(x))),
            bounds=(math.log(1e3), math.log(1e15)),
            method="bounded",
            options={"xatol": 1e-9},
        )
        assert math.exp(res.x) == pytest.approx(float(n_opt), rel=1e-4)


def test_chinchilla_allocation_exponents_and_ratio():
    a, b = CHINCHILLA.allocation_exponents()
    assert a == pytest.approx(0.28 / 0.62)
    assert a + b == pytest.approx(1.0)
    n1, d1 = CHINCHILLA.optimal_allocation(1e21)
    n2, d2 = CHINCHILLA.optimal_allocation(1e23)
    assert math.log(n2 / n1) / math.log(100) == pytest.approx(a)
    assert math.log(d2 / d1) / math.log(100) == pytest.approx(b)


def test_compute_for_loss_inverts_loss_at_compute():
    for target in (2.5, 2.0, 1.8):
        c = CHINCHILLA.compute_for_loss(target)
        assert CHINCHILLA.loss_at_compute(c) == pytest.approx(target, rel=1e-9)
    power = LAWS["power_c"]
    c = power.compute_for_loss(2.2)
    assert c == pytest.approx((2000.0 / (2.2 - 1.7)) ** (1 / 0.15), rel=1e-8)


def test_compute_for_loss_below_the_asymptote_is_infinite_not_nan():
    assert CHINCHILLA.compute_for_loss(1.69) == math.inf
    assert CHINCHILLA.compute_for_loss(1.0) == math.inf


def test_one_variable_law_has_no_allocation():
    with pytest.raises(ValueError, match="no compute-optimal allocation"):
        LAWS["power_n"].optimal_allocation(1e21)


def test_make_law_understands_names_and_dicts():
    assert make_law("power_law:n_params") == PowerLaw(variable="n_params")
    assert make_law("kaplan") == KaplanJoint()
    assert make_law(CHINCHILLA.to_dict()) == CHINCHILLA
    with pytest.raises(ValueError, match="unknown law 'gpt'"):
        make_law("gpt")
    with pytest.raises(ValueError, match="variable must be one of"):
        PowerLaw(variable="flops")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no irreducible term"):
        KaplanJoint(irreducible=True)


def test_degenerate_corners_answer_without_runtime_warnings():
    """A law at its bounds still answers, and says inf where inf is the answer."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        flat_in_n = Chinchilla(E=1.0, A=0.0, B=400.0, alpha=0.3, beta=0.3)
        n_opt, d_opt = flat_in_n.optimal_allocation(np.array([1e20]))
        assert n_opt[0] == 0.0 and d_opt[0] == math.inf
        # Far past C0 the sigmoid underflows to 0: its log is still the finite limit.
        law = LAWS["plateau_no_offset"]
        theta = np.array([5.0, 0.8])  # log C0, alpha
        z = np.log([[1e30]])
        out, jac = law.log_model(theta, z, jac=True)
        expected = math.log(3.2) - 0.8 * (math.log(1e30) - 5.0)
        assert out[0] == pytest.approx(expected) and np.isfinite(jac).all()
