"""Evaluation suites: deterministic held-out problems, checkers, and pass rates of a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scalelab.evals.heldout import leaked
from scalelab.evals.suites import N_PROBLEMS, SUITES, CheckedSuite, TargetSuite


@pytest.mark.parametrize("name", sorted(SUITES))
def test_each_suite_has_distinct_problems(name: str) -> None:
    problems = SUITES[name].problems()
    assert len(problems) == N_PROBLEMS >= 200
    assert len({p.id for p in problems}) == N_PROBLEMS
    assert len({p.body for p in problems}) == N_PROBLEMS


def test_checkers_pass_the_reference_answers_and_fail_others() -> None:
    for name in ("python", "digits"):
        suite = SUITES[name]
        assert isinstance(suite, CheckedSuite)
        problems = suite.problems()[:40]
        right = [p.answer.removesuffix(suite.stop) + suite.stop + "junk" for p in problems]
        assert all(suite.check(problems, right)), name
        wrong = [p.answer[::-1] + "9" + suite.stop for p in problems]
        assert not any(suite.check(problems, wrong)), name
    python = SUITES["python"]
    problems = python.problems()[:3]
    # Copying the expression instead of giving its value is no answer.
    copied = [p.body.removeprefix("assert ").removesuffix(" == ") + "\n" for p in problems]
    assert not any(python.check(problems, copied))
    digits = SUITES["digits"]
    unfinished = [p.answer.removesuffix(digits.stop) for p in digits.problems()[:5]]
    assert not any(digits.check(digits.problems()[:5], unfinished))  # no END: gold reward 0
    for name in ("brackets", "indent", "copy"):
        assert isinstance(SUITES[name], TargetSuite)


def test_problems_are_the_same_in_a_fresh_process() -> None:
    import subprocess
    import sys

    code = "from scalelab.evals.suites import SUITES; print(SUITES['copy'].problems()[7].id)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == SUITES["copy"].problems()[7].id


def test_no_problem_occurs_in_the_training_split(token_cache: Path) -> None:
    from scalelab.data import prepare

    data = prepare("stdlib", "byte", cache_dir=token_cache)
    train = np.asarray(data.train, dtype=np.uint8)
    problems = [p for suite in SUITES.values() for p in suite.problems()]
    assert leaked(problems, train) == []
    # The check can fail: text taken from the training split is found.
    start = int(np.flatnonzero(train == ord("\n"))[1000]) + 1
    planted = train[start : start + 40].tobytes().decode("latin-1")
    from scalelab.evals.suites import Problem

    copied = Problem("copy", planted[:30], planted[30:])
    assert leaked([copied], train) == [copied.id]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_fixed_tiny_model_gets_the_same_results_twice() -> None:
    import torch

    from scalelab.evals.run import evaluate
    from scalelab.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, context=128))
    suites = ["brackets", "indent", "copy", "digits"]
    first, second = (evaluate(model, suites, samples=2, seed=3) for _ in range(2))
    for name in suites:
        assert first.tables[name].equals(second.tables[name]), name
        assert len(first.tables[name]) == N_PROBLEMS
    drop = {"eval_time"}
    assert {k: v for k, v in first.metrics.items() if k not in drop} == {
        k: v for k, v in second.metrics.items() if k not in drop
    }
    assert set(first.metrics) >= {"pass_rate.copy", "pass_at_1.copy", "pass_at_2.digits"}
    # Target suites give exact sampling probabilities: an untrained model's are tiny, not 0.
    assert (first.tables["copy"]["pass_rate"] > 0).all()
    assert first.tables["digits"]["samples"].eq(2).all()
