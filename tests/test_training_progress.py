"""Training progress: a live line on a terminal, bounded lines in a log."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from scalelab.training.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trainer(total: float) -> SimpleNamespace:
    return SimpleNamespace(
        estimated_stepping_batches=total, is_global_zero=True, callback_metrics={}
    )


def _run(progress: Progress, clock: Clock, steps: int, seconds_per_step: float) -> None:
    """Drive ``progress`` as Lightning would through ``steps`` batches of pre-training."""
    trainer = _trainer(steps)
    progress.on_train_start(trainer, None)
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        trainer.callback_metrics = {"train/loss": 4.0 - step / steps, "tokens_seen": 512.0 * step}
        progress.on_train_batch_end(trainer, None, None, None, step - 1)
    progress.on_train_end(trainer, None)


@pytest.mark.parametrize(("steps", "seconds_per_step"), [(10, 0.5), (5000, 0.9), (200, 30.0)])
def test_a_log_gets_a_line_per_interval_and_one_at_the_end(
    steps: int, seconds_per_step: float
) -> None:
    log, clock = io.StringIO(), Clock()
    _run(Progress(stream=log, every=60.0, clock=clock), clock, steps, seconds_per_step)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) <= steps * seconds_per_step / 60.0 + 1
    assert lines[-1].startswith(f"step {steps}/{steps} (100%) | ")
    assert f"{512 * steps / 1e3:.3g}k/" in lines[-1] or "M/" in lines[-1]
    assert "loss 3" in lines[-1] and lines[-1].endswith("done")


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    screen, clock = Terminal(), Clock()
    _run(Progress(stream=screen, clock=clock), clock, steps=100, seconds_per_step=1.0)
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("done\x1b[K\n")
    assert text.count("\r") == 101  # a redraw per batch (a second apart), then the last
    first = text.split("\r")[1]
    assert first.startswith("step 1/100 (1%) | 512/51.2k tokens | loss 3.99 | 1s, ETA 1m39s")


def test_a_sweep_trial_leaves_no_line_behind_on_a_terminal() -> None:
    screen, clock = Terminal(), Clock()
    progress = Progress("cell n10k trial 0", stream=screen, keep=False, clock=clock)
    _run(progress, clock, steps=3, seconds_per_step=1.0)
    assert screen.getvalue().endswith("done\x1b[K\r\x1b[K")  # erased: the cursor at column 0
    assert "\n" not in screen.getvalue()
    assert "cell n10k trial 0 step 3/3" in screen.getvalue()


def test_ppo_counts_iterations_without_tokens_or_loss() -> None:
    log, clock = io.StringIO(), Clock()
    progress = Progress(unit="ppo iteration", stream=log, clock=clock)
    trainer = _trainer(5)  # 5 iterations of 8 optimizer steps: Lightning's estimate says 5
    progress.on_train_start(trainer, None)
    for i in range(5):
        clock.now += 2.0
        progress.on_train_batch_end(trainer, None, None, None, i)
    progress.on_train_end(trainer, None)
    assert log.getvalue() == "ppo iteration 5/5 (100%) | 10s, done\n"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (7620, "2h07m")]
)
def test_durations_read_short(seconds: float, text: str) -> None:
    assert duration(seconds) == text
