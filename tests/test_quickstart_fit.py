"""The README's main job ends in a law that is identified and answers sensibly.

``tests/data/quickstart_runs.csv`` holds the fifteen final losses of one run of
``scalelab sweep run sweeps/quickstart.yaml`` (seed 0, this version's spec; the run ids are
its MLflow runs). The spec and the data are checked to be the same ladder, so a change to the
spec fails here until the data are measured again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from scalelab.forecast.forms import FORMS
from scalelab.results.fits import fit_table
from scalelab.results.runs import read_csv_table
from scalelab.sweep.report import next_steps
from scalelab.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "quickstart_runs.csv"


@pytest.fixture(scope="module")
def stored():
    return fit_table(read_csv_table(RUNS), experiment="quickstart", law="auto", n_jobs=1)


def test_the_data_are_the_quickstart_spec_ladder() -> None:
    spec = load_spec(ROOT / "sweeps" / "quickstart.yaml")
    runs = pd.read_csv(RUNS)
    assert len(spec.budgets.tokens) >= 3  # two budgets cannot separate B and beta from E
    assert len(runs) == len(spec.sizes) * len(spec.budgets.tokens)
    assert runs["tokens"].nunique() == len(spec.budgets.tokens)
    assert runs["n_params"].nunique() == len(spec.sizes)


def test_the_default_fit_answers_with_a_finite_interval_and_names_its_members_warnings(
    stored,
) -> None:
    # The default averages several forms; on fifteen runs some members leave a parameter
    # unidentified (a floor at its bound), and each such warning names its member.
    for warning in stored.boot.warnings:
        assert warning.split(":")[0].split(" left out")[0] in FORMS, warning
    top = stored.data["max_compute"]
    for factor in (10, 100):
        loss = stored.answer(compute=factor * top).outputs["loss"]
        assert 0 < loss.lo < loss.value < loss.hi < 1.5 * loss.lo  # a finite, useful interval


def test_the_main_job_ends_with_a_supported_example_and_where_to_look(stored) -> None:
    lines = next_steps(stored, "quickstart", "sqlite:///mlflow.db")
    text = "\n".join(lines)
    assert "example forecast" in text and "NOT SUPPORTED" not in text
    answer = stored.answer(params=10 * stored.data["max_n_params"], tokens=18e6)
    loss = answer.outputs["loss"]
    best = pd.read_csv(RUNS)["loss"].min()
    # A model 10x larger on 10x the data ends below every run of the ladder, above zero.
    assert 0 < loss.lo < loss.value < best and not answer.unsupported
    for command in (
        "scalelab predict --experiment quickstart",
        "scalelab dashboard",
        "scalelab ui",
    ):
        assert command in text
