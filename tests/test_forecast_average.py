"""Averages of forms: the geometric mean of the members' predictions, bootstrapped side by side,
answered, stored and read back like any fit, with the members a ladder cannot fit left out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import Chinchilla, PowerLaw
from scalelab.forecast.answer import Fit, fit_runs
from scalelab.forecast.forms import FORMS, law_for_key
from scalelab.forecast.laws import Law
from scalelab.forecast.laws_average import AverageLaw

TRUTH = Chinchilla(E=1.8, A=400.0, B=600.0, alpha=0.34, beta=0.3)


def grid_runs(tokens_per_budget: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i, c in enumerate(np.geomspace(1e16, 1e19, 7)):
        for n in np.geomspace(3e6, 3e8, 6):
            d = c / (6 * n)
            loss = float(TRUTH.predict(n_params=n, tokens=d)) * (1 + 0.003 * rng.standard_normal())
            rows.append(
                {"run_id": f"r{len(rows)}", "n_params": n, "tokens": d, "loss": loss, "budget": i}
            )
    df = pd.DataFrame(rows)
    return df.assign(compute=6 * df["n_params"] * df["tokens"])


def test_the_average_is_the_geometric_mean_of_its_members() -> None:
    a = PowerLaw(variable="compute", E=1.7, A=2000.0, alpha=0.17)
    b = PowerLaw(variable="compute", irreducible=False, A=30.0, alpha=0.05)
    avg = AverageLaw.of([a, b])
    c = np.array([1e20, 1e24])
    np.testing.assert_allclose(
        avg.predict(compute=c), np.sqrt(a.predict(compute=c) * b.predict(compute=c))
    )
    assert Law.from_dict(json.loads(json.dumps(avg.to_dict()))) == avg
    # A law of N and D in an average of C answers with its compute-optimal model.
    mixed = AverageLaw.of([TRUTH, a])
    assert mixed.variables == ("compute",)
    expected = np.sqrt(TRUTH.loss_at_compute(1e22) * a.predict(compute=1e22))
    assert mixed.predict(compute=1e22) == pytest.approx(expected)
    assert mixed.asymptote() == pytest.approx(np.sqrt(1.8 * 1.7))
    # An average of laws of N and D allocates compute by minimising the averaged loss.
    twins = AverageLaw.of([TRUTH, TRUTH])
    n, d = twins.optimal_allocation(1e21)
    n_truth, d_truth = TRUTH.optimal_allocation(1e21)
    assert n == pytest.approx(n_truth, rel=1e-4) and d == pytest.approx(d_truth, rel=1e-4)
    assert twins.loss_at_compute(1e21) == pytest.approx(TRUTH.loss_at_compute(1e21))


def test_an_average_fit_answers_and_round_trips() -> None:
    runs = grid_runs()
    fit = fit_runs(runs, law="avg_all", n_resamples=20, n_jobs=1)
    assert isinstance(fit.law, AverageLaw) and len(fit.law.templates) == 6
    far = fit.answer(compute=1e21).outputs["loss"]
    members = [float(law.loss_at_compute(1e21)) for law in fit.law.fitted_members()]
    assert far.value == pytest.approx(float(np.exp(np.mean(np.log(members)))))
    assert min(members) < far.value < max(members) and far.lo < far.value < far.hi
    again = Fit.from_dict(json.loads(json.dumps(fit.to_dict(), default=float)))
    assert again.answer(compute=1e21).outputs["loss"] == far
    needs = fit.answer(loss=float(far.value)).outputs["compute"]
    assert needs.value == pytest.approx(1e21, rel=1e-4)


def test_members_that_cannot_be_fitted_are_left_out_and_said_so() -> None:
    n = np.geomspace(1e6, 1e9, 10)  # every run saw the same D, as GPT-3's did
    one_d = pd.DataFrame(
        {"n_params": n, "tokens": 3e10, "loss": TRUTH.predict(n_params=n, tokens=3e10)}
    ).assign(compute=lambda d: 6 * d["n_params"] * d["tokens"])
    fit = fit_runs(one_d, law="avg_all", n_resamples=10, n_jobs=1)
    names = [t.name for t in fit.law.templates]
    assert "chinchilla" not in names and len(names) == 4
    assert any("chinchilla left out of the average" in w for w in fit.boot.warnings)
    with pytest.raises(ValueError, match="no member of avg_bounded"):
        fit_runs(one_d.head(2), law="avg_bounded", n_resamples=4, n_jobs=1)  # 2 runs


def test_every_average_names_registered_forms() -> None:
    averages = [f for f in FORMS.values() if f.members]
    assert len(averages) >= 2
    for form in averages:
        assert all(m in FORMS and not FORMS[m].members for m in form.members)
        law = law_for_key(form.name, grid_runs())
        assert isinstance(law, AverageLaw) and not law.is_fitted
