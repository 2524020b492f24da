"""The forecasts of the benchmark: for each ladder, ratio and held-out frontier run, fit every
form on the runs with C ≤ C_target / ratio and predict the target with bootstrap intervals.

Fits are cached, one JSON per ladder, under a key that hashes the ladder's data, the code that
makes a forecast (:data:`FIT_MODULES`: the forms, laws, fitting and bootstrap) and the
resamples: a change to any of them refits, so a cached forecast can never come from other data
or other code.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.forecast.benchmark.ladders import Ladder
from scalelab.forecast.bootstrap import bootstrap
from scalelab.forecast.calibration import BIN_LABELS, distance_bin
from scalelab.forecast.chooser import MIN_FRONTIER, ladder_features
from scalelab.forecast.fit import fit_law
from scalelab.forecast.forms import FORMS, Form, form_points, frontier_points, law_for_key

ENGINE = Path(__file__).resolve().parents[1]
FIT_MODULES = (
    "blas.py",
    "bootstrap.py",
    "fit.py",
    "forms.py",
    "intervals.py",
    "laws.py",
    "laws_bounded.py",
    "objectives.py",
    "runs.py",
    "varpro.py",
)
RATIOS = (10.0, 30.0, 100.0, 1000.0)
LEVELS = (0.5, 0.68, 0.8, 0.9, 0.95)
# Forms the benchmark scores: every registered form that a published ladder can be fitted
# with (the plateau form needs the corpus's unigram entropy; params/tokens/kaplan are not
# forecasts of the compute frontier).
BENCHMARK_FORMS = (
    "chinchilla",
    "chinchilla_no_e",
    "compute",
    "compute_no_e",
    "odds",
    "m4",
    "bounded_nd",
    "chinchilla_ckpt30",
)
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
        law = law_for_key(form.name, task.train)
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


def engine_hash() -> str:
    """SHA-256 of the code that makes a forecast (:data:`FIT_MODULES`)."""
    digest = hashlib.sha256()
    for name in FIT_MODULES:
        digest.update(name.encode())
        digest.update((ENGINE / name).read_bytes())
    return digest.hexdigest()


def cache_key(ladder: Ladder, n_resamples: int, engine: str) -> str:
    """The ladder's data, the engine's code and the resamples, hashed."""
    digest = hashlib.sha256(f"{engine}|{n_resamples}".encode())
    for table in (ladder.runs, ladder.curves):
        if table is not None:
            digest.update(table.to_csv(index=False).encode())
    return digest.hexdigest()[:16]


def shares_a_run(ladder: Ladder, task: Task) -> bool:
    """Whether the target's loss was read off a training curve a fitted point also comes
    from: in a constant-learning-rate IsoFLOP set, one run of a size gives its points at
    every budget (Porian et al.'s ``tuned_const``)."""
    if "tuned-const" not in ladder.name:
        return False
    return bool((task.train["n_params"] == task.target["n_params"]).any())


def ladder_records(
    ladder: Ladder,
    cache_dir: Path,
    n_resamples: int,
    echo: Callable[[str], None] = print,
    engine: str | None = None,
) -> pd.DataFrame:
    """One row per task: the features, decades, and each form's error and half-widths."""
    key = cache_key(ladder, n_resamples, engine or engine_hash())
    path = cache_dir / f"{ladder.name}-{key}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    rows = []
    t0 = time.perf_counter()
    for task in tasks(ladder):
        actual = float(task.target["loss"])
        row: dict[str, Any] = {
            "ladder": ladder.name,
            "source": ladder.source or ladder.name,
            "hindsight": ladder.hindsight,
            "shared_run": shares_a_run(ladder, task),
            "ratio": task.ratio,
            "distance": BIN_LABELS[distance_bin(task.decades)],
            "target": task.target["run_id"],
            "target_compute": float(task.target["compute"]),
            "actual": actual,
            "decades": task.decades,
            "n_train": len(task.train),
            **ladder_features(task.train),
        }
        for form in (FORMS[name] for name in BENCHMARK_FORMS):
            task_key = f"{task.key}|{form.name}"
            if task_key not in cache:
                cache[task_key] = forecast_one(task, form, n_resamples)
            result = cache[task_key]
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
