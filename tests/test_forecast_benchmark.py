"""The forecasting benchmark's records: cached under the ladder's data and the engine's code,
so a cached forecast never comes from other data or other code; shared-run targets marked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.forecast.benchmark import records as rec
from scalelab.forecast.benchmark.ladders import Ladder


def small_ladder(scale: float = 1.0, name: str = "toy-tuned-const") -> Ladder:
    """Six budgets of three sizes on a Chinchilla law."""
    rows = []
    for b, c in enumerate(np.geomspace(1e15, 1e18, 6)):
        for n in np.geomspace(1e6, 1e7, 3) * (c / 1e15) ** 0.5:
            d = c / (6 * n)
            loss = scale * (1.8 + 400 * n**-0.34 + 600 * d**-0.3)
            rows.append({"run_id": f"{b}-{n:.3g}", "n_params": n, "tokens": d, "loss": loss})
    runs = pd.DataFrame(rows).assign(budget=np.repeat(np.arange(6), 3))
    runs = runs.assign(compute=6 * runs["n_params"] * runs["tokens"])
    return Ladder(name, "toy", runs, source="toy")


def test_the_cache_key_hashes_the_data_the_code_and_the_resamples() -> None:
    ladder = small_ladder()
    key = rec.cache_key(ladder, 40, "engine-a")
    assert key == rec.cache_key(small_ladder(), 40, "engine-a")
    assert key != rec.cache_key(small_ladder(scale=1.001), 40, "engine-a")
    assert key != rec.cache_key(ladder, 40, "engine-b")
    assert key != rec.cache_key(ladder, 20, "engine-a")
    assert len(rec.engine_hash()) == 64 and rec.engine_hash() == rec.engine_hash()


def test_records_are_cached_per_data_and_engine(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(rec, "BENCHMARK_FORMS", ("compute", "compute_no_e"))
    monkeypatch.setattr(rec, "RATIOS", (10.0,))
    ladder = small_ladder()
    first = rec.ladder_records(ladder, tmp_path, 4, echo=lambda _: None, engine="e1")
    assert len(first) and set(first["source"]) == {"toy"}
    files = list(tmp_path.glob("toy-tuned-const-*.json"))
    assert len(files) == 1
    # A second run reads the cache: the same records, no new file.
    again = rec.ladder_records(ladder, tmp_path, 4, echo=lambda _: None, engine="e1")
    pd.testing.assert_frame_equal(first, again)
    assert len(list(tmp_path.glob("*.json"))) == 1
    # Other code (or other data) never reads that cache.
    rec.ladder_records(ladder, tmp_path, 4, echo=lambda _: None, engine="e2")
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_target_read_off_a_run_a_fitted_point_comes_from_is_marked(monkeypatch) -> None:
    ladder = small_ladder()
    task = rec.Task(ladder, 10.0, ladder.runs.iloc[-1], ladder.runs.iloc[:6])
    assert not rec.shares_a_run(ladder, task)
    same_size = ladder.runs.iloc[:6].assign(n_params=ladder.runs.iloc[-1]["n_params"])
    assert rec.shares_a_run(ladder, rec.Task(ladder, 10.0, ladder.runs.iloc[-1], same_size))
    cosine = small_ladder(name="toy-base-cosine")
    assert not rec.shares_a_run(cosine, rec.Task(cosine, 10.0, cosine.runs.iloc[-1], same_size))
