"""The public ladders of the forecasting benchmark: shipped files intact, ladders well formed."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scalelab.forecast.benchmark.ladders import Ladder
from scalelab.forecast.benchmark.public_ladders import GADRE_FILE, PUBLIC_LOADERS
from scalelab.forecast.chooser import frontier_points

DATA = Path(__file__).resolve().parents[1] / "analysis" / "data"

# The digests PROVENANCE.md records: a changed file must change both.
SHA256 = {GADRE_FILE: "caee3a622f99d8b6fc97c29446f3a4de8d609b727d59c225007639561c6a477e"}

# name -> (source, runs, at least this many decades of 6·N·D, at least this many frontier runs)
EXPECTED = {
    "gadre-c4": ("gadre2024", 34, 6.0, 18),
    "gadre-rpj": ("gadre2024", 35, 6.0, 18),
    "gadre-rw": ("gadre2024", 35, 6.0, 18),
}


@pytest.mark.parametrize("name", sorted(SHA256))
def test_public_ladder_files_match_their_checksums(name: str) -> None:
    assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == SHA256[name]


def test_every_public_ladder_is_expected_and_named_once() -> None:
    names = [load(DATA).name for load in PUBLIC_LOADERS]
    assert sorted(names) == sorted(EXPECTED)


@pytest.mark.parametrize("load", PUBLIC_LOADERS, ids=lambda f: f.__name__)
def test_public_ladder_shape(load: Callable[[Path], Ladder]) -> None:
    ladder = load(DATA)
    assert isinstance(ladder, Ladder)
    source, n_runs, min_decades, min_frontier = EXPECTED[ladder.name]
    runs = ladder.runs
    assert ladder.source == source and not ladder.hindsight
    assert list(runs.columns) == ["run_id", "n_params", "tokens", "compute", "loss"]
    assert len(runs) == n_runs and runs["run_id"].is_unique
    values = runs[["n_params", "tokens", "compute", "loss"]].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values > 0).all()
    np.testing.assert_allclose(runs["compute"], 6 * runs["n_params"] * runs["tokens"])
    assert runs["compute"].is_monotonic_increasing
    # nats/token of 11M-6.9B models: far from 0 and from ln(vocabulary)
    assert runs["loss"].between(1.5, 8.0).all()
    decades = np.log10(runs["compute"].max() / runs["compute"].min())
    assert decades >= min_decades
    front = frontier_points(runs)
    assert len(front) >= min_frontier
    # a 1000x forecast needs 4 frontier runs three decades below the top
    cheap = front[front["compute"] <= runs["compute"].max() / 1000]
    assert len(cheap) >= 4
    assert ladder.curves is None
