"""The forecasting benchmark: how well each form, average and rule forecasts real ladders, and
the default (``--law auto``) and form-error model it stores.

For every ladder of the data folder (``ladders``, ``public_ladders``), every ratio r in 10, 30,
100, 1000 and up to three held-out frontier runs per ratio, each form is fitted on the runs
with C ≤ C_target / r and predicts the target with a bootstrap interval (``records``). The
candidates are then scored one source out (``learning``); the default is selected, and the
form-error models fitted, on every source, and written to
``scalelab/forecast/forecast_rule.json`` (package data, read by ``--law auto``).

Run: ``scalelab benchmark forecasts`` from a clone (fits are cached under the workspace; the
first run takes about half an hour on 2 cores).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.forecast.benchmark.ladders import Ladder, all_ladders
from scalelab.forecast.benchmark.learning import (
    candidates,
    choose_default,
    fallback_form,
    form_error_of,
    learn_rule,
    leave_one_source_out,
    outputs_out_of_source,
    scores,
)
from scalelab.forecast.benchmark.public_ladders import PUBLIC_LOADERS
from scalelab.forecast.benchmark.records import LEVELS, engine_hash, ladder_records
from scalelab.forecast.benchmark.report import write_report
from scalelab.forecast.calibration import BIN_LABELS
from scalelab.forecast.chooser import RULE_PATH, Rule

COMMAND = "scalelab benchmark forecasts"


def every_ladder(data: Path) -> list[Ladder]:
    return [*all_ladders(data), *(load(data) for load in PUBLIC_LOADERS)]


def stored_record(
    records: pd.DataFrame, ranked: pd.DataFrame, folds: dict[str, str]
) -> dict[str, Any]:
    """The default (selected on the out-of-source scores ``ranked``) and every candidate's
    form-error model, fitted on every source."""
    learnable = records[~records["shared_run"].astype(bool)]
    table: dict[str, Any] = {}
    for candidate in candidates(learnable):
        out = outputs_out_of_source(candidate, learnable, LEVELS)
        ok = np.isfinite(out["err"]).to_numpy()
        table[candidate.name] = form_error_of(out[ok], learnable[ok]).to_dict()
    kinds = {c.name: c.kind for c in candidates(learnable)}
    default = choose_default(ranked, [n for n, k in kinds.items() if k == "form"])
    rule = (
        learn_rule(learnable)
        if default == "rule"
        else Rule(form=default, fallback=fallback_form(learnable))
    )
    table["auto"] = table[default]
    return {
        "command": COMMAND,
        "note": "written by the forecasting benchmark; do not edit by hand",
        "default": default,
        "rule": rule.to_dict(),
        "rule_text": rule.describe(),
        "form_error": table,
        "defaults_out_of_source": folds,
        "ladders": sorted(records["ladder"].unique()),
        "sources": sorted(records["source"].unique()),
        "forecasts": len(records),
    }


def run_benchmark(
    data: Path,
    cache: Path,
    report: Path,
    *,
    resamples: int = 40,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark, store the default (package data) and write the report."""
    t0 = time.perf_counter()
    ladders = every_ladder(data)
    engine = engine_hash()
    records = pd.concat(
        [ladder_records(ladder, cache, resamples, echo, engine) for ladder in ladders],
        ignore_index=True,
    )
    folds = leave_one_source_out(records, BIN_LABELS, LEVELS)
    held = pd.concat([f.held for f in folds], ignore_index=True)
    default_rows = pd.concat(
        [f.held[f.held["candidate"] == f.default] for f in folds], ignore_index=True
    )
    kinds = {c.name: c.kind for c in candidates(records)}
    ranked = scores(held[~held["shared_run"].astype(bool)], BIN_LABELS)
    stored = stored_record(records, ranked, {f.source: f.default for f in folds})
    RULE_PATH.write_text(json.dumps(stored, indent=1) + "\n")
    command = COMMAND + (f" --resamples {resamples}" if resamples != 40 else "")
    write_report(
        path=report,
        command=command,
        seconds=time.perf_counter() - t0,
        ladders=ladders,
        records=records,
        held=held,
        default_rows=default_rows,
        kinds=kinds,
        stored=stored,
    )
    echo(f"wrote {report} and {RULE_PATH}; default: {stored['default']}")
    return stored
