"""The forecasts of the benchmark: for each ladder, ratio and held-out frontier run, fit every
candidate form on the runs with C ≤ C_target / ratio and predict the target with bootstrap
intervals. Fits are cached (one JSON per ladder), so the report can be rewritten cheaply.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from forecast_ladders import Ladder

from scalelab.analysis import bootstrap, fit_law
from scalelab.analysis.calibration import BIN_LABELS, distance_bin
from scalelab.analysis.chooser import (
    FORMS,
    MIN_FRONTIER,
    Form,
    form_points,
    frontier_points,
    ladder_features,
)
from scalelab.analysis.laws import law_for_key

RATIOS = (10.0, 30.0, 100.0, 1000.0)
LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95)
MAX_TARGETS = 3  # held-out frontier runs per ladder and ratio, evenly spaced in compute
MIN_RUNS = 4


@dataclass(frozen=True)
class Task:
    ladder: Ladder
    ratio: float
    target: pd.Series
    train: pd.DataFrame

    @property
    def key(self) -> str:
        return f"{self.ratio:g}|{self.target['run_id']}"

    @property
    def decades(self) -> float:
        return math.log10(float(self.target["compute"]) / float(self.train["compute"].max()))


def tasks(ladder: Ladder) -> list[Task]:
    """Every (ratio, target) the ladder allows, at most ``MAX_TARGETS`` targets per ratio."""
    targets = frontier_points(ladder.runs)
    out = []
    for ratio in RATIOS:
        eligible = []
        for _, target in targets.iterrows():
            train = ladder.runs[ladder.runs["compute"] <= target["compute"] / ratio]
            if len(train) >= MIN_RUNS and len(frontier_points(train)) >= MIN_FRONTIER:
                eligible.append(Task(ladder, ratio, target, train))
        if len(eligible) > MAX_TARGETS:
            picks = np.unique(np.round(np.linspace(0, len(eligible) - 1, MAX_TARGETS)))
            eligible = [eligible[int(i)] for i in picks]
        out += eligible
    # A ladder with a gap (a ladder, then targets far beyond it) gives the same fit for
    # several ratios: keep one forecast per target and training set.
    unique = {(t.target["run_id"], len(t.train)): t for t in out}
    return list(unique.values())


def _inputs(law_variables: tuple[str, ...], target: pd.Series) -> dict[str, float]:
    return {v: float(target[v]) for v in law_variables}


def forecast_one(task: Task, form: Form, n_resamples: int) -> dict[str, Any]:
    """The form's prediction for the task's target with bootstrap log half-widths per level;
    ``{"failed": why}`` when the form cannot be fitted to the runs."""
    try:
        points = form_points(form, task.train, task.ladder.curves)
        law = law_for_key(form.law_key, task.train)
        fit = fit_law(points, law, check_identifiability=False)
        boot = bootstrap(fit, points, n_resamples=n_resamples, seed=0)
    except (ValueError, RuntimeError) as err:
        return {"failed": str(err).splitlines()[0]}
    inputs = _inputs(fit.law.variables, task.target)
    out: dict[str, Any] = {"predicted": float(fit.law.predict(**inputs))}
    for level in LEVELS:
        p = boot.predict(**inputs, level=level)
        out[f"lo{round(100 * level)}"] = math.log(out["predicted"] / float(p.lo))
        out[f"hi{round(100 * level)}"] = math.log(float(p.hi) / out["predicted"])
    return out


def ladder_records(
    ladder: Ladder, cache_dir: Path, n_resamples: int, echo: Callable[[str], None] = print
) -> pd.DataFrame:
    """One row per task: the features, decades, and each form's error and half-widths."""
    path = cache_dir / f"{ladder.name}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    rows = []
    t0 = time.perf_counter()
    for task in tasks(ladder):
        actual = float(task.target["loss"])
        row: dict[str, Any] = {
            "ladder": ladder.name,
            "ratio": task.ratio,
            "distance": BIN_LABELS[distance_bin(task.decades)],
            "target": task.target["run_id"],
            "target_compute": float(task.target["compute"]),
            "actual": actual,
            "decades": task.decades,
            "n_train": len(task.train),
            **ladder_features(task.train),
        }
        for form in FORMS.values():
            key = f"{task.key}|{form.name}|{n_resamples}"
            if key not in cache:
                cache[key] = forecast_one(task, form, n_resamples)
            result = cache[key]
            if "failed" in result:
                row[f"err_{form.name}"] = math.nan
                continue
            row[f"err_{form.name}"] = math.log(result["predicted"] / actual)
            row[f"pred_{form.name}"] = result["predicted"]
            for level in LEVELS:
                for side in ("lo", "hi"):
                    name = f"{side}{round(100 * level)}"
                    row[f"{name}_{form.name}"] = result[name]
        rows.append(row)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache))
    echo(f"{ladder.name}: {len(rows)} forecasts in {time.perf_counter() - t0:.0f} s")
    return pd.DataFrame(rows)
