"""Dashboards: definitions, panels, the offline HTML file, and Chromium rendering it."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from in_process import scalelab
from plotly.offline import get_plotlyjs
from pydantic import ValidationError
from test_query_data import KNOWN, Sweep, make_study, shared_sweep, write_csv

from scalelab.dashboard import (
    DEFAULT_PANELS,
    Dashboard,
    build_dashboard,
    load_definition,
    render_html,
    write_html,
    write_pngs,
)
from scalelab.dashboard.definition import (
    OPTUNA_PANELS,
    DashboardDefinition,
    OptunaStudy,
    Planned,
    Source,
)
from scalelab.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "dashboards").glob("*.yaml"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def fast(definition: DashboardDefinition, resamples: int = 6) -> DashboardDefinition:
    """The same definition with few bootstrap resamples, to keep tests quick."""
    backtest = definition.backtest.model_copy(update={"resamples": 4})
    return definition.model_copy(update={"resamples": resamples, "backtest": backtest})


@pytest.fixture
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return shared_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Dashboard:
    """Every panel, from the sweep's runs, curves, stored fit and study."""
    sweep = shared_sweep(tmp_path_factory)
    ws, storage = sweep.ws, sweep.storage
    definition = DashboardDefinition(
        title="synthetic sweep",
        law="chinchilla",  # the law of the sweep's stored fit, so that it is reused
        sources=[Source(experiment="syn", optuna=OptunaStudy(storage=storage, study="syn-study"))],
        planned=[Planned(compute=1e16), Planned(label="1M", n_params=1e6, tokens=1e8)],
        backtest={"ratios": [10], "resamples": 4},
    )
    return build_dashboard(fast(definition), ws)


# ---- a sweep shaped like the quickstart ---------------------------------------------------------
QS_SIZES = (1e4, 2e4, 3e4, 5e4, 1.5e5, 4.5e5)
QS_TOKENS = (4e5, 1.6e6)
QS_CELLS = [f"n{n:.0e}-d{d:.0e}" for n in QS_SIZES for d in QS_TOKENS]


def make_ladder(ws: Workspace, name: str = "qs") -> None:
    """One MLflow run per cell of a 6-size x 2-budget ladder, validated once (at the end)."""
    from mlflow.entities import Metric, Param

    from scalelab.results import tracking

    exp_id = tracking.ensure_experiment(name, ws)
    client = tracking.client(ws)
    for cell, (n, d) in zip(QS_CELLS, [(n, d) for n in QS_SIZES for d in QS_TOKENS], strict=True):
        tags = {"sweep": name, "cell": cell, "trial": "0", "corpus": "c", "tokenizer": "byte"}
        rid = client.create_run(exp_id, tags=tags).info.run_id
        loss = float(KNOWN.predict(n_params=n, tokens=d))
        metrics = [Metric("val/loss", loss, 0, 10), Metric("loss", loss, 0, 10)]
        metrics += [Metric("tokens_seen", d * s / 10, 0, s) for s in (5, 10)]
        params = {"n_params": int(n), "tokens": d, "compute": 6 * n * d, "corpus": "c"}
        params["tokenizer"] = "byte"
        client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(rid)


def make_cell_studies(storage: str, sweep: str, *, trials: int, searched: bool, steps: int) -> None:
    """One Optuna study per cell (``<sweep>/<cell>``), as a sweep keeps them: the learning rate
    and warm-up searched or fixed (one-choice parameters), ``steps`` reports per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for k, cell in enumerate(QS_CELLS):
        study = optuna.create_study(
            study_name=f"{sweep}/{cell}", storage=storage, sampler=optuna.samplers.RandomSampler(k)
        )

        def objective(trial: optuna.Trial, k: int = k) -> float:
            if searched:
                lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
                warmup = trial.suggest_float("warmup", 0.0, 0.2)
            else:
                lr = trial.suggest_categorical("lr", [0.2 / (16 + 8 * k)])
                warmup = trial.suggest_categorical("warmup", [0.05])
            trial.suggest_categorical("batch_size", [16])
            loss = 2.0 + 0.05 * k + (math.log10(lr) + 2.5) ** 2 + warmup
            for step in range(1, steps + 1):
                trial.report(loss + 1.0 / step - 1.0 / steps, step * 2048)
            return loss

        study.optimize(objective, n_trials=trials)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Dashboard:
    """Every panel of a quickstart-shaped sweep: 12 cells, one trial each, nothing searched,
    every run validated once, at its end."""
    root = tmp_path_factory.mktemp("quickstart")
    ws = Workspace.resolve(root / "ws").ensure()
    make_ladder(ws)
    storage = f"sqlite:///{root / 'optuna.db'}"
    make_cell_studies(storage, "qs", trials=1, searched=False, steps=1)
    source = Source(experiment="qs", optuna=OptunaStudy(storage=storage, study="qs"))
    definition = DashboardDefinition(
        title="quickstart", sources=[source], law="chinchilla", backtest={"ratios": [10]}
    )
    return build_dashboard(fast(definition), ws)


# ---- definitions -------------------------------------------------------------------------------
def _write(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"title": "t", "sources": [{"csv": "r.csv"}], "colour": "red"}, "colour"),
        ({"title": "t", "sources": [{"csv": "r.csv"}], "panels": ["pie_chart"]}, "pie_chart"),
        ({"title": "t", "sources": [{"csv": "r.csv", "experiment": "e"}]}, "exactly one of"),
        ({"title": "t", "sources": []}, "sources"),
        (
            {"title": "t", "sources": [{"csv": "r.csv"}], "planned": [{"n_params": 1e9}]},
            "n_params and tokens, or compute",
        ),
        ({"title": "t", "sources": [{"csv": "r.csv"}], "law": "cubic"}, "law"),
        ({"title": "t", "sources": [{"csv": "r.csv"}], "backtest": {"ratios": [0.5]}}, "> 1"),
    ],
)
def test_bad_definitions_are_rejected_naming_the_problem(tmp_path, payload, needle) -> None:
    with pytest.raises(ValidationError, match=needle):
        load_definition(_write(tmp_path, payload))


def test_definition_csv_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", {"title": "t", "sources": [{"csv": "../r.csv"}]})
    definition = load_definition(path)
    assert definition.sources[0].csv == (tmp_path / "r.csv").resolve()
    assert list(definition.panels) == list(DEFAULT_PANELS)


def test_dashboard_cli_rejects_a_bad_definition_in_one_line(tmp_path, workspace) -> None:
    path = _write(tmp_path, {"title": "t", "sources": [{"csv": "r.csv"}], "colour": "red"})
    result = scalelab(["dashboard", "--definition", str(path)], workspace.root)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: colour: Extra inputs are not permitted"]


# ---- panels and HTML ---------------------------------------------------------------------------
def _check_labels(board: Dashboard) -> None:
    """Every panel has a title and labelled axes; losses and compute carry their units."""
    for panel in board.panels:
        layout = panel.figure.layout
        assert panel.title and layout.title.text == panel.title
        axes = [layout[k] for k in layout if k.startswith(("xaxis", "yaxis"))]
        assert axes, panel.key
        for axis in axes:
            text = axis.title.text or ""
            assert text, f"{panel.key}: an axis without a title"
            if "loss" in text and "error" not in text:
                assert "nats/token" in text, text
            if "compute" in text:
                assert "FLOPs" in text, text


def test_every_panel_is_drawn_from_a_sweep(full: Dashboard, sweep: Sweep) -> None:
    run_id = sweep.fit_run_id
    assert full.notes == []
    assert [p.key for p in full.panels] == list(DEFAULT_PANELS)
    counts = {p.key: len(p.figure.data) for p in full.panels}
    assert counts["curves_tokens"] == counts["curves_compute"] == 15 + 1  # runs + colour bar
    # 3 budgets: runs and parabola each, plus the minima.
    assert counts["isoflop"] == 3 * 2 + 1
    assert counts["optuna_history"] >= 1 and counts["optuna_intermediate"] == 6
    _check_labels(full)
    # The stored fit of `scalelab fit` saw the same runs, so it was reused, not refitted.
    assert full.views[0].fit.run_id == run_id and full.views[0].fit_reused
    assert full.views[0].envelope is not None and full.views[0].isoflop is not None


def test_html_is_one_offline_file_with_plotly_once(full: Dashboard, tmp_path: Path) -> None:
    path = write_html(full, tmp_path / "d.html")
    text = path.read_text()
    library = get_plotlyjs()
    assert text.count(library) == 1  # embedded exactly once, not per panel
    rest = text.replace(library, "")
    assert "<script src=" not in rest and "http://" not in rest and "https://" not in rest
    assert text.count("class='panel'") == len(full.panels)
    assert 3e6 < path.stat().st_size < 9e6


def test_panels_without_data_are_left_out_with_a_note(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "runs.csv")
    ws = Workspace.resolve(tmp_path / "ws")
    board = build_dashboard(fast(DashboardDefinition(title="csv", sources=[Source(csv=csv)])), ws)
    keys = [p.key for p in board.panels]
    assert keys == [
        "loss_vs_params",
        "loss_vs_compute",
        "isoflop",
        "frontier",
        "residuals",
        "backtest",
    ]
    notes = " ".join(board.notes)
    assert "curves_tokens" in notes and "no training curves" in notes
    assert "optuna_history" in notes and "no Optuna study" in notes
    html = render_html(board)
    assert "no training curves" in html
    # A second dashboard of the same CSV reuses the fit cached in the workspace.
    again = build_dashboard(fast(DashboardDefinition(title="csv", sources=[Source(csv=csv)])), ws)
    assert again.views[0].fit_reused


def test_a_sweeps_cell_studies_are_drawn_from_its_journal(tmp_path: Path) -> None:
    import optuna

    from scalelab.sweep.storage import open_storage

    url = f"journal:{tmp_path / 'journal.log'}"
    storage = open_storage(url)
    optuna.create_study(study_name="lr", storage=storage)  # the sweep's own study: no trials
    for cell in ("n10k", "n30k"):
        make_study(storage, name=f"lr/{cell}", n_trials=4)
    csv = write_csv(tmp_path / "runs.csv")
    definition = DashboardDefinition(
        title="sweep",
        sources=[Source(csv=csv, optuna=OptunaStudy(storage=url, study="lr"))],
        panels=list(OPTUNA_PANELS),
    )
    board = build_dashboard(definition, Workspace.resolve(tmp_path / "ws"))
    assert board.notes == []
    assert [p.key for p in board.panels] == list(OPTUNA_PANELS)  # the cells share each panel
    history = board.panels[0].figure
    assert [t.name for t in history.data if t.showlegend is not False] == ["n10k", "n30k"]
    assert board.panels[2].figure.layout.xaxis.title.text.startswith("tokens seen")
    missing = definition.model_copy(
        update={"sources": [Source(csv=csv, optuna=OptunaStudy(storage=url, study="nope"))]}
    )
    notes = build_dashboard(missing, Workspace.resolve(tmp_path / "ws")).notes
    assert any("no Optuna study 'nope'" in n for n in notes)


def _optuna_board(tmp_path: Path, **studies: Any) -> Dashboard:
    """The Optuna panels of a 12-cell sweep (``make_cell_studies``'s arguments)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_cell_studies(storage, "qs", **studies)
    source = Source(
        csv=write_csv(tmp_path / "runs.csv"), optuna=OptunaStudy(storage=storage, study="qs")
    )
    definition = DashboardDefinition(title="qs", sources=[source], panels=list(OPTUNA_PANELS))
    return build_dashboard(definition, Workspace.resolve(tmp_path / "ws"))


def test_a_twelve_cell_sweep_is_one_readable_panel_per_optuna_view(tmp_path: Path) -> None:
    board = _optuna_board(tmp_path, trials=4, searched=True, steps=3)
    assert [p.key for p in board.panels] == list(OPTUNA_PANELS) and board.notes == []
    history, importances, intermediate = (p.figure for p in board.panels)
    # One legend entry per cell, each cell its own colour (no recycled palette).
    shown = [t for t in history.data if t.showlegend is not False]
    assert [t.name for t in shown] == QS_CELLS
    assert len({t.marker.color for t in shown}) == 12
    assert len([t for t in intermediate.data if t.showlegend is not False]) == 12
    # Importances of the searched parameters only: batch_size took one value in every cell.
    # Importances of the searched parameters only (batch_size took one value in every cell),
    # and never the equal shares Optuna gives when it cannot tell parameters apart.
    assert sorted(t.name for t in importances.data) == ["lr", "warmup"]
    lr, warmup = sorted(importances.data, key=lambda t: t.name)
    assert list(lr.x) == list(warmup.x) and 0 < len(lr.x) <= 12
    assert all(abs(a - b) > 1e-9 for a, b in zip(lr.y, warmup.y, strict=True))


def test_a_sweep_validated_once_shows_its_points_and_the_law_to_its_marks(
    quickstart: Dashboard,
) -> None:
    figures = {p.key: p.figure for p in quickstart.panels}
    for key in ("curves_tokens", "curves_compute"):
        runs = [t for t in figures[key].data if t.name]  # the unnamed trace is the colour bar
        assert len(runs) == 12 and all(len(t.x) == 1 and "markers" in t.mode for t in runs)
    # The law runs out to the farthest mark drawn on the compute axis (1000x beyond).
    fig = figures["loss_vs_compute"]
    law = max(max(t.x) for t in fig.data if t.name and "law" in t.name)
    assert max(shape.x0 for shape in fig.layout.shapes) <= law
    assert set(OPTUNA_PANELS) <= set(quickstart.left_out)
    assert not {"optuna_history", "optuna_importances"} & {p.key for p in quickstart.panels}


def test_optuna_views_without_information_are_left_out_in_one_line(tmp_path: Path) -> None:
    # The quickstart's shape: one trial per cell, nothing searched, one report each.
    board = _optuna_board(tmp_path, trials=1, searched=False, steps=1)
    assert board.panels == [] and board.problems == []
    assert list(board.left_out) == list(OPTUNA_PANELS)
    html = render_html(board)
    assert html.count("class='left-out'") == 1
    line = html.split("class='left-out'>")[1].split("</p>")[0]
    assert "\n" not in line and all(key in line for key in OPTUNA_PANELS)
    assert "one trial" in line


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_definition_renders(path: Path, tmp_path: Path) -> None:
    definition = load_definition(path)
    board = build_dashboard(fast(definition), Workspace.resolve(tmp_path / "ws"))
    # A shipped definition asks only for panels its data can fill.
    assert sorted({p.key for p in board.panels}) == sorted(definition.panels), board.notes
    _check_labels(board)
    out = write_html(board, tmp_path / f"{path.stem}.html")
    assert out.stat().st_size > 3e6


def test_shipped_definitions_exist() -> None:
    assert len(SHIPPED) >= 2


def test_dashboard_cli_writes_html_and_logs_it_on_the_fit_run(sweep: Sweep, tmp_path) -> None:
    import mlflow

    ws, storage, run_id = sweep.ws, sweep.storage, sweep.fit_run_id
    out = tmp_path / "board.html"
    args = ["dashboard", "--experiment", "syn", "--storage", storage, "--study", "syn-study"]
    result = scalelab(
        [*args, "--out", str(out), "--law", "chinchilla", "--resamples", "4"], ws.root
    )
    assert result.returncode == 0, result.stderr
    assert f"dashboard: {out} (11 panels" in result.stdout
    assert f"logged on MLflow fit run(s) {run_id}" in result.stdout
    logged = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path="dashboard.html",
        tracking_uri=ws.tracking_uri,
        dst_path=str(tmp_path / "dl"),
    )
    assert Path(logged).read_bytes() == out.read_bytes()


# ---- a real browser ------------------------------------------------------------------------------
# Per plot: traces in its data, SVG layers, and drawn marks of non-zero size that lie inside
# one of its plot areas (the drag rectangles cover exactly those).
VISIBLE_MARKS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => {
    const areas = Array.from(el.querySelectorAll('.draglayer .nsewdrag'))
        .map(d => d.getBoundingClientRect());
    const inside = r => areas.some(a => r.right >= a.left && r.left <= a.right
                                        && r.bottom >= a.top && r.top <= a.bottom);
    const marks = Array.from(el.querySelectorAll('.cartesianlayer .overplot path'))
        .map(m => m.getBoundingClientRect())
        .filter(r => (r.width > 1 || r.height > 1) && inside(r));
    return {id: el.id, traces: el.data.length, svgs: el.querySelectorAll('.main-svg').length,
            marks: marks.length, height: el.getBoundingClientRect().height,
            title: (el.querySelector('.gtitle') || {}).textContent};
})"""


def _png_is_not_blank(data: bytes) -> bool:
    """True when a PNG has real content: many colours (Pillow), else many distinct bytes."""
    try:
        import io

        from PIL import Image
    except ImportError:
        # Stdlib fallback: the decompressed scanlines of a blank page hold very few byte values.
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        idat, i = b"", 8
        while i < len(data):
            length = int.from_bytes(data[i : i + 4], "big")
            if data[i + 4 : i + 8] == b"IDAT":
                idat += data[i + 8 : i + 8 + length]
            i += 12 + length
        return len(set(zlib.decompress(idat))) > 32
    image = Image.open(io.BytesIO(data)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    return len(colours) > 64


def test_png_check_tells_blank_from_drawn() -> None:
    import struct

    def png(rows: list[bytes], width: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return (
                struct.pack(">I", len(body))
                + kind
                + body
                + struct.pack(">I", zlib.crc32(kind + body))
            )

        header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
        raw = b"".join(b"\x00" + r for r in rows)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )

    blank = png([b"\xff" * 300] * 100, 100)
    drawn = png(
        [
            bytes((x * 7 + y * 13 + c * 91) % 256 for x in range(100) for c in range(3))
            for y in range(100)
        ],
        100,
    )
    assert not _png_is_not_blank(blank)
    assert _png_is_not_blank(drawn)


def test_png_export_writes_every_panel_or_says_why(full: Dashboard, tmp_path: Path) -> None:
    import importlib.util

    board = Dashboard(full.definition, full.views, panels=full.panels[2:4])
    paths, why = write_pngs(board, tmp_path / "figures")
    if importlib.util.find_spec("kaleido") is None:
        assert paths == [] and why == "PNG figures skipped: kaleido is not installed"
        return
    if why is not None and not CHROMIUM.exists():
        pytest.skip(f"kaleido without a Chromium: {why}")
    assert why is None
    assert [p.name for p in paths] == ["00-loss_vs_params.png", "01-loss_vs_compute.png"]
    assert all(_png_is_not_blank(p.read_bytes()) for p in paths)


def _render(board: Dashboard, tmp_path: Path) -> tuple[list[dict], list[str], list[str], Path]:
    """Open the dashboard offline in Chromium: each plot's marks, console errors, network
    requests, and a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    path = write_html(board, tmp_path / "board.html")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            context.route(
                lambda url: not url.startswith("file:"),
                lambda route: (requests.append(route.request.url), route.abort()),
            )
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length === {len(board.panels)}",
                timeout=60_000,
            )
            plots = page.evaluate(VISIBLE_MARKS)
            shot = tmp_path / "board.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return plots, errors, requests, shot


def _assert_every_panel_drawn(board: Dashboard, tmp_path: Path) -> None:
    plots, errors, requests, shot = _render(board, tmp_path)
    assert errors == []
    assert requests == []
    assert [p["id"] for p in plots] == [f"panel-{i}" for i in range(len(board.panels))]
    assert [p["traces"] for p in plots] == [len(p.figure.data) for p in board.panels]
    for plot, panel in zip(plots, board.panels, strict=True):
        assert plot["svgs"] >= 2, plot  # plotly draws a main SVG and an overlay SVG
        # Marks (lines, markers, bars) with a size, inside the plot area: a bar chart whose
        # categories were put on a numeric axis has paths, but none of them visible, and a
        # line through one point is a path of no size.
        assert plot["marks"] > 0 and plot["height"] > 300, plot
        assert plot["title"] == panel.title
    assert _png_is_not_blank(shot.read_bytes())


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
)


@pytest.mark.slow
@needs_chromium
def test_chromium_renders_every_panel_offline(full: Dashboard, tmp_path: Path) -> None:
    _assert_every_panel_drawn(full, tmp_path)


@pytest.mark.slow
@needs_chromium
def test_a_sweep_validated_once_per_run_has_no_empty_panel(
    quickstart: Dashboard, tmp_path: Path
) -> None:
    _assert_every_panel_drawn(quickstart, tmp_path)
