"""Evaluate a model on named suites: one row per problem, and the suites' mean pass rates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab.evals.decode import complete, pass_at_k, score_targets
from scalelab.evals.suites import SUITES, CheckedSuite, TargetSuite
from scalelab.model import GPT


@dataclass(frozen=True)
class EvalReport:
    """``tables[suite]``, one row per problem: ``problem`` (its id), ``passed`` (greedy
    decoding solves it), ``pass_rate`` (the chance that a sample at the fixed temperature
    solves it: exact for a suite with a target, c/n from ``samples`` n of which ``passes`` c
    pass for a checked suite, whose rate is the greedy result without samples) and
    ``completion`` (greedy: the text, or the argmax choices along the target).

    ``metrics``: ``pass_rate.<suite>`` (the greedy share), ``pass_at_1.<suite>`` (the mean
    ``pass_rate``) and with samples ``pass_at_<n>.<suite>``; ``eval_time`` in seconds."""

    tables: dict[str, pd.DataFrame]
    metrics: dict[str, float]


def evaluate(model: GPT, suites: Sequence[str], *, samples: int = 0, seed: int = 0) -> EvalReport:
    """Run ``model`` on each suite in ``suites`` (names of ``SUITES``): greedy decoding and,
    for checked suites with ``samples`` n > 0, n sampled completions (seeded by ``seed``)."""
    started = time.perf_counter()
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, float] = {}
    for name in suites:
        suite = SUITES[name]
        if isinstance(suite, TargetSuite):
            table = _score(model, suite)
        else:
            table = _check(model, suite, samples, seed)
        tables[name] = table
        metrics[f"pass_rate.{name}"] = float(table["passed"].mean())
        metrics[f"pass_at_1.{name}"] = float(table["pass_rate"].mean())
        if samples > 1:
            metrics[f"pass_at_{samples}.{name}"] = float(np.mean(_at_k(table, samples)))
    metrics["eval_time"] = time.perf_counter() - started
    return EvalReport(tables, metrics)


def _score(model: GPT, suite: TargetSuite) -> pd.DataFrame:
    problems = suite.problems()
    greedy, prob, chosen = score_targets(
        model, [p.prompt for p in problems], [suite.target(p) for p in problems], suite.forbid_after
    )
    return pd.DataFrame(
        {
            "problem": [p.id for p in problems],
            "passed": greedy,
            "pass_rate": prob,
            "completion": chosen,
        }
    )


def _check(model: GPT, suite: CheckedSuite, samples: int, seed: int) -> pd.DataFrame:
    problems = suite.problems()
    prompts = [p.prompt for p in problems]
    texts = complete(model, prompts, suite.max_new_tokens, suite.stop)
    table = pd.DataFrame(
        {
            "problem": [p.id for p in problems],
            "passed": suite.check(problems, texts),
            "completion": [suite.cut(t) for t in texts],
        }
    )
    if samples:
        drawn = complete(
            model, prompts * samples, suite.max_new_tokens, suite.stop, greedy=False, seed=seed
        )
        ok = np.array(suite.check(problems * samples, drawn)).reshape(samples, -1)
        table["samples"] = samples
        table["passes"] = ok.sum(axis=0)
        table["pass_rate"] = table["passes"] / samples
    else:
        table["pass_rate"] = table["passed"].astype(float)
    return table


def _at_k(table: pd.DataFrame, k: int) -> list[float]:
    """Per problem pass@k: exact from the pass rate of a target suite, else from samples."""
    if "passes" in table:
        return [
            pass_at_k(int(n), int(c), k)
            for n, c in zip(table["samples"], table["passes"], strict=True)
        ]
    return list(1.0 - (1.0 - table["pass_rate"]) ** k)
