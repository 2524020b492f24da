"""The report figures of ``analysis/``, built from the stored data their scripts read."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
sys.path.insert(0, str(ANALYSIS))  # the scripts import their sibling `report`

import chinchilla_replication  # noqa: E402
import isoflop_allocation  # noqa: E402
import predictable_scaling  # noqa: E402

from scalelab.forecast import Chinchilla, isoflop_fit, load_epoch_chinchilla  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
PLOT_WIDTH = 1000  # pixels between the margins of a 1,100-pixel figure


def _svg_text(fig) -> str:
    """Every piece of text plotly.js draws for ``fig`` (tick labels included), via kaleido."""
    pytest.importorskip("kaleido")
    if not CHROMIUM.exists():
        pytest.skip("kaleido needs a Chromium (Debian's chromium at /usr/bin/chromium)")
    svg = fig.to_image(format="svg", width=1100, height=550).decode()
    return " ".join(re.findall(r">([^<>]+)<", svg))


def test_isoflop_allocation_gives_each_data_set_a_colour_and_a_readable_name() -> None:
    raw = pd.read_csv(ANALYSIS / "data" / "openathena_isoflops_transform.csv")
    kept = raw[raw.source.isin(isoflop_allocation.SOURCES) & ~raw.outlier]
    fits = {
        experiment: isoflop_fit(
            group.rename(columns={"params": "n_params"}), budget="budget", n_resamples=4
        )
        for experiment, group in kept.groupby("experiment", sort=True)
    }
    fig = isoflop_allocation.figure(fits)
    assert len(fig.data) == 2 * len(fits) == 14
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len({t.line.color for t in lines}) == len(fits)  # no colour recycled
    for dots, line in zip(fig.data[::2], fig.data[1::2], strict=True):
        assert dots.marker.color == line.line.color  # a data set's minima and line match
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert len(names) == len(fits) and not any("__" in n for n in names), names


def test_chinchilla_replication_colour_bar_clears_the_beta_title() -> None:
    runs = load_epoch_chinchilla(ANALYSIS / "data" / "epoch_chinchilla_svg_extracted_data.csv")
    law = Chinchilla(E=1.82, A=482.0, B=2085.0, alpha=0.35, beta=0.37)
    samples = np.random.default_rng(0).normal([0.35, 0.37], 0.01, size=(50, 2))
    box = {"alpha": (0.32, 0.37), "beta": (0.33, 0.41)}
    fig = chinchilla_replication.figure(runs, law, samples, box)
    bar = next(t.marker.colorbar for t in fig.data if t.marker.colorbar.title.text)
    # The bar with its tick labels (~70 px) ends well before the β title and tick labels
    # (~70 px) left of the right panel.
    assert bar.x + 70 / PLOT_WIDTH < fig.layout.xaxis2.domain[0] - 70 / PLOT_WIDTH
    assert fig.layout.margin.t <= 60  # no blank band above the panel titles
    assert "nats/token" in fig.layout.yaxis.title.text


def _predictable_figure():
    stored = pd.read_csv(ANALYSIS / "data" / "scalelab_predictable_scaling_ladder.csv")
    cells, targets = stored[stored.kind == "ladder"], stored[stored.kind == "target"]
    c = np.geomspace(cells.compute_full.min(), targets.compute_full.max() * 1.5, 14)
    loss = 3.0 * (c / c[0]) ** -0.05
    forecasts = pd.DataFrame(
        {"compute_full": c, "loss": loss, "lo": loss * 0.9, "hi": loss * 1.1, "naive_loss": loss}
    )
    fraction = np.linspace(0.1, 1.0, 10)
    curve = pd.DataFrame({"fraction": fraction, "predicted": 2 - 0.1 * fraction})
    curve["actual"] = curve["predicted"] - 0.3
    return predictable_scaling.draw(cells, forecasts, targets, curve)


def test_predictable_scaling_labels_its_axes_with_units_and_no_band_above() -> None:
    fig = _predictable_figure()
    assert fig.layout.xaxis.exponentformat == "power"
    assert "nats/" in fig.layout.yaxis.title.text and "nats/" in fig.layout.yaxis2.title.text
    assert fig.layout.margin.t <= 60


def test_predictable_scaling_compute_ratio_ticks_are_powers_of_ten() -> None:
    text = _svg_text(_predictable_figure())
    assert "μ" not in text and "µ" not in text, text
    assert "compute / target compute" in text
