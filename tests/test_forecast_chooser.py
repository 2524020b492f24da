"""``--law auto``: the chooser follows its rule, the form-error model honours the level asked
for, and the default is learned leave-one-source-out, never on a source's held-out part."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import special

from scalelab.forecast.benchmark.learning import (
    choose_default,
    learn_rule,
    leave_one_source_out,
)
from scalelab.forecast.calibration import BIN_LABELS, FormError
from scalelab.forecast.chooser import (
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
    # Neither a frontier form nor a law of N and D fits: auto refuses, saying what is missing.
    fixed_d = three.assign(tokens=3e9)
    with pytest.raises(ValueError, match="law auto cannot forecast from these runs.*budgets"):
        choose_form(fixed_d, rule=BEND)


def model_forecasts(n_ladders: int = 40, per_ladder: int = 6, seed: int = 0):
    """Forecasts drawn from the form-error model itself: t(3) errors with scale 0.03·d^1.2."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(1.0, 3.3, n_ladders * per_ladder)
    boot = np.full_like(d, 0.01)
    scale = np.hypot(0.03 * d**1.2, boot / 1.6448536269514722)
    errors = scale * rng.standard_t(3.0, size=len(d))
    ladders = np.repeat([f"l{i}" for i in range(n_ladders)], per_ladder)
    return errors, boot, d, ladders


def test_the_form_error_model_is_fitted_and_its_levels_differ() -> None:
    errors, boot, d, ladders = model_forecasts()
    model = FormError.from_forecasts(errors, boot, d, ladders)
    assert model.sigma == pytest.approx(0.03, rel=0.35) and model.gamma == pytest.approx(
        1.2, abs=0.4
    )
    widths = [float(model.half_width(2.0, q)) for q in (0.8, 0.9, 0.95)]
    assert widths[0] < widths[1] < widths[2]  # --level is honoured
    assert float(model.half_width(-0.5, 0.9)) == 0.0  # inside the fitted range: bootstrap only
    lo, hi = model.widen(2.0, 1.9, 2.2, 2.0, 0.9)
    assert math.log(2.0 / lo) == pytest.approx(math.hypot(math.log(2.0 / 1.9), widths[1]))
    assert math.log(hi / 2.0) == pytest.approx(math.hypot(math.log(2.2 / 2.0), widths[1]))
    assert model.per_decade(2.0, 0.9) == pytest.approx(widths[1] / 2.0)
    assert FormError.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="older version"):
        FormError.from_dict({"unit": "ladder", "scores": [0.1]})


def test_the_fitted_model_covers_new_forecasts_at_the_level_asked_for() -> None:
    model = FormError.from_forecasts(*model_forecasts(seed=1))
    errors, boot, d, _ = model_forecasts(n_ladders=400, seed=2)
    for level in (0.8, 0.9, 0.95):
        boot_q = boot / 1.6448536269514722 * float(special.ndtri(0.5 + level / 2))
        half = np.hypot(boot_q, model.half_width(d, level))
        coverage = float(np.mean(np.abs(errors) <= half))
        assert coverage == pytest.approx(level, abs=0.04), level


def records(seed: int = 0) -> pd.DataFrame:
    """Benchmark records of four ladders of three sources (c and d share one): odds wins
    where curvature < 0, chinchilla elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for ladder, curvature in (("a", -0.02), ("b", -0.01), ("c", 0.01), ("d", 0.03)):
        for i, decades in enumerate((1.1, 1.5, 2.0, 3.0)):
            good, bad = 0.01 * rng.random(), 0.1 + 0.05 * rng.random()
            row = {
                "ladder": ladder,
                "source": "cd" if ladder in "cd" else ladder,
                "hindsight": False,
                "shared_run": False,
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
                for level in ("80", "90", "95"):
                    for side in ("lo", "hi"):
                        row[f"{side}{level}_{form}"] = 0.02
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


LEVELS = (0.8, 0.9, 0.95)


def test_each_source_is_held_out_with_its_siblings() -> None:
    recs = records()
    folds = leave_one_source_out(recs, BIN_LABELS, LEVELS)
    assert [f.source for f in folds] == ["a", "b", "cd"]
    cd = folds[2].held
    assert set(cd["ladder"]) == {"c", "d"} and set(cd["candidate"]) >= {"odds", "rule"}
    # Spoiling a source's own errors cannot change what scores it (its rule, calibration and
    # default were learned on the other sources), though it changes what they learn.
    spoiled = recs.copy()
    spoiled.loc[spoiled["source"] == "a", ["err_odds", "err_chinchilla"]] = [-0.3, 0.0]
    again = leave_one_source_out(spoiled, BIN_LABELS, LEVELS)
    untouched = ["cal_lo90", "cal_hi90"]
    first, second = folds[0].held, again[0].held
    assert folds[0].default == again[0].default
    pd.testing.assert_frame_equal(first[untouched], second[untouched])
    rule = first[first["candidate"] == "rule"]["form"].tolist()
    assert rule == second[second["candidate"] == "rule"]["form"].tolist()
    assert again[1].held["cal_lo90"].tolist() != folds[1].held["cal_lo90"].tolist()


def test_targets_that_share_a_run_with_a_fitted_point_are_never_learned_from() -> None:
    recs = records()
    marked = recs.assign(shared_run=recs["ladder"] == "b")
    marked.loc[marked["ladder"] == "b", "err_odds"] = 3.0  # would dominate any calibration
    base = leave_one_source_out(recs.assign(shared_run=recs["ladder"] == "b"), BIN_LABELS, LEVELS)
    spoiled = leave_one_source_out(marked, BIN_LABELS, LEVELS)
    for before, after in zip(base, spoiled, strict=True):
        if before.source != "b":
            pd.testing.assert_frame_equal(before.held, after.held)


def test_the_default_is_best_far_out_without_being_worse_at_10x() -> None:
    table = pd.DataFrame(
        {
            "10x": [0.02, 0.03, 0.05, 0.02],
            "30x": [0.03, 0.03, 0.03, 0.03],
            "100x": [0.06, 0.05, 0.02, 0.05],
            "1000x": [0.20, 0.15, 0.05, 0.14],
        },
        index=["compute", "odds", "avg", "rule"],
    )
    # avg is best far out but worse at 10x than odds (the best single form far out).
    assert choose_default(table, ["compute", "odds"]) == "rule"
    assert choose_default(table.drop(index="rule"), ["compute", "odds"]) == "odds"


def test_the_stored_default_names_a_known_form_and_the_command_that_wrote_it() -> None:
    payload = json.loads(RULE_PATH.read_text())
    assert payload["command"].startswith("scalelab benchmark forecasts")
    rule = stored_rule()
    assert rule.fallback in FORMS and (rule.form is None or rule.form in FORMS)
    assert len(payload["sources"]) >= 6 and len(payload["ladders"]) >= 12
    auto = FormError.from_dict(payload["form_error"]["auto"])
    assert auto.n_ladders >= 12 and auto.half_width(2.0, 0.95) > auto.half_width(2.0, 0.8)
