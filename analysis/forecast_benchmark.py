"""The forecasting benchmark: how well each law form, and ``--law auto``, forecast real ladders.

For every ladder in ``analysis/data/`` (``forecast_ladders.py``), every ratio r in 10, 30,
100, 1000 and up to three held-out frontier runs per ratio, each candidate form is fitted on
the runs with C ≤ C_target / r and predicts the target with a bootstrap interval
(``forecast_records.py``). The ``auto`` rule and its form-error term are then learned
leave-one-ladder-out (``scalelab.analysis.rule_learning``): every number reported for
``auto`` comes from a rule and a calibration fitted without the ladder it is scored on.
Finally the rule and the form errors are refitted on every ladder and written to
``scalelab/analysis/forecast_rule.json``, which ``scalelab fit --law auto`` reads.

Writes ``analysis/forecast-benchmark.md`` and its calibration figure.
Run: ``python analysis/forecast_benchmark.py [--resamples 40]`` (fits are cached in
``scalelab-runs/forecast-benchmark-cache/``; the first run takes about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from forecast_ladders import all_ladders
from forecast_records import LEVELS, ladder_records
from forecast_report import write_report

from scalelab.analysis.calibration import BIN_LABELS
from scalelab.analysis.chooser import FORMS, RULE_PATH
from scalelab.analysis.rule_learning import (
    calibrate_out_of_ladder,
    chosen_forms,
    form_error,
    learn_rule,
    leave_one_ladder_out,
)

COMMAND = "python analysis/forecast_benchmark.py"


def stored_record(records: pd.DataFrame, command: str) -> dict:
    """The rule and form errors fitted on every ladder: what ``--law auto`` reads."""
    rule = learn_rule(records)
    table = {"auto": form_error(records, chosen_forms(rule, records)).to_dict()}
    for name in FORMS:
        ok = records[np.isfinite(records[f"err_{name}"])]
        if len(ok):
            table[name] = form_error(ok, np.full(len(ok), name, dtype=object)).to_dict()
    return {
        "command": command,
        "note": "written by the forecasting benchmark; do not edit by hand",
        "rule": rule.to_dict(),
        "form_error": table,
        "score_level": 0.9,
        "ladders": sorted(records["ladder"].unique()),
        "forecasts": len(records),
    }


def coverage_by_level(records: pd.DataFrame, folds: list) -> pd.DataFrame:
    """Nominal against out-of-ladder actual coverage, bootstrap alone and calibrated."""
    rows = []
    for level in LEVELS:
        cal = calibrate_out_of_ladder(records, folds, level=level)
        cal = cal[np.isfinite(cal["log_error"])]
        e = cal["log_error"].to_numpy()
        for kind in ("boot", "cal"):
            lo, hi = cal[f"{kind}_lo"].to_numpy(), cal[f"{kind}_hi"].to_numpy()
            covered = np.where(e < 0, -e <= hi, e <= lo)
            for label in BIN_LABELS:
                mine = (cal["distance"] == label).to_numpy()
                if mine.any():
                    rows.append(
                        {
                            "level": level,
                            "kind": kind,
                            "distance": label,
                            "coverage": covered[mine].mean(),
                        }
                    )
            rows.append(
                {"level": level, "kind": kind, "distance": "all", "coverage": covered.mean()}
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=40)
    parser.add_argument(
        "--cache", type=Path, default=Path("scalelab-runs/forecast-benchmark-cache")
    )
    args = parser.parse_args()
    command = COMMAND + (f" --resamples {args.resamples}" if args.resamples != 40 else "")
    t0 = time.perf_counter()
    ladders = all_ladders()
    records = pd.concat(
        [ladder_records(ladder, args.cache, args.resamples) for ladder in ladders],
        ignore_index=True,
    )
    folds = leave_one_ladder_out(records)
    out_of_ladder = calibrate_out_of_ladder(records, folds, level=0.9)
    coverage = coverage_by_level(records, folds)
    stored = stored_record(records, command)
    RULE_PATH.write_text(json.dumps(stored, indent=1) + "\n")
    write_report(
        ladders=ladders,
        records=records,
        folds=folds,
        out_of_ladder=out_of_ladder,
        coverage=coverage,
        stored=stored,
        command=command,
        seconds=time.perf_counter() - t0,
    )


if __name__ == "__main__":
    main()
