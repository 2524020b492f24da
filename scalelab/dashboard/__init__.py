"""Dashboards: plotly figures of runs, fits and sweeps, written as one offline HTML file.

- :mod:`~scalelab.dashboard.definition`: YAML definitions (``dashboards/*.yaml``) validated by
  pydantic: sources (MLflow experiments or CSV files), law, planned sizes, panels.
- :mod:`~scalelab.dashboard.build`: loads each source, reuses or makes its fit, and draws the
  panels (:func:`build_dashboard`).
- :mod:`~scalelab.dashboard.figures`: one function per panel.
- :mod:`~scalelab.dashboard.html`: one self-contained HTML file (plotly.js embedded once), and
  PNGs where kaleido works.

Example::

    from scalelab.dashboard import build_dashboard, load_definition, write_html
    from scalelab.workspace import Workspace

    board = build_dashboard(load_definition("dashboards/chinchilla.yaml"), Workspace.resolve())
    write_html(board, "chinchilla.html")
"""

from scalelab.dashboard.build import Dashboard, Panel, SourceView, build_dashboard
from scalelab.dashboard.definition import (
    ALL_PANELS,
    DEFAULT_PANELS,
    FIT_PANELS,
    DashboardDefinition,
    Source,
    find_definition,
    load_definition,
)
from scalelab.dashboard.html import render_html, write_html, write_pngs

__all__ = [
    "ALL_PANELS",
    "DEFAULT_PANELS",
    "FIT_PANELS",
    "Dashboard",
    "DashboardDefinition",
    "Panel",
    "Source",
    "SourceView",
    "build_dashboard",
    "find_definition",
    "load_definition",
    "render_html",
    "write_html",
    "write_pngs",
]
