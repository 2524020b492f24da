"""The reports' folder and data, and the report helpers the scripts here share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalelab import reporting
from scalelab.reporting import environment_line, fmt, interval, markdown_table

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

__all__ = ["DATA", "HERE", "environment_line", "fmt", "interval", "markdown_table", "save_figure"]


def save_figure(fig: Any, stem: str) -> str:
    """Write ``fig`` next to the reports; return a markdown link or image to it."""
    return reporting.save_figure(fig, stem, HERE)
