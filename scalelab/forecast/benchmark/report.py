"""``analysis/forecast-benchmark.md``: the benchmark's tables, figure and verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.forecast.benchmark.learning import median_abs
from scalelab.forecast.calibration import BIN_LABELS, FormError
from scalelab.reporting import environment_line, markdown_table, save_figure

COVERAGE_LEVELS = (0.8, 0.9, 0.95)
# The goals: median |error| per distance; coverage bands per level.
ERROR_GOALS = {"10x": 0.03, "100x": 0.05, "1000x": 0.15}
COVERAGE_GOALS = {0.9: (0.85, 0.95), 0.95: (0.90, 0.98)}
# Median 90% widths of the previous calibration (max over ladders), from its report.
PREVIOUS_WIDTHS = {"10x": 0.3258, "30x": 0.4242, "100x": 0.5879, "1000x": 0.8999}
HINDSIGHT_LADDER = "scalelab-cpu-v2"
MIN_FOR_COVERAGE = 20
MIN_SOURCES_1000X = 6


def pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:.2f}%"


def signed(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{100 * x:+.1f}%"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def covered(rows: pd.DataFrame, tag: str, kind: str = "cal_") -> np.ndarray:
    e = rows["err"].to_numpy(dtype=float)  # log(predicted / actual)
    return np.where(e < 0, -e <= rows[f"{kind}hi{tag}"], e <= rows[f"{kind}lo{tag}"])


def width(rows: pd.DataFrame, tag: str) -> np.ndarray:
    return np.exp(rows[f"cal_hi{tag}"].to_numpy()) - np.exp(-rows[f"cal_lo{tag}"].to_numpy())


def default_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per distance: the out-of-source default's errors, coverage and widths."""
    out = []
    for label in BIN_LABELS:
        mine = rows[(rows["distance"] == label) & np.isfinite(rows["err"])]
        if mine.empty:
            continue
        row: dict[str, Any] = {
            "distance": label,
            "sources": mine["source"].nunique(),
            "forecasts": len(mine),
            "median abs. error": median_abs(mine["err"].to_numpy()),
            "signed median": float(np.median(np.expm1(-mine["err"].to_numpy()))),
        }
        for level in COVERAGE_LEVELS:
            tag = f"{round(100 * level)}"
            row[f"{tag}% coverage"] = float(np.mean(covered(mine, tag)))
            row[f"{tag}% median width"] = float(np.median(width(mine, tag)))
        row["90% bootstrap-only coverage"] = float(np.mean(covered(mine, "90", "")))
        out.append(row)
    return pd.DataFrame(out)


def candidate_tables(
    held: pd.DataFrame, default_rows: pd.DataFrame, kinds: dict[str, str], stored: str
) -> str:
    """One table per distance: every candidate's median |error|, out of source."""
    parts = []
    for label in BIN_LABELS:
        mine = held[held["distance"] == label]
        if mine.empty:
            continue
        rows = []
        for name, group in mine.groupby("candidate", sort=False):
            ok = group[np.isfinite(group["err"])]
            rows.append(
                {
                    "candidate": name + (" (stored default)" if name == stored else ""),
                    "kind": kinds[name],
                    "forecasts": len(ok),
                    "median abs. error": median_abs(ok["err"].to_numpy()),
                    "90% coverage": float(np.mean(covered(ok, "90"))) if len(ok) else np.nan,
                }
            )
        d = default_rows[default_rows["distance"] == label]
        rows.append(
            {
                "candidate": "default, selected out of source",
                "kind": "selection",
                "forecasts": len(d),
                "median abs. error": median_abs(d["err"].to_numpy()),
                "90% coverage": float(np.mean(covered(d, "90"))) if len(d) else np.nan,
            }
        )
        table = pd.DataFrame(rows).sort_values("median abs. error", kind="stable")
        fmt = {"median abs. error": pct, "90% coverage": pct}
        parts.append(f"### {label}\n\n{markdown_table(table, fmt)}")
    return "\n\n".join(parts)


def ladder_table(ladders: Sequence[Any], rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for ladder in ladders:
        mine = rows[rows["ladder"] == ladder.name]
        row = {
            "ladder": ladder.name + (" (hindsight)" if ladder.hindsight else ""),
            "source": ladder.source,
            "what": ladder.description,
            "default used": ", ".join(sorted(set(mine["candidate"]))) or "–",
        }
        for label in BIN_LABELS:
            e = mine.loc[mine["distance"] == label, "err"].dropna()
            row[label] = " ".join(signed(np.expm1(-v)) for v in e) or "–"
        out.append(row)
    return pd.DataFrame(out)


def coverage_figure(rows: pd.DataFrame, folder: Path) -> str:
    import plotly.graph_objects as go

    levels = (0.5, 0.68, 0.8, 0.9, 0.95)
    fig = go.Figure()
    for label in (*BIN_LABELS, "all"):
        mine = rows if label == "all" else rows[rows["distance"] == label]
        mine = mine[np.isfinite(mine["err"])]
        if mine.empty:
            continue
        ys = [float(np.mean(covered(mine, f"{round(100 * q)}"))) for q in levels]
        fig.add_trace(go.Scatter(x=levels, y=ys, mode="lines+markers", name=label))
    fig.add_trace(go.Scatter(x=[0.45, 1], y=[0.45, 1], mode="lines", name="nominal"))
    fig.update_layout(
        title="Out-of-source coverage of the default's intervals",
        xaxis_title="nominal level",
        yaxis_title="share of held-out runs covered",
    )
    return save_figure(fig, "forecast-benchmark", folder)


def goals(table: pd.DataFrame, rows: pd.DataFrame, best_single: dict[str, float]) -> str:
    """Each goal with its figure and MET or MISSED."""
    by = table.set_index("distance")
    lines = []
    for label, goal in ERROR_GOALS.items():
        value = by["median abs. error"].get(label, np.nan)
        lines.append(
            f"- Median |error| at {label} ≤ {pct(goal)}: {pct(value)} — "
            f"{verdict(bool(value <= goal))}"
        )
    for label in ("100x", "1000x"):
        value, single = by["median abs. error"].get(label, np.nan), best_single[label]
        ok = value <= 0.9 * single or abs(value - single) < 1e-12
        lines.append(
            f"- The default at least 10% better than the best single form at {label}, or that "
            f"form: {pct(value)} against {pct(single)} — {verdict(bool(ok))}"
        )
    far = rows[(rows["distance"] == "1000x") & np.isfinite(rows["err"])]["source"].nunique()
    lines.append(
        f"- Forecasts at 1000x from at least {MIN_SOURCES_1000X} sources: {far} — "
        f"{verdict(far >= MIN_SOURCES_1000X)}"
    )
    for level in COVERAGE_LEVELS:
        tag = f"{round(100 * level)}"
        for label in BIN_LABELS:
            if label not in by.index or int(by.loc[label, "forecasts"]) < MIN_FOR_COVERAGE:
                continue
            value = by.loc[label, f"{tag}% coverage"]
            lines.append(
                f"- {tag}% intervals within ±5 points of nominal at {label} "
                f"({int(by.loc[label, 'forecasts'])} forecasts): {pct(value)} — "
                f"{verdict(bool(abs(value - level) <= 0.05))}"
            )
    for level, (low, high) in COVERAGE_GOALS.items():
        tag = f"{round(100 * level)}"
        for label in BIN_LABELS:
            if label not in by.index:
                continue
            value, n = by.loc[label, f"{tag}% coverage"], int(by.loc[label, "forecasts"])
            few = f" (only {n} forecasts)" if n < MIN_FOR_COVERAGE else ""
            lines.append(
                f"- {tag}% intervals cover {pct(low)}–{pct(high)} at {label}: {pct(value)}{few} — "
                f"{verdict(bool(low <= value <= high))}"
            )
    for label, previous in PREVIOUS_WIDTHS.items():
        if label not in by.index:
            continue
        value = by.loc[label, "90% median width"]
        lines.append(
            f"- 90% median width at {label} at least 20% narrower than before "
            f"({pct(previous)}): {pct(value)} — {verdict(bool(value <= 0.8 * previous))}"
        )
    hind = rows[(rows["ladder"] == HINDSIGHT_LADDER) & (rows["distance"] == "1000x")]
    if len(hind):
        worst = float(np.max(np.abs(np.expm1(-hind["err"].to_numpy()))))
        lines.append(
            f"- The second CPU study's ladder (hindsight) at 1000x within 10%: largest |error| "
            f"{pct(worst)} over {len(hind)} forecasts — {verdict(worst <= 0.10)}"
        )
    return "\n".join(lines)


def write_report(
    *,
    path: Path,
    command: str,
    seconds: float,
    ladders: Sequence[Any],
    records: pd.DataFrame,
    held: pd.DataFrame,
    default_rows: pd.DataFrame,
    kinds: dict[str, str],
    stored: dict[str, Any],
) -> str:
    scored = default_rows[~default_rows["shared_run"].astype(bool)]
    shared = default_rows[default_rows["shared_run"].astype(bool)]
    table = default_table(scored)
    pct_cols = [c for c in table.columns if c not in ("distance", "sources", "forecasts")]
    held_scored = held[~held["shared_run"].astype(bool)]
    singles = [n for n, k in kinds.items() if k == "form"]
    best_single = {}
    for label in ("100x", "1000x"):
        mine = held_scored[(held_scored["distance"] == label)]
        meds = {n: median_abs(g["err"].to_numpy()) for n, g in mine.groupby("candidate")}
        best_single[label] = min(meds.get(n, np.inf) for n in singles)
    model = FormError.from_dict(stored["form_error"]["auto"])
    folds = ", ".join(f"{s}: {d}" for s, d in stored["defaults_out_of_source"].items())
    text = f"""# Forecasting benchmark

Generated by `{command}` in {seconds:.0f} s ({environment_line()}).

How well does a scaling law fitted on cheap runs forecast the expensive ones, on real
published ladders? For each of {records["ladder"].nunique()} ladders from
{records["source"].nunique()} sources, each ratio r in 10, 30, 100, 1000 and up to three
held-out frontier runs per ratio, every form is fitted on the runs with C ≤ C_target / r and
predicts the target, with a bootstrap interval ({len(records)} forecasts). Forecasts are
grouped by their actual distance: 10x (1 to 1.25 decades beyond the largest fitted compute),
30x (to 1.75), 100x (to 2.5), 1000x (beyond).

**Everything below is scored leave-one-source-out**: the ladders of one paper or code base are
held out together, and the rule, the fallback, the form-error model and the choice of the
default that score them were learned on the other sources only. Porian et al.'s
`tuned_const` targets whose size also gave a fitted point (one constant-learning-rate run
gives a size's points at every budget) are never learned from and are reported separately.

## The default, out of source

{markdown_table(table, dict.fromkeys(pct_cols, pct) | {"signed median": pct})}

Width: (hi − lo) / predicted. Signed median: (actual − predicted) / predicted. Default chosen
in each fold (source held out: default): {folds}.

## Every candidate, one table per distance

Candidates: every single form (a form that cannot be fitted falls back as `auto` does), the
averages {", ".join(n for n, k in kinds.items() if k == "average")} (geometric mean of the
members that could be fitted), and the learned rule. Median |error| out of source. The
default is the candidate best at 100x and 1000x (mean of the two medians) among those no worse
at 10x than the single form best at 100x and 1000x.

{candidate_tables(held_scored, scored, kinds, stored["default"])}

## The stored default and its intervals

Selected on every source and stored in `scalelab/forecast/forecast_rule.json`, which
`--law auto` reads: **{stored["default"]}** ({stored["rule_text"]}). Its form-error model,
fitted on every source's forecasts: log error ~ t(ν = {model.nu:.3g}) with scale
√((σ·d^γ)² + (b/1.645)²), σ = {model.sigma:.4g}, γ = {model.gamma:.3g} ({model.n_forecasts}
forecasts, {model.n_ladders} ladders, each weighted equally; `scalelab.forecast.calibration`).

{coverage_figure(scored, path.parent)}

## Ladders and the default's errors (out of source)

{markdown_table(ladder_table(ladders, scored))}

Sources, commits, licences and transformations: `analysis/data/PROVENANCE.md`.

## Targets that share a run with a fitted point

{
        markdown_table(default_table(shared), dict.fromkeys(pct_cols, pct) | {"signed median": pct})
        if len(shared)
        else "None."
    }

## Goals

{goals(table, scored, best_single)}
"""
    path.write_text(text)
    return text
