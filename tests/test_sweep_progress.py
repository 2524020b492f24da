"""A sweep's ETA: the work left, at the pace this run has kept."""

from __future__ import annotations

from types import SimpleNamespace

from scalelab.sweep.coordinator import SweepClock, work_done


def _progress(*cells: tuple[float, int, int]) -> SimpleNamespace:
    """Cells as (compute, slots done, slots in all)."""
    return SimpleNamespace(
        cells=[
            SimpleNamespace(
                cell=SimpleNamespace(compute=compute),
                slots={i: "done" if i < done else "pending" for i in range(slots)},
            )
            for compute, done, slots in cells
        ]
    )


def test_work_is_weighted_by_compute_or_counted_when_a_cell_has_none() -> None:
    assert work_done(_progress((1e12, 2, 2), (4e12, 1, 2))) == (6e12, 10e12)
    assert work_done(_progress((0.0, 2, 2), (4e12, 1, 2))) == (3.0, 4.0)


def test_eta_extrapolates_this_runs_pace_to_the_work_left() -> None:
    now = [100.0]
    clock = SweepClock(_progress((1e12, 1, 2), (3e12, 0, 2)), clock=lambda: now[0])
    assert clock.eta(_progress((1e12, 1, 2), (3e12, 0, 2))) == ""  # nothing done yet here
    now[0] += 60.0  # one more small slot in a minute: 3 x 2 large slots of 3x the work left
    assert clock.eta(_progress((1e12, 2, 2), (3e12, 0, 2))) == " | sweep ETA ~6m00s"
    assert clock.eta(_progress((1e12, 2, 2), (3e12, 2, 2))) == ""  # done
