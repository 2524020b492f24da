"""Learning the ``auto`` rule and its form-error term from benchmark forecasts, one ladder out.

A *record* is one benchmark forecast: a ladder, a ratio, a held-out target, the features of
the runs the fit saw (``scalelab.analysis.chooser.FEATURES``), the decades between the
target's compute and the largest fitted one, and for each form ``f`` its log error
``err_<f>`` = log(predicted / actual) (NaN when the form could not be fitted) and the
bootstrap log half-widths ``lo_<f>``/``hi_<f>`` at the level calibrated.

- :func:`learn_rule` picks, among "always form F" and one-threshold rules on one feature, the
  rule whose forecasts have the smallest error, averaged so that every ladder counts once
  (the median |log error| of each ladder and distance, averaged over its distances, then
  over ladders). A threshold rule must beat the best single form by ``MARGIN`` and, one
  ladder out within the records, forecast better than single forms do.
- :func:`leave_one_ladder_out` learns a rule without each ladder in turn and applies it to
  that ladder only, so the benchmark's errors for ``auto`` never come from a rule that saw
  the ladder; it records which ladders each rule was fitted on.
- :func:`calibrate_out_of_ladder` does the same for the form-error term: the held-out
  ladder's intervals are widened by scores measured on the other ladders' forecasts, chosen
  by the rule that did not see it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scalelab.analysis.calibration import FormError
from scalelab.analysis.chooser import FEATURES, FORMS, Rule
from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")

MARGIN = 0.05  # a threshold rule must score at least 5% below the best single form
THRESHOLD_QUANTILES = np.linspace(0.1, 0.9, 9)


def forms_in(records: pd.DataFrame) -> list[str]:
    return [f for f in FORMS if f"err_{f}" in records]


def chosen_forms(rule: Rule, records: pd.DataFrame) -> np.ndarray:
    """The form the rule picks for each record, after the fallback for unfittable forms."""
    out = []
    for _, row in records.iterrows():
        name, _ = rule.pick(row)
        if not np.isfinite(row.get(f"err_{name}", math.nan)):
            name = rule.fallback
        out.append(name)
    return np.array(out, dtype=object)


def _pick_errors(records: pd.DataFrame, forms: np.ndarray) -> np.ndarray:
    errors = records[[f"err_{f}" for f in FORMS if f"err_{f}" in records]]
    index = {f: i for i, f in enumerate(forms_in(records))}
    cols = np.array([index[f] for f in forms])
    return errors.to_numpy()[np.arange(len(records)), cols]


def ladder_groups(records: pd.DataFrame) -> list[list[np.ndarray]]:
    """Row positions of each (ladder, distance), grouped by ladder."""
    ladders = records["ladder"].to_numpy()
    distances = records["distance"].to_numpy()
    out = []
    for ladder in pd.unique(ladders):
        mine = ladders == ladder
        out.append([np.flatnonzero(mine & (distances == d)) for d in pd.unique(distances[mine])])
    return out


def ladder_score(
    records: pd.DataFrame, abs_errors: np.ndarray, groups: list[list[np.ndarray]] | None = None
) -> float:
    """Mean over ladders of the mean over distances of the median |log error| (NaN:
    unfittable, counted as a 100% error so a rule cannot win by failing)."""
    err = np.where(np.isfinite(abs_errors), abs_errors, math.log(2.0))
    groups = ladder_groups(records) if groups is None else groups
    return float(np.mean([np.mean([np.median(err[i]) for i in ladder]) for ladder in groups]))


def _fallback(records: pd.DataFrame) -> str:
    """The frontier form with the best score where a law of N and D cannot be fitted (every
    run saw the same D), or on every record if there is no such ladder: a frontier form can
    be fitted wherever a rule's form cannot."""
    forms = forms_in(records)
    frontier = [f for f in forms if FORMS[f].points == "frontier"]
    nd = [f"err_{f}" for f in forms if FORMS[f].points == "all" and FORMS[f].exclude_before is None]
    failing = records[records[nd].isna().all(axis=1)] if nd else records.iloc[:0]
    pool = failing if len(failing) else records
    return min(frontier, key=lambda f: ladder_score(pool, pool[f"err_{f}"].abs().to_numpy()))


def _score(
    rule: Rule,
    records: pd.DataFrame,
    picks: dict[str, np.ndarray],
    errors: dict[str, np.ndarray],
    groups: list[list[np.ndarray]],
) -> float:
    """The rule's score, from each form's errors after the fallback (``errors``)."""
    if rule.form is not None:
        return ladder_score(records, errors[rule.form], groups)
    value = records[rule.feature].to_numpy(dtype=float)
    below = np.isfinite(value) & (value < rule.threshold)
    chosen = np.where(below, errors[rule.below], errors[rule.above])  # type: ignore[index]
    return ladder_score(records, chosen, groups)


def candidate_rules(records: pd.DataFrame, fallback: str) -> list[Rule]:
    forms = forms_in(records)
    rules = [Rule(form=f, fallback=fallback) for f in forms]
    for feature in FEATURES:
        values = records[feature].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(np.unique(values)) < 2:
            continue
        for t in np.unique(np.quantile(values, THRESHOLD_QUANTILES)):
            for below, above in itertools.permutations(forms, 2):
                rules.append(Rule(None, feature, float(t), below, above, fallback))
    return rules


def learn_rule(records: pd.DataFrame, *, nested: bool = True) -> Rule:
    """The rule with the smallest benchmark error on ``records`` (see the module docstring).

    With ``nested``, a threshold rule is preferred to the best single form only if threshold
    rules also forecast better one ladder out *within* ``records`` (each ladder of
    ``records`` scored by rules learned on the others): a threshold fitted to a handful of
    ladders can fit their noise.
    """
    best = _learn(records)
    if not nested or best.form is not None or records["ladder"].nunique() < 3:
        return best
    single, threshold = 0.0, 0.0
    for ladder in records["ladder"].unique():
        mine, rest = records[records["ladder"] == ladder], records[records["ladder"] != ladder]
        for rule, total in ((_learn(rest, singles_only=True), "single"), (_learn(rest), "any")):
            score = _score_records(rule, mine)
            if total == "single":
                single += score
            else:
                threshold += score
    return best if threshold < single else _learn(records, singles_only=True)


def _score_records(rule: Rule, records: pd.DataFrame) -> float:
    return ladder_score(records, np.abs(_pick_errors(records, chosen_forms(rule, records))))


def _learn(records: pd.DataFrame, singles_only: bool = False) -> Rule:
    if records.empty:
        raise ValueError("no benchmark records to learn a rule from")
    fallback = _fallback(records)
    # Each form's choice after the fallback, computed once for every rule.
    picks = {
        f: np.where(np.isfinite(records[f"err_{f}"].to_numpy()), f, fallback)
        for f in forms_in(records)
    }
    errors = {f: np.abs(_pick_errors(records, p)) for f, p in picks.items()}
    groups = ladder_groups(records)
    rules = candidate_rules(records, fallback)
    if singles_only:
        rules = [r for r in rules if r.form is not None]
    scored = [(r, _score(r, records, picks, errors, groups)) for r in rules]
    # Ties (two forms with the same errors) go to the earlier candidate: Rules do not order.
    best_single = min(((s, r) for r, s in scored if r.form is not None), key=lambda sr: sr[0])
    best_any = min(scored, key=lambda rs: rs[1])
    if best_any[1] < (1.0 - MARGIN) * best_single[0]:
        return best_any[0]
    return best_single[1]


@dataclass(frozen=True)
class Fold:
    """One leave-one-ladder-out fold: the ladder held out and the rule learned without it."""

    held_out: str
    trained_on: tuple[str, ...]
    rule: Rule


def leave_one_ladder_out(records: pd.DataFrame) -> list[Fold]:
    folds = []
    for ladder in sorted(records["ladder"].unique()):
        rest = records[records["ladder"] != ladder]
        folds.append(Fold(ladder, tuple(sorted(rest["ladder"].unique())), learn_rule(rest)))
    return folds


def side_half_widths(records: pd.DataFrame, forms: np.ndarray, level: str) -> np.ndarray:
    """The bootstrap log half-width on the side of each record's error, for its form."""
    out = []
    for (_, row), f in zip(records.iterrows(), forms, strict=True):
        side = "hi" if row[f"err_{f}"] < 0 else "lo"  # predicted too low: the upper side
        out.append(row[f"{side}{level}_{f}"])
    return np.array(out, dtype=float)


def form_error(records: pd.DataFrame, forms: np.ndarray, level: str = "90") -> FormError:
    """Form-error scores of the forecasts ``records`` made with ``forms``."""
    errors = _pick_errors(records, forms)
    ok = np.isfinite(errors)
    halves = side_half_widths(records[ok], forms[ok], level)
    return FormError.from_forecasts(
        -errors[ok], halves, records["decades"].to_numpy()[ok], records["ladder"].to_numpy()[ok]
    )


def calibrate_out_of_ladder(
    records: pd.DataFrame, folds: Sequence[Fold], level: float = 0.9, score_level: float = 0.9
) -> pd.DataFrame:
    """Per record of every held-out ladder: the form its fold's rule chose, the error, and
    the bootstrap and calibrated ``level`` intervals (log half-widths below and above the
    forecast), the form-error scores (measured with ``score_level`` bootstrap intervals, as
    stored) coming from the other ladders only."""
    tag = f"{round(100 * level)}"
    parts = []
    for fold in folds:
        mine = records[records["ladder"] == fold.held_out]
        rest = records[records["ladder"].isin(fold.trained_on)]
        if fold.held_out in fold.trained_on:
            raise AssertionError(f"fold of {fold.held_out} was trained on it")
        scores_tag = f"{round(100 * score_level)}"
        calibration = form_error(rest, chosen_forms(fold.rule, rest), scores_tag)
        forms = chosen_forms(fold.rule, mine)
        errors = _pick_errors(mine, forms)
        lo = np.array([r[f"lo{tag}_{f}"] for (_, r), f in zip(mine.iterrows(), forms, strict=True)])
        hi = np.array([r[f"hi{tag}_{f}"] for (_, r), f in zip(mine.iterrows(), forms, strict=True)])
        k = np.array([calibration.per_decade(d, level) for d in mine["decades"]])
        form = k * mine["decades"].to_numpy()
        parts.append(
            mine[["ladder", "distance", "ratio", "target", "decades"]].assign(
                form=forms,
                log_error=errors,
                boot_lo=lo,
                boot_hi=hi,
                cal_lo=np.hypot(lo, form),
                cal_hi=np.hypot(hi, form),
            )
        )
    return pd.concat(parts, ignore_index=True)
