"""Learning the default and its form-error model from benchmark forecasts, one source out.

A *record* is one benchmark forecast: a ladder and its source, a ratio, a held-out target,
the features of the runs the fit saw (``scalelab.forecast.chooser.FEATURES``), the decades
between the target's compute and the largest fitted one, and for each form ``f`` its log
error ``err_<f>`` = log(predicted / actual) (NaN when the form could not be fitted) and the
bootstrap log half-widths ``lo<L>_<f>``/``hi<L>_<f>`` at each level L.

The candidates for the default, all scored the same way:

- every single form (a form that cannot be fitted falls back, as ``auto`` does);
- averages of forms (the geometric mean of the members' predictions that could be fitted);
- a learned rule (:func:`learn_rule`): "always form F" or one threshold on one feature.

:func:`leave_one_source_out` holds out every ladder of one source (a paper or code base)
together: the rule, the fallback and the form-error model that score a source never saw it
or its siblings, and the default is also *selected* without it, so the row "default" of the
report is an honest forecast of how the selection does on a new source. Inside a fold a
learned rule is scored and calibrated one source out as well (:func:`outputs_out_of_source`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scalelab.forecast.calibration import FormError
from scalelab.forecast.chooser import FEATURES, FORMS, Rule
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


def fallback_form(records: pd.DataFrame) -> str:
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
    fallback = fallback_form(records)
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


# ---- candidates, scores and the default, one source out --------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A way to forecast: one form, the average of forms, or the learned rule."""

    name: str
    kind: Literal["form", "average", "rule"]
    members: tuple[str, ...] = ()


def candidates(records: pd.DataFrame) -> list[Candidate]:
    """Every form the records scored, every average of them (``FORMS`` entries with
    members), and the learned rule."""
    forms = forms_in(records)
    singles = [f for f in forms if not FORMS[f].members]
    out = [Candidate(f, "form", (f,)) for f in singles]
    out += [
        Candidate(f.name, "average", f.members)
        for f in FORMS.values()
        if f.members and all(m in singles for m in f.members)
    ]
    return [*out, Candidate("rule", "rule")]


def outputs(
    candidate: Candidate, records: pd.DataFrame, train: pd.DataFrame, levels: Sequence[float]
) -> pd.DataFrame:
    """Per record: the candidate's log error and bootstrap half-widths at ``levels``, with
    anything learned (the rule, the fallback) learned on ``train`` only."""
    tags = [f"{round(100 * level)}" for level in levels]
    if candidate.kind == "average":
        members = candidate.members
        err = records[[f"err_{m}" for m in members]].to_numpy()
        out = {"err": np.nanmean(np.where(np.isfinite(err), err, np.nan), axis=1)}
        for tag in tags:
            for side in ("lo", "hi"):
                cols = records[[f"{side}{tag}_{m}" for m in members]].to_numpy()
                out[f"{side}{tag}"] = np.nanmean(np.where(np.isfinite(err), cols, np.nan), axis=1)
        return pd.DataFrame(out, index=records.index)
    if candidate.kind == "rule" and train.empty:  # nothing to learn from: no forecast
        nan = np.full(len(records), np.nan)
        return pd.DataFrame(
            {"err": nan, **{f"{side}{tag}": nan for tag in tags for side in ("lo", "hi")}},
            index=records.index,
        )
    if candidate.kind == "rule":
        rule = learn_rule(train, nested=False)  # the outer fold scores it out of source
    else:
        rule = Rule(form=candidate.name, fallback=fallback_form(train))
    forms = chosen_forms(rule, records)
    out = {"err": _pick_errors(records, forms), "form": forms}
    for tag in tags:
        for side in ("lo", "hi"):
            rows = zip(records.iterrows(), forms, strict=True)
            out[f"{side}{tag}"] = [row.get(f"{side}{tag}_{f}", np.nan) for (_, row), f in rows]
    return pd.DataFrame(out, index=records.index)


def median_abs(err: np.ndarray) -> float:
    """Median |relative error| of forecasts whose log errors are ``err`` (NaN: none)."""
    ok = np.asarray(err, dtype=float)
    ok = ok[np.isfinite(ok)]
    return float(np.median(np.abs(np.expm1(ok)))) if len(ok) else math.nan


def scores(held: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Median |error| per candidate and distance (rows: candidates; columns: ``labels``)."""
    table = held.groupby(["candidate", "distance"])["err"].apply(lambda e: median_abs(e.to_numpy()))
    return table.unstack().reindex(columns=list(labels))


def choose_default(table: pd.DataFrame, singles: Sequence[str]) -> str:
    """The candidate best at 100x and 1000x (the mean of its two medians) among those no
    worse at 10x than the single form that is best at 100x and 1000x. Where no forecast
    reaches 100x (a small benchmark), every distance counts."""
    far = table.reindex(columns=["100x", "1000x"]).mean(axis=1)
    if far.loc[list(singles)].isna().all():
        far = table.mean(axis=1)
    best_single = far.loc[list(singles)].idxmin()
    near = table.reindex(columns=["10x"])["10x"]
    eligible = (near <= near.loc[best_single] + 1e-12) | (table.index == best_single)
    return str(far[eligible].idxmin())


def form_error_of(out: pd.DataFrame, records: pd.DataFrame) -> FormError:
    """The form-error model fitted to a candidate's forecasts (90% bootstrap half-widths)."""
    side = np.where(out["err"] < 0, out["hi90"], out["lo90"])
    return FormError.from_forecasts(
        -out["err"].to_numpy(), side, records["decades"].to_numpy(), records["ladder"].to_numpy()
    )


@dataclass(frozen=True)
class SourceFold:
    """One source held out: its ladders' forecasts by every candidate, calibrated on the
    other sources, and the default those other sources select."""

    source: str
    default: str
    held: pd.DataFrame


def _calibrated(out: pd.DataFrame, cal: FormError | None, decades: np.ndarray, levels) -> dict:
    cols = {}
    for level in levels:
        tag = f"{round(100 * level)}"
        form = cal.half_width(decades, level) if cal is not None else np.zeros_like(decades)
        cols[f"cal_lo{tag}"] = np.hypot(out[f"lo{tag}"].to_numpy(dtype=float), form)
        cols[f"cal_hi{tag}"] = np.hypot(out[f"hi{tag}"].to_numpy(dtype=float), form)
    return cols


def outputs_out_of_source(
    candidate: Candidate, records: pd.DataFrame, levels: Sequence[float]
) -> pd.DataFrame:
    """The candidate's outputs on ``records`` with what it learns (a rule) learned without
    each record's source: its errors there are as honest as on a held-out source, so a learned
    rule neither wins the selection nor narrows its calibration by scoring itself."""
    if candidate.kind != "rule":
        return outputs(candidate, records, records, levels)
    parts = [
        outputs(candidate, records[records["source"] == s], records[records["source"] != s], levels)
        for s in records["source"].unique()
    ]
    return pd.concat(parts).reindex(records.index)


def leave_one_source_out(
    records: pd.DataFrame, labels: Sequence[str], levels: Sequence[float]
) -> list[SourceFold]:
    """Every source held out in turn (see the module docstring). Records of targets that share
    a training run with a fitted point (``shared_run``) are scored but never learned from."""
    folds = []
    learnable = records[~records["shared_run"].astype(bool)]
    every = candidates(records)
    singles = [c.name for c in every if c.kind == "form"]
    for source in sorted(records["source"].unique()):
        train = learnable[learnable["source"] != source]
        test = records[records["source"] == source]
        parts, train_parts = [], []
        for candidate in every:
            out_test = outputs(candidate, test, train, levels)
            out_train = outputs_out_of_source(candidate, train, levels)
            try:
                cal = form_error_of(
                    out_train[np.isfinite(out_train["err"])], train[np.isfinite(out_train["err"])]
                )
            except ValueError:
                cal = None
            decades = test["decades"].to_numpy(dtype=float)
            meta = test[
                ["ladder", "source", "distance", "target", "decades", "shared_run", "hindsight"]
            ]
            parts.append(
                meta.assign(
                    candidate=candidate.name,
                    **out_test,
                    **_calibrated(out_test, cal, decades, levels),
                )
            )
            train_parts.append(
                train[["distance"]].assign(candidate=candidate.name, err=out_train["err"])
            )
        default = choose_default(scores(pd.concat(train_parts), labels), singles)
        folds.append(SourceFold(source, default, pd.concat(parts, ignore_index=True)))
    return folds
