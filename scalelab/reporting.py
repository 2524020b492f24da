"""Writing reports: markdown tables and figures (the benchmark's and ``analysis/``'s).

Figures are plotly; a PNG is written when ``kaleido`` can find a Chrome or Chromium, else a
self-contained HTML file (plotly.js embedded, so it opens offline).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def fmt(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant figures; text as is."""
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        return f"{x:.{digits}g}"
    return str(x)


def markdown_table(
    df: pd.DataFrame, formats: dict[str, Callable[[Any], str]] | None = None, index: bool = False
) -> str:
    """A GitHub markdown table of ``df`` (numbers to 4 significant figures by default)."""
    formats = formats or {}
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = [formats.get(c, fmt)(row[c]) for c in df.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interval(lo: float, hi: float, digits: int = 4) -> str:
    return f"{fmt(lo, digits)} – {fmt(hi, digits)}"


def save_figure(fig: Any, stem: str, folder: Path) -> str:
    """Write ``fig`` into ``folder`` (beside its report); return a markdown image or link."""
    png = folder / f"{stem}.png"
    try:
        fig.write_image(png, width=1100, height=550, scale=2)
        return f"![{stem}]({png.name})"
    except Exception:  # noqa: BLE001 - kaleido missing, or no browser for it to drive
        png.unlink(missing_ok=True)
    path = folder / f"{stem}.html"
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return f"Figure: [{path.name}]({path.name}) (interactive, self-contained HTML)"


def environment_line(extra: Sequence[str] = ()) -> str:
    import scipy

    parts = [
        f"Python {platform.python_version()}",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
        f"pandas {pd.__version__}",
        *extra,
    ]
    return ", ".join(parts)
