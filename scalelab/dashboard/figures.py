"""The dashboard's plotly figures, one function per panel.

Every panel function takes the source views and the definition and returns a list of
``(title, figure)``; it raises :class:`NoData` with the reason when none of the sources has
what it draws. Axes carry units: losses in nats per token, compute in FLOPs, sizes in
parameters and tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from scalelab.dashboard.definition import ALL_PANELS
from scalelab.forecast.answer import EXTRAPOLATION_WARN
from scalelab.vocab import compute_6nd

if TYPE_CHECKING:
    from scalelab.dashboard.build import SourceView
    from scalelab.dashboard.definition import DashboardDefinition, Planned
    from scalelab.forecast.answer import Fit

LOSS = "validation loss (nats/token)"
COMPUTE = "training compute C (FLOPs)"
PARAMS = "parameters N (non-embedding)"
TOKENS = "training tokens D"
GRID = 80
HEIGHT = 520
FEW_POINTS = 5  # a curve with fewer points gets markers: a one-point line draws nothing


class NoData(Exception):
    """A panel has nothing to draw; the message says why."""


Made = list[tuple[str, go.Figure]]


# ---- helpers ---------------------------------------------------------------------------------
def _color(i: int) -> str:
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def palette(n: int) -> list[str]:
    """``n`` distinct colours: plotly's 10, then Dark24's 24, then samples of a rainbow
    scale, so that no two traces of a figure share a colour."""
    if n <= len(qualitative.Plotly):
        return list(qualitative.Plotly[:n])
    if n <= len(qualitative.Dark24):
        return list(qualitative.Dark24[:n])
    return sample_colorscale("Turbo", list(np.linspace(0.05, 0.95, n)), colortype="rgb")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color.lstrip("#")[k : k + 2], 16) for k in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(
    fig: go.Figure,
    title: str,
    x: str,
    y: str,
    *,
    logx: bool | None = True,
    logy: bool | None = False,
) -> go.Figure:
    """Title, axis labels and the house style; ``None`` keeps an axis's type (categories)."""
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=HEIGHT,
        margin={"l": 70, "r": 30, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.18},
    )
    # Powers of ten, not SI prefixes: "30p" for a residual or "100B" for FLOPs misleads.
    fig.update_xaxes(title_text=x, exponentformat="power")
    fig.update_yaxes(title_text=y, exponentformat="power")
    if logx is not None:
        fig.update_xaxes(type="log" if logx else "linear")
    if logy is not None:
        fig.update_yaxes(type="log" if logy else "linear")
    return fig


def _band(
    fig: go.Figure,
    x: np.ndarray,
    pred: Any,
    color: str,
    name: str,
    showlegend: bool = True,
    **where: Any,
) -> None:
    """A line with a shaded interval: lower bound, upper bound filled to it, then the value."""
    group = name
    fig.add_trace(
        go.Scatter(
            x=x,
            y=pred.lo,
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=group,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=pred.hi,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=_rgba(color, 0.18),
            hoverinfo="skip",
            name=f"{pred.level:.0%} {pred.kind} interval",
            showlegend=False,
            legendgroup=group,
        ),
        **where,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=pred.value,
            mode="lines",
            line={"color": color, "width": 2},
            name=name,
            legendgroup=group,
            showlegend=showlegend,
        ),
        **where,
    )


def _marker(view: SourceView, i: int, values: np.ndarray, label: str, single: bool) -> dict:
    """Markers coloured by ``values`` (log10) for one source, by source colour otherwise."""
    if single:
        return {
            "size": 7,
            "color": np.log10(values),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": label}, "thickness": 12},
            "opacity": 0.85,
        }
    return {"size": 7, "color": _color(i), "opacity": 0.8}


def _hover(df: Any) -> list[str]:
    cols = [c for c in ("run_id", "n_params", "tokens", "compute", "loss") if c in df.columns]
    out = []
    for row in df[cols].itertuples(index=False):
        parts = []
        for c, v in zip(cols, row, strict=True):
            parts.append(f"{c}={v}" if isinstance(v, str) else f"{c}={v:.4g}")
        out.append("<br>".join(parts))
    return out


def _fitted(views: list[SourceView]) -> list[tuple[int, SourceView, Fit]]:
    return [(i, v, v.fit) for i, v in enumerate(views) if v.fit is not None]


def _compute_grid(fit: Fit, planned: list[Planned], reach: float = 1.0) -> np.ndarray:
    """Compute from half the smallest fitted run to twice the largest of the fitted runs times
    ``reach`` and the planned sizes."""
    top = max([fit.data["max_compute"] * reach, *[p.total_compute for p in planned]])
    return np.geomspace(fit.data["min_compute"] / 2, top * 2, GRID)


def _compute_for_sizes(fit: Fit, runs: Any, planned: list[Planned], grid: np.ndarray) -> np.ndarray:
    """Budgets whose compute-optimal N spans the size axis (half the smallest run to twice the
    largest run or planned size), so the law runs across the whole plot; ``grid`` when none
    does (an allocation far outside the runs)."""
    sizes = [*runs["n_params"].to_numpy(dtype=float), *[p.n_params for p in planned if p.n_params]]
    wide = np.geomspace(grid[0] / 1e6, grid[-1] * 1e6, 4 * GRID)
    n_opt = fit.law.optimal_allocation(wide)[0]
    inside = (n_opt >= min(sizes) / 2) & (n_opt <= max(sizes) * 2)
    return wide[inside] if inside.sum() >= 2 else grid


def _planned_point(fit: Fit, p: Planned) -> tuple[float, float, Any] | None:
    """(N, C, loss prediction) of a planned size under ``fit`` (N is N_opt for a budget)."""
    variables = fit.law.variables
    if p.compute is not None:
        if variables not in (("n_params", "tokens"), ("compute",)):
            return None
        n = float(fit.allocation.n_opt(p.compute).value) if fit.allocation else math.nan
        return n, float(p.compute), fit.boot.predict(compute=p.compute)
    n, d = float(p.n_params), float(p.tokens)
    inputs = {"n_params": n, "tokens": d, "compute": compute_6nd(n, d)}
    return n, inputs["compute"], fit.boot.predict(**{v: inputs[v] for v in variables})


def _add_planned(
    fig: go.Figure, fit: Fit, planned: list[Planned], axis: str, color: str, label: str
) -> None:
    xs, ys, lo, hi, names = [], [], [], [], []
    for p in planned:
        point = _planned_point(fit, p)
        if point is None:
            continue
        x = point[0] if axis == "n_params" else point[1]
        if not math.isfinite(x):
            continue
        pred = point[2]
        xs.append(x)
        ys.append(pred.value)
        lo.append(pred.value - pred.lo)
        hi.append(pred.hi - pred.value)
        names.append(f"{p.name}: loss {pred.value:.4g} [{pred.lo:.4g}, {pred.hi:.4g}]")
    if xs:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name=f"planned ({label})",
                marker={
                    "symbol": "diamond",
                    "size": 11,
                    "color": color,
                    "line": {"width": 1, "color": "black"},
                },
                error_y={"type": "data", "array": hi, "arrayminus": lo, "color": color},
                text=names,
                hovertemplate="%{text}<extra></extra>",
            )
        )


def _extrapolation_marks(fig: go.Figure, fits: list[tuple[int, SourceView, Fit]]) -> None:
    """Dotted lines at the largest fitted compute and where ``predict`` starts warning."""
    if not fits:
        return
    top = max(fit.data["max_compute"] for _, _, fit in fits)
    for x, color, text in (
        (top, "grey", "largest fitted C"),
        (top * EXTRAPOLATION_WARN, "firebrick", f"{EXTRAPOLATION_WARN:g}× beyond"),
    ):
        fig.add_vline(x=x, line_dash="dot", line_color=color)
        # Annotations on a log axis take log10 coordinates (add_vline's own would not).
        fig.add_annotation(
            x=math.log10(x),
            xref="x",
            y=1.0,
            yref="paper",
            text=text,
            showarrow=False,
            xanchor="right",
            yanchor="top",
            font={"color": color, "size": 11},
        )


# ---- panels ----------------------------------------------------------------------------------
def curves(views: list[SourceView], definition: DashboardDefinition, x: str) -> Made:
    """Validation loss of every run against tokens seen (``x="tokens"``) or compute."""
    have = [v for v in views if v.table.curves is not None]
    if not have:
        raise NoData(
            "no training curves: the sources hold final losses only (curves come "
            "from MLflow val/loss histories, or CSV columns run_id and tokens_seen)"
        )
    column = "tokens_seen" if x == "tokens" else "compute"
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot"]
    for k, view in enumerate(have):
        c = view.table.curves
        log_n = np.log10(c["n_params"].to_numpy(dtype=float))
        lo, hi = float(log_n.min()), float(log_n.max())
        for run_id, g in c.groupby("run_id", sort=False):
            ln = math.log10(float(g["n_params"].iloc[0]))
            color = sample_colorscale("Viridis", [(ln - lo) / (hi - lo) if hi > lo else 0.5])[0]
            fig.add_trace(
                go.Scatter(
                    x=g[column],
                    y=g["loss"],
                    mode="lines+markers" if len(g) < FEW_POINTS else "lines",
                    line={"color": color, "width": 1.5, "dash": dashes[k % len(dashes)]},
                    marker={"color": color, "size": 6},
                    name=f"{view.label}: {run_id}",
                    showlegend=False,
                    hovertemplate=(
                        f"{view.label}<br>run {run_id}<br>N={10**ln:.3g}<br>"
                        f"{column}=%{{x:.3g}}<br>loss=%{{y:.4f}}<extra></extra>"
                    ),
                )
            )
        # An invisible marker carries the colour bar for log10 N.
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                hoverinfo="skip",
                showlegend=False,
                marker={
                    "colorscale": "Viridis",
                    "cmin": lo,
                    "cmax": hi,
                    "color": [lo],
                    "showscale": k == 0,
                    "colorbar": {"title": {"text": "log10 N"}, "thickness": 12},
                },
            )
        )
    title = (
        "Validation loss against tokens seen"
        if x == "tokens"
        else "Validation loss against compute"
    )
    xlabel = "tokens seen (tokens)" if x == "tokens" else "compute 6·N·tokens seen (FLOPs)"
    return [(title, _layout(fig, title, xlabel, LOSS, logy=True))]


def loss_against(views: list[SourceView], definition: DashboardDefinition, variable: str) -> Made:
    """Final loss of every run against N or C, with the fitted law and its prediction band
    carried out to the planned sizes."""
    fig = go.Figure()
    single = len(views) == 1
    column = "n_params" if variable == "n_params" else "compute"
    drew_law = False
    for i, view in enumerate(views):
        runs = view.table.runs
        if column not in runs.columns:
            continue
        color_by = runs["compute"] if variable == "n_params" else runs["n_params"]
        color_label = "log10 C" if variable == "n_params" else "log10 N"
        fig.add_trace(
            go.Scatter(
                x=runs[column],
                y=runs["loss"],
                mode="markers",
                name=f"{view.label}: runs",
                marker=_marker(view, i, color_by.to_numpy(dtype=float), color_label, single),
                text=_hover(runs),
                hovertemplate="%{text}<extra></extra>",
            )
        )
        fit = view.fit
        if fit is None:
            continue
        variables = fit.law.variables
        color = "#d62728" if single else _color(i)
        # On the compute axis the law runs out to the extrapolation mark drawn there.
        reach = EXTRAPOLATION_WARN if variable == "compute" else 1.0
        grid = _compute_grid(fit, definition.planned, reach)
        if variable == "compute" and variables in (("n_params", "tokens"), ("compute",)):
            _band(
                fig,
                grid,
                fit.boot.predict(compute=grid),
                color,
                f"{view.label}: {fit.law_key} law"
                + (", compute-optimal" if len(variables) == 2 else ""),
            )
            drew_law = True
        elif variable == "n_params" and variables == ("n_params", "tokens"):
            on_axis = _compute_for_sizes(fit, runs, definition.planned, grid)
            _band(
                fig,
                fit.law.optimal_allocation(on_axis)[0],
                fit.boot.predict(compute=on_axis),
                color,
                f"{view.label}: {fit.law_key} law at the compute-optimal D",
            )
            drew_law = True
        elif variable == "n_params" and variables == ("n_params",):
            planned_n = [p.n_params for p in definition.planned if p.n_params]
            top = max([fit.data["max_n_params"], *planned_n])
            n = np.geomspace(float(runs["n_params"].min()) / 2, top * 2, GRID)
            _band(fig, n, fit.boot.predict(n_params=n), color, f"{view.label}: params law")
            drew_law = True
        _add_planned(fig, fit, definition.planned, variable, color, view.label)
    if not fig.data:
        raise NoData(f"no source has a '{column}' column")
    if variable == "compute":
        if drew_law:  # with no law on the axis, the marks would only stretch it
            _extrapolation_marks(fig, _fitted(views))
        title = "Final loss against compute"
    else:
        title = "Final loss against model size"
    if not drew_law:
        title += " (the fitted law has no curve in this variable)"
    xlabel = COMPUTE if variable == "compute" else PARAMS
    return [(title, _layout(fig, title, xlabel, LOSS, logy=True))]


def _budget_of(runs: Any, alloc: Any, budget_column: str | None) -> np.ndarray:
    """The IsoFLOP budget (one of ``alloc.points.compute``) of each run, or NaN."""
    budgets = alloc.points["compute"].to_numpy(dtype=float)
    values = runs[budget_column] if budget_column else runs["compute"]
    values = values.to_numpy(dtype=float)
    distance = np.abs(np.log(values[:, None]) - np.log(budgets[None, :]))
    nearest = distance.argmin(axis=1)
    # Runs farther than a factor 1.5 from every budget with a minimum are not on a profile.
    return np.where(distance.min(axis=1) < math.log(1.5), budgets[nearest], np.nan)


def isoflop(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """IsoFLOP profiles: loss against N at each budget, the fitted parabolas and minima."""
    have = [(i, v) for i, v in enumerate(views) if v.isoflop is not None]
    if not have:
        raise NoData("no source has IsoFLOP profiles with interior minima at two or more budgets")
    fig = go.Figure()
    symbols = ["circle", "square", "triangle-up", "x"]
    for k, (_, view) in enumerate(have):
        alloc, runs = view.isoflop, view.table.runs
        budget = _budget_of(runs, alloc, view.source.budget_column)
        points = alloc.points.sort_values("compute")
        colors = sample_colorscale("Viridis", list(np.linspace(0, 0.9, len(points))))
        for color, row in zip(colors, points.itertuples(index=False), strict=True):
            on = runs[budget == row.compute]
            name = f"{view.label}: C={row.compute:.2g}"
            fig.add_trace(
                go.Scatter(
                    x=on["n_params"],
                    y=on["loss"],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    marker={"color": color, "size": 7, "symbol": symbols[k % len(symbols)]},
                    text=_hover(on),
                    hovertemplate="%{text}<extra></extra>",
                )
            )
            log_n = np.log(on["n_params"].to_numpy(dtype=float))
            x = np.linspace(log_n.min(), log_n.max(), 60)
            parabola = row.loss + 0.5 * row.curvature * (x - math.log(row.n_params)) ** 2
            fig.add_trace(
                go.Scatter(
                    x=np.exp(x),
                    y=parabola,
                    mode="lines",
                    legendgroup=name,
                    line={"color": color, "width": 1.5},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=points["n_params"],
                y=points["loss"],
                mode="markers+lines",
                name=f"{view.label}: minima N*(C)",
                line={"color": "black", "dash": "dot", "width": 1},
                marker={
                    "symbol": "star",
                    "size": 13,
                    "color": "gold",
                    "line": {"width": 1, "color": "black"},
                },
                text=[
                    f"C={c:.3g}<br>N*={n:.3g}<br>loss={v:.4f}"
                    for c, n, v in zip(
                        points["compute"], points["n_params"], points["loss"], strict=True
                    )
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    title = "IsoFLOP profiles: loss against N at fixed compute, with parabola fits and minima"
    return [(title, _layout(fig, title, PARAMS, LOSS))]


def frontier(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Compute-optimal N_opt(C) and D_opt(C) from each approach, with intervals."""
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=("N_opt(C): compute-optimal parameters", "D_opt(C): compute-optimal tokens"),
    )
    drew = False
    for i, view in enumerate(views):
        color = _color(i)
        c = view.table.runs["compute"].to_numpy(dtype=float)
        top = max([c.max(), *[p.total_compute for p in definition.planned]])
        grid = np.geomspace(c.min() / 2, top * 2, GRID)
        fit = view.fit
        if fit is not None and fit.allocation is not None:
            alloc = fit.allocation
            for col, pred in ((1, alloc.n_opt(grid)), (2, alloc.tokens_opt(grid))):
                _band(
                    fig,
                    grid,
                    pred,
                    color,
                    f"{view.label}: from the {fit.law_key} fit",
                    showlegend=col == 1,
                    row=1,
                    col=col,
                )
            drew = True
        for approach, alloc, dash in (
            ("IsoFLOP minima", view.isoflop, "dash"),
            ("training-curve envelope", view.envelope, "dot"),
        ):
            if alloc is None:
                continue
            for col, pred in ((1, alloc.n_opt(grid)), (2, alloc.tokens_opt(grid))):
                fig.add_trace(
                    go.Scatter(
                        x=grid,
                        y=pred.value,
                        mode="lines",
                        name=f"{view.label}: {approach}",
                        line={"color": color, "dash": dash},
                        legendgroup=f"{i}{approach}",
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
            if approach == "IsoFLOP minima":
                pts = alloc.points
                for col, ycol in ((1, "n_params"), (2, "tokens")):
                    fig.add_trace(
                        go.Scatter(
                            x=pts["compute"],
                            y=pts[ycol],
                            mode="markers",
                            showlegend=False,
                            legendgroup=f"{i}{approach}",
                            marker={"color": color, "symbol": "star", "size": 10},
                        ),
                        row=1,
                        col=col,
                    )
            drew = True
    if not drew:
        raise NoData(
            "no compute-optimal allocation: needs a law of N and D (chinchilla or "
            "kaplan), IsoFLOP profiles, or training curves"
        )
    title = "Compute-optimal frontier: N_opt(C) and D_opt(C) with intervals"
    _layout(fig, title, COMPUTE, PARAMS, logy=True)
    fig.update_yaxes(title_text=TOKENS, row=1, col=2)
    return [(title, fig)]


def residuals(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """ln(observed/fitted loss) of every fitted point against compute."""
    fits = _fitted(views)
    if not fits:
        raise NoData("no fitted law")
    fig = go.Figure()
    single = len(views) == 1
    for i, view, fit in fits:
        points = view.table.fit_points(fit.exclude_before)
        law = fit.law
        predicted = law.predict(**{v: points[v].to_numpy(dtype=float) for v in law.variables})
        r = np.log(points["loss"].to_numpy(dtype=float)) - np.log(predicted)
        fig.add_trace(
            go.Scatter(
                x=points["compute"],
                y=r,
                mode="markers",
                name=f"{view.label} ({fit.law_key})",
                marker=_marker(
                    view,
                    i,
                    points["n_params"].to_numpy(dtype=float)
                    if "n_params" in points
                    else points["compute"].to_numpy(dtype=float),
                    "log10 N",
                    single,
                ),
                text=_hover(points),
                hovertemplate="%{text}<br>residual=%{y:.4f}<extra></extra>",
            )
        )
    fig.add_hline(y=0.0, line_color="grey")
    title = "Residuals of the fitted law"
    return [(title, _layout(fig, title, COMPUTE, "log residual ln(L_observed / L_fitted)"))]


def backtest(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Relative error of predictions for held-out runs against the extrapolation ratio."""
    have = [(i, v) for i, v in enumerate(views) if v.backtest is not None]
    if not have:
        raise NoData("no backtest (needs runs spanning more than the smallest ratio)")
    fig = go.Figure()
    symbols = ["circle", "square", "diamond", "triangle-up", "x"]
    for k, (i, view) in enumerate(have):
        table = view.backtest.runs
        for j, (law, g) in enumerate(table.groupby("law", sort=False)):
            ratio = g["compute"] / g["cut"]
            truth = g["loss"]
            fig.add_trace(
                go.Scatter(
                    x=ratio,
                    y=100 * g["rel_error"],
                    mode="markers",
                    name=f"{view.label}: {law}",
                    marker={
                        "color": _color(j if len(have) == 1 else i),
                        "size": 7,
                        "symbol": symbols[(j + k) % len(symbols)],
                        "opacity": 0.8,
                    },
                    error_y={
                        "type": "data",
                        "array": 100 * (g["hi"] - g["predicted"]) / truth,
                        "arrayminus": 100 * (g["predicted"] - g["lo"]) / truth,
                        "thickness": 1,
                    },
                    text=[
                        f"cut C_max/{f:g}<br>C={c:.3g}<br>loss {t:.4f}, predicted {p:.4f}"
                        for f, c, t, p in zip(
                            g["factor"], g["compute"], truth, g["predicted"], strict=True
                        )
                    ],
                    hovertemplate="%{text}<br>error %{y:.2f}%<extra></extra>",
                )
            )
    fig.add_hline(y=0.0, line_color="grey")
    title = (
        "Backtest: error predicting held-out runs from runs below C_max/ratio "
        f"(ratios {', '.join(f'{r:g}' for r in definition.backtest.ratios)})"
    )
    return [
        (
            title,
            _layout(
                fig,
                title,
                "extrapolation ratio C / C_cut (×)",
                "relative error of the predicted loss (%)",
            ),
        )
    ]


def _studies(views: list[SourceView]) -> list[SourceView]:
    have = [v for v in views if v.studies]
    if not have:
        raise NoData("no Optuna study (give --study, or optuna: in the definition)")
    return have


def _cell(view: SourceView, study: Any) -> str:
    """A study's name in a legend: its cell (``<sweep>/<cell>`` without the sweep)."""
    return study.study_name.removeprefix(f"{view.optuna.study}/")


def _optuna_layout(fig: go.Figure, title: str, x: str, y: str, legend: str) -> go.Figure:
    """The house style, with a legend titled by what its entries are (cells or parameters)."""
    _layout(fig, title, x, y, logx=None, logy=None)
    fig.update_layout(legend_title_text=legend)
    return fig


def _complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def optuna_history(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Each trial's objective and the best so far, every study of a source (a sweep's cells)
    in one plot, one colour per cell; left out when no study has two finished trials."""
    out = []
    have = _studies(views)
    for view in have:
        studies = [s for s in view.studies if len(_complete(s)) >= 2]
        if not studies:
            continue
        fig = go.Figure()
        for color, study in zip(palette(len(studies)), studies, strict=True):
            trials = _complete(study)
            x = list(range(len(trials)))
            values = [t.value for t in trials]
            cell = _cell(view, study)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=values,
                    mode="markers",
                    name=cell,
                    legendgroup=cell,
                    marker={"color": color, "size": 7},
                    hovertemplate=f"{cell}<br>trial %{{x}}<br>value %{{y:.4f}}<extra></extra>",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=np.minimum.accumulate(values),
                    mode="lines",
                    name=f"{cell}: best so far",
                    legendgroup=cell,
                    showlegend=False,
                    line={"color": color, "width": 1.5},
                    hoverinfo="skip",
                )
            )
        longest = max(len(_complete(s)) for s in studies)
        fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(longest / 10)))  # whole trials only
        title = f"Optimisation history of {len(studies)} studies: each trial and the best so far"
        title += f" ({view.label})" if len(have) > 1 else ""
        label = view.optuna.objective_label
        out.append(
            (title, _optuna_layout(fig, title, "finished trial of the study", label, "study"))
        )
    if not out:
        raise NoData("no study has two finished trials: a history of one trial shows nothing")
    return out


def _importances(study: Any) -> dict[str, float] | None:
    """Optuna's importances of the parameters the study varied, when it can tell them apart:
    ``None`` for fewer than two varied parameters (one has importance 1 by construction) or
    too few trials (Optuna then calls every parameter equally important)."""
    import warnings

    import optuna

    trials = _complete(study)
    varied = sorted(
        name
        for name in {k for t in trials for k in t.params}
        if len({repr(t.params.get(name)) for t in trials}) > 1
    )
    if len(varied) < 2:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importances = optuna.importance.get_param_importances(study, params=varied)
    if any("importances will be equal" in str(w.message) for w in caught):
        return None
    return importances


def optuna_importances(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Importances of the searched hyperparameters, a bar per cell and parameter, one plot per
    source; cells whose importances carry no information are skipped."""
    out = []
    have = _studies(views)
    for view in have:
        table = {_cell(view, s): imp for s in view.studies if (imp := _importances(s))}
        if not table:
            continue
        params = sorted({p for imp in table.values() for p in imp})
        fig = go.Figure()
        for color, param in zip(palette(len(params)), params, strict=True):
            fig.add_trace(
                go.Bar(
                    x=list(table),
                    y=[imp.get(param, 0.0) for imp in table.values()],
                    name=param,
                    marker_color=color,
                    hovertemplate=f"%{{x}}<br>{param}: %{{y:.2f}}<extra></extra>",
                )
            )
        fig.update_layout(barmode="group")
        title = f"Hyperparameter importances in {len(table)} studies"
        title += f" ({view.label})" if len(have) > 1 else ""
        ylabel = "importance (share, sums to 1 per study)"
        out.append((title, _optuna_layout(fig, title, "study", ylabel, "parameter")))
    if not out:
        raise NoData(
            "no study varied two or more parameters over enough finished trials to rank them"
        )
    return out


def optuna_intermediate(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Values each trial reported to the pruner, every trial of a source in one plot, one
    colour per cell (pruned trials dotted); left out when no trial reported twice."""
    from optuna.trial import TrialState

    out = []
    have = _studies(views)
    for view in have:
        studies = [s for s in view.studies if any(len(t.intermediate_values) > 1 for t in s.trials)]
        if not studies:
            continue
        fig = go.Figure()
        for color, study in zip(palette(len(studies)), studies, strict=True):
            cell = _cell(view, study)
            reported = [t for t in study.trials if t.intermediate_values]
            for k, trial in enumerate(reported):
                steps = sorted(trial.intermediate_values)
                pruned = trial.state == TrialState.PRUNED
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[trial.intermediate_values[s] for s in steps],
                        mode="lines+markers",
                        name=cell,
                        legendgroup=cell,
                        showlegend=k == 0,
                        line={"color": color, "width": 1.2, "dash": "dot" if pruned else "solid"},
                        marker={"size": 4},
                        hovertemplate=(
                            f"{cell}, trial {trial.number} ({trial.state.name.lower()})"
                            "<br>%{x:.3g}: %{y:.4f}<extra></extra>"
                        ),
                    )
                )
        title = "Intermediate values reported to the pruner (pruned trials dotted)"
        title += f" ({view.label})" if len(have) > 1 else ""
        o = view.optuna
        out.append((title, _optuna_layout(fig, title, o.step_label, o.objective_label, "study")))
    if not out:
        raise NoData("no trial reported more than one intermediate value")
    return out


# ---- capabilities ------------------------------------------------------------------------------
def capability(views: list[SourceView], definition: DashboardDefinition) -> Made:
    """Per source and suite: each problem's pass rate against compute (red where a larger run
    does worse by more than ``capability.TOLERANCE``), and the GPT-4 report's aggregate,
    −mean log pass rate over the problems the smallest runs solve, with A·C^-k fitted to it."""
    from scalelab.forecast import capability as cap
    from scalelab.forecast.fit import fit_law

    out: Made = []
    why = "no run has evaluation results (train with eval: suites in the spec, or --eval)"
    for view in views:
        if view.problems is None or view.problems.empty:
            continue
        for suite, table in view.problems.groupby("suite"):
            fig = make_subplots(
                rows=1,
                cols=2,
                subplot_titles=("per-problem pass rate", "−mean log pass rate (solvable)"),
            )
            curves = cap.problem_curves(table, tolerance=cap.TOLERANCE)
            for problem, curve in curves.groupby("problem"):
                flagged = bool(curve["non_monotone"].iloc[0])
                fig.add_trace(
                    go.Scatter(
                        x=curve["compute"],
                        y=curve["pass_rate"],
                        mode="lines+markers" if len(curve) < FEW_POINTS else "lines",
                        line={
                            "width": 1,
                            "color": "rgba(214,39,40,0.7)" if flagged else "rgba(90,90,90,0.3)",
                        },
                        marker={"size": 3},
                        showlegend=False,
                        hovertemplate=f"problem {problem}<br>%{{x:.3g}}: %{{y:.3g}}<extra></extra>",
                    ),
                    row=1,
                    col=1,
                )
            note = ""
            try:
                aggregate = cap.capability_runs(table)
            except ValueError as err:
                aggregate, note = None, str(err)
            if aggregate is not None:
                fig.add_trace(
                    go.Scatter(
                        x=aggregate["compute"],
                        y=aggregate["loss"],
                        mode="markers",
                        name="measured",
                        marker={"color": "black", "size": 7},
                    ),
                    row=1,
                    col=2,
                )
                try:
                    law = fit_law(aggregate, cap.gpt4_law(), check_identifiability=False).law
                    grid = np.geomspace(
                        aggregate["compute"].min(), aggregate["compute"].max(), GRID
                    )
                    fig.add_trace(
                        go.Scatter(
                            x=grid,
                            y=law.predict(compute=grid),
                            mode="lines",
                            name=str(law),
                            line={"color": _color(0)},
                        ),
                        row=1,
                        col=2,
                    )
                except (ValueError, RuntimeError) as err:
                    note = f"no fit: {err}"
            flagged = int(curves.groupby("problem")["non_monotone"].first().sum())
            title = f"{suite}: {curves['problem'].nunique()} problems, {flagged} non-monotone"
            title += f" ({view.label})" if len(views) > 1 else ""
            title += f" — {note}" if note else ""
            _layout(fig, title, COMPUTE, "pass rate")
            fig.update_xaxes(title_text=COMPUTE, type="log", exponentformat="power")
            fig.update_yaxes(title_text="pass rate", row=1, col=1)
            fig.update_yaxes(title_text="−mean log pass rate", type="log", row=1, col=2)
            out.append((title, fig))
    if not out:
        raise NoData(why)
    return out


# ---- the panels by name ------------------------------------------------------------------------
def curves_tokens(views: list[SourceView], definition: DashboardDefinition) -> Made:
    return curves(views, definition, "tokens")


def curves_compute(views: list[SourceView], definition: DashboardDefinition) -> Made:
    return curves(views, definition, "compute")


def loss_vs_params(views: list[SourceView], definition: DashboardDefinition) -> Made:
    return loss_against(views, definition, "n_params")


def loss_vs_compute(views: list[SourceView], definition: DashboardDefinition) -> Made:
    return loss_against(views, definition, "compute")


# The definition's PanelKey names the panels; each is drawn by the function of that name here.
PANELS: dict[str, Callable[[list[SourceView], DashboardDefinition], Made]] = {
    key: globals()[key] for key in ALL_PANELS
}
