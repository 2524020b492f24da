"""``--law auto``: the chooser follows its rule, the calibration widens intervals by the measured
form error, and the rule is learned leave-one-ladder-out, never on a ladder's held-out part."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scalelab.analysis.calibration import BIN_LABELS, FormError, conformal_quantile
from scalelab.analysis.chooser import (
    FORMS,
    MIN_FRONTIER,
    RULE_PATH,
    SHORT_FRONTIER_FORM,
    Rule,
    choose_form,
    frontier_points,
    ladder_features,
    stored_rule,
)
from scalelab.analysis.rule_learning import (
    calibrate_out_of_ladder,
    learn_rule,
    leave_one_ladder_out,
)

BEND = Rule(feature="curvature", threshold=0.0, below="odds", above="chinchilla")


BUDGETS = np.geomspace(1e17, 1e20, 7)


def grid_ladder(loss, budgets=BUDGETS) -> pd.DataFrame:
    """Three sizes per budget, the middle one best; ``loss(C)`` is the frontier's loss."""
    rows = []
    for c in budgets:
        for i, n in enumerate(np.sqrt(c / 120) * np.array([0.5, 1.0, 2.0])):
            rows.append(
                {
                    "run_id": f"{c:g}-{i}",
                    "budget": c,
                    "n_params": n,
                    "tokens": c / (6 * n),
                    "compute": c,
                    "loss": loss(c) * (1.0 if i == 1 else 1.03),
                }
            )
    return pd.DataFrame(rows)


def plateau_bend(c):  # L0 / (1 + (C/C0)^α): the slope steepens as the loss leaves L0
    return 3.2 / (1 + (c / 1e19) ** 0.3)


def near_a_floor(c):  # E + A·C^-α: the slope flattens towards E
    return 1.7 + 30 * c**-0.08


def test_frontier_is_the_best_run_of_each_budget_or_the_lower_envelope() -> None:
    runs = grid_ladder(near_a_floor)
    front = frontier_points(runs)
    assert len(front) == 7 and front["run_id"].str.endswith("-1").all()
    envelope = frontier_points(runs.drop(columns="budget"))
    assert (np.diff(envelope["loss"]) < 0).all()  # each frontier run beats every cheaper one


def test_the_chooser_picks_as_the_rule_says_on_synthetic_ladders() -> None:
    bend, floor = grid_ladder(plateau_bend), grid_ladder(near_a_floor)
    assert ladder_features(bend)["curvature"] < 0 < ladder_features(floor)["curvature"]
    chose = choose_form(bend, rule=BEND)
    assert chose.form.name == "odds" and "curvature" in chose.reason and "<" in chose.reason
    assert choose_form(floor, rule=BEND).form.name == "chinchilla"
    line = chose.line()
    assert line.startswith("law auto: odds") and "because" in line and "\n" not in line


def test_a_form_that_cannot_be_fitted_falls_back() -> None:
    fixed_d = grid_ladder(near_a_floor).assign(tokens=3e9)  # every run saw the same D
    chose = choose_form(fixed_d, rule=BEND)
    assert chose.form.name == BEND.fallback and "fell back" in chose.reason
    ckpt = Rule(form="chinchilla_ckpt30")
    assert choose_form(grid_ladder(near_a_floor), rule=ckpt).form.name == ckpt.fallback
    assert choose_form(grid_ladder(near_a_floor), rule=ckpt, has_curves=True).form.name == (
        "chinchilla_ckpt30"
    )


def test_a_frontier_too_short_for_a_frontier_form_falls_back_to_a_law_of_every_run() -> None:
    # Three budgets (as the quickstart sweeps): a 3-parameter fit to 3 points has no residual
    # and its E runs to a bound; the rule was never learned on fewer than MIN_FRONTIER points.
    three = grid_ladder(plateau_bend, budgets=BUDGETS[: MIN_FRONTIER - 1])
    chose = choose_form(three, rule=BEND)
    assert chose.form.name == SHORT_FRONTIER_FORM
    assert f"frontier has {MIN_FRONTIER - 1} points" in chose.reason and "fell back" in chose.reason
    # One budget more and the rule's own choice stands.
    assert choose_form(grid_ladder(plateau_bend, BUDGETS[:MIN_FRONTIER]), rule=BEND).form.name == (
        "odds"
    )
    # Neither a frontier form nor a law of N and D fits: the rule's fallback is tried anyway.
    fixed_d = three.assign(tokens=3e9)
    assert choose_form(fixed_d, rule=BEND).form.name == BEND.fallback


def test_conformal_quantile_and_the_widening_by_the_measured_term() -> None:
    scores = [0.01 * i for i in range(1, 20)]  # 19 ladders: the 90% quantile is the 18th
    assert conformal_quantile(scores, 0.9) == pytest.approx(0.18)
    error = FormError(tuple(scores))
    k = error.per_decade(2.0, 0.9)
    assert k == pytest.approx(0.18) and error.per_decade(1.0, 0.9) == k  # per decade
    lo, hi = error.widen(2.0, 1.9, 2.2, 2.0, 0.9)
    assert math.log(2.0 / lo) == pytest.approx(math.hypot(math.log(2.0 / 1.9), 2 * k))
    assert math.log(hi / 2.0) == pytest.approx(math.hypot(math.log(2.2 / 2.0), 2 * k))
    # Inside the fitted range the bootstrap interval is kept.
    assert error.widen(2.0, 1.9, 2.2, -0.5, 0.9) == pytest.approx((1.9, 2.2))
    with pytest.raises(ValueError, match="older version"):
        FormError.from_dict({"scores": [[0.1], [], [], []]})


def test_scores_are_the_form_error_each_ladder_needed() -> None:
    # Ladder a: a forecast 2 decades out, 10% too high, whose bootstrap covered ±4% (log), and
    # a closer one that needed less. Ladder b: covered by its bootstrap alone.
    errors = [math.log(1 / 1.1), math.log(1 / 1.01), 0.01]
    fe = FormError.from_forecasts(errors, [0.04, 0.04, 0.04], [2.0, 1.0, 1.0], ["a", "a", "b"])
    assert fe.scores == pytest.approx((0.0, math.sqrt(math.log(1.1) ** 2 - 0.04**2) / 2), abs=1e-6)
    lo, _ = FormError(fe.scores[1:]).widen(1.1, 1.1 * math.exp(-0.04), 1.2, 2.0, 0.9)
    assert lo == pytest.approx(1.0, rel=1e-5)  # exactly covered
    assert FormError.from_dict(fe.to_dict()) == fe


def records(seed: int = 0) -> pd.DataFrame:
    """Benchmark records of four ladders: odds wins where curvature < 0, chinchilla elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for ladder, curvature in (("a", -0.02), ("b", -0.01), ("c", 0.01), ("d", 0.03)):
        for i, decades in enumerate((1.1, 1.5, 2.0, 3.0)):
            good, bad = 0.01 * rng.random(), 0.1 + 0.05 * rng.random()
            row = {
                "ladder": ladder,
                "ratio": 10.0 ** math.floor(decades),
                "distance": BIN_LABELS[i],
                "target": f"{ladder}{i}",
                "decades": decades,
                "n_frontier": 8.0,
                "span": 2.0,
                "curvature": curvature,
                "slope": -0.05,
                "err_odds": good if curvature < 0 else bad,
                "err_chinchilla": bad if curvature < 0 else -good,
                "err_compute_no_e": 0.08,
            }
            for form in ("odds", "chinchilla", "compute_no_e"):
                for side in ("lo", "hi"):
                    row[f"{side}90_{form}"] = 0.02
            rows.append(row)
    return pd.DataFrame(rows)


def test_learn_rule_finds_the_threshold_the_records_support() -> None:
    rule = learn_rule(records())
    assert rule.feature == "curvature" and rule.below == "odds" and rule.above == "chinchilla"
    assert -0.01 <= rule.threshold <= 0.01


def test_two_forms_with_the_same_errors_tie_without_failing() -> None:
    recs = records()
    twin = recs.assign(err_chinchilla_no_e=recs["err_chinchilla"])
    for side in ("lo", "hi"):
        twin[f"{side}90_chinchilla_no_e"] = twin[f"{side}90_chinchilla"]
    assert learn_rule(twin).form in (None, "chinchilla", "chinchilla_no_e", "odds")
    only = twin[twin["ladder"] == "d"]  # chinchilla and its twin win every forecast here
    assert learn_rule(only).form == "chinchilla"  # the earlier candidate of the tie


def test_each_fold_is_learned_without_its_held_out_ladder() -> None:
    recs = records()
    folds = leave_one_ladder_out(recs)
    assert [f.held_out for f in folds] == ["a", "b", "c", "d"]
    for fold in folds:
        assert fold.held_out not in fold.trained_on
        assert set(fold.trained_on) == set("abcd") - {fold.held_out}
    # Spoiling a ladder's own errors (its held-out part) cannot change the rule it is scored
    # by, though it changes the rule learned on every ladder.
    spoiled = recs.copy()
    spoiled.loc[spoiled["ladder"] == "a", ["err_odds", "err_chinchilla"]] = [-0.3, 0.0]
    again = {f.held_out: f.rule for f in leave_one_ladder_out(spoiled)}
    assert again["a"] == folds[0].rule
    assert learn_rule(spoiled) != learn_rule(recs)


def test_calibration_out_of_ladder_refuses_a_fold_that_saw_its_ladder() -> None:
    recs = records()
    folds = leave_one_ladder_out(recs)
    cal = calibrate_out_of_ladder(recs, folds)
    assert len(cal) == len(recs) and (cal["cal_hi"] >= cal["boot_hi"]).all()
    leaky = [type(folds[0])(folds[0].held_out, ("a", "b", "c", "d"), folds[0].rule)]
    with pytest.raises(AssertionError, match="trained on it"):
        calibrate_out_of_ladder(recs, leaky)


def test_the_stored_rule_names_known_forms_and_the_command_that_wrote_it() -> None:
    payload = json.loads(RULE_PATH.read_text())
    assert payload["command"].startswith("python analysis/forecast_benchmark.py")
    rule = stored_rule()
    assert rule.fallback in FORMS
    assert "auto" in payload["form_error"]
    assert len(payload["ladders"]) >= 8
    auto = FormError.from_dict(payload["form_error"]["auto"])
    assert list(auto.scores) == sorted(auto.scores) and len(auto.scores) >= 8  # one per ladder
