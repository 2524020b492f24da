"""Write a dashboard as one self-contained HTML file, and its panels as PNG files.

plotly.js is embedded once, in the head, and every panel is a ``div`` drawn by it: the file
opens from disk with no network (``include_plotlyjs="cdn"``, the default of MLflow's
``log_figure``, renders blank offline). PNGs need kaleido and a Chromium it can find; without
them they are skipped with a note.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path

import plotly.io as pio
from plotly.offline import get_plotlyjs

from scalelab.dashboard.build import Dashboard, SourceView

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
       color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; font-size: 0.9em; }
section.panel { margin: 1.5em 0; border-top: 1px solid #ddd; padding-top: 0.5em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.notes li, .left-out { color: #8a5a00; } code { background: #f4f4f4; padding: 0 3px; }
"""
HEIGHT_PNG = 520
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"scale": 2}}


def _fmt(x: float) -> str:
    return f"{x:.5g}" if math.isfinite(x) else str(x)


def _fit_summary(view: SourceView) -> str:
    fit = view.fit
    out = [
        f"<h3>{html.escape(view.label)}</h3>",
        f"<p>{len(view.table.runs)} runs from <code>{html.escape(view.table.source)}</code>"
        + (
            f"; training curves of {view.table.curves['run_id'].nunique()} runs"
            if view.table.curves is not None
            else ""
        )
        + ".</p>",
    ]
    if fit is None:
        return "\n".join(out)
    origin = (
        f"MLflow fit run <code>{fit.run_id}</code>"
        if fit.run_id
        else "fitted for this dashboard"
        if not view.fit_reused
        else "stored fit"
    )
    out.append(
        f"<p><b>{html.escape(str(fit.law))}</b><br>{fit.data['n_points']} points, "
        f"{fit.boot.n_resamples} bootstrap resamples; {origin}.</p>"
    )
    table = fit.param_table()
    rows = "".join(
        f"<tr><td>{html.escape(str(name))}</td><td>{_fmt(r.estimate)}</td>"
        f"<td>{_fmt(r.lo)}</td><td>{_fmt(r.hi)}</td></tr>"
        for name, r in table.iterrows()
    )
    out.append(
        f"<table><tr><th>parameter</th><th>estimate</th><th>{fit.boot.level:.0%} lo</th>"
        f"<th>{fit.boot.level:.0%} hi</th></tr>{rows}</table>"
    )
    if fit.allocation is not None:
        a = fit.allocation
        out.append(
            f"<p>Compute-optimal: N_opt(C) = {a.n_coef:.4g}·C<sup>{a.a:.4f}</sup>, "
            f"D_opt(C) = {a.d_coef:.4g}·C<sup>{a.b:.4f}</sup>.</p>"
        )
    if fit.boot.warnings:
        out.append(
            "<ul class='notes'>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in fit.boot.warnings)
            + "</ul>"
        )
    return "\n".join(out)


def render_html(dashboard: Dashboard) -> str:
    """The whole dashboard as one HTML document with plotly.js embedded once."""
    d = dashboard.definition
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(d.title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{html.escape(d.title)}</h1>",
        f"<p class='meta'>scalelab dashboard, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; law "
        f"<code>{d.law}</code>; {len(dashboard.panels)} panels.</p>",
    ]
    if d.description:
        parts.append(f"<p>{html.escape(d.description)}</p>")
    parts += [_fit_summary(v) for v in dashboard.views]
    if dashboard.problems:
        parts.append(
            "<h3>Notes</h3><ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in dashboard.problems)
            + "</ul>"
        )
    if (line := dashboard.left_out_line()) is not None:
        parts.append(f"<p class='left-out'>{html.escape(line)}</p>")
    for i, panel in enumerate(dashboard.panels):
        div = pio.to_html(
            panel.figure,
            include_plotlyjs=False,
            full_html=False,
            div_id=f"panel-{i}",
            default_height=f"{panel.figure.layout.height}px",
            config=PLOT_CONFIG,
        )
        parts.append(f"<section class='panel' data-panel='{panel.key}'>{div}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(dashboard: Dashboard, path: str | Path) -> Path:
    """Write the dashboard to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(dashboard), encoding="utf-8")
    return path


def write_pngs(dashboard: Dashboard, folder: str | Path) -> tuple[list[Path], str | None]:
    """Each panel as ``<folder>/<nn>-<panel>.png`` when kaleido can drive a Chromium.

    Returns the files written and, when none could be, the reason.
    """
    try:
        import kaleido  # noqa: F401  (plotly.io uses it; check it is there first)
    except ImportError:
        return [], "PNG figures skipped: kaleido is not installed"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:02d}-{p.key}.png" for i, p in enumerate(dashboard.panels)]
    try:
        pio.write_images([p.figure for p in dashboard.panels], paths, width=1100, height=HEIGHT_PNG)
    except Exception as err:  # kaleido raises its own types when no browser starts
        for p in paths:
            p.unlink(missing_ok=True)
        return [], f"PNG figures skipped: {str(err).splitlines()[0] if str(err) else err!r}"
    return paths, None
