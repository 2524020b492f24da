"""Live progress of one training run: steps, tokens, the latest loss and an ETA.

On a terminal it is one line redrawn in place, as Lightning's or tqdm's bars; in a log file or
a pipe it is a line every ``every`` seconds, so a log of an hour-long run grows by a bounded
number of lines. Lightning's own bar is not used: it counts epochs of a run measured in steps
("Epoch 0/-2") and shows the logger's version (``v_num``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import lightning as L

__all__ = ["LINES_ENV", "Progress", "duration"]

# Set for processes that share a terminal with others (a sweep's worker processes): lines, as
# in a log, since several processes redrawing one line garble it.
LINES_ENV = "SCALELAB_PROGRESS_LINES"
LOSS_KEYS = ("train/loss", "train_loss")  # pre-training's and the RLHF stages' training loss
LIVE_REFRESH = 0.25  # seconds between redraws of a terminal line


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short, and exact enough for an estimate."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(x: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.0f}"


class Progress(L.Callback):
    """Report a run's progress to ``stream`` (default: standard error, so standard output
    keeps only results).

    ``label`` starts every line (e.g. a sweep's cell and trial). ``unit`` names what the run
    counts: its training batches, i.e. optimizer steps, or PPO's iterations. ``live``: redraw
    one line in place [default: when ``stream`` is a terminal and ``LINES_ENV`` is not set];
    otherwise a line every
    ``every`` seconds. ``keep``: leave a final line when the run ends (a sweep leaves none:
    its own line per trial follows).
    """

    def __init__(
        self,
        label: str = "",
        *,
        unit: str = "step",
        live: bool | None = None,
        every: float = 60.0,
        keep: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.unit, self.every, self.keep = label, unit, every, keep
        self._stream, self._live, self.clock = stream, live, clock
        self.total = 0
        self.done = 0
        self.started = self.shown = 0.0
        self._drawn = False  # a live line is on the screen, not yet ended

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def live(self) -> bool:
        if self._live is None:
            terminal = bool(getattr(self.stream, "isatty", lambda: False)())
            self._live = terminal and not os.environ.get(LINES_ENV)
        return self._live

    # --- Lightning hooks ----------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches  # PPO: its iterations, not optimizer steps
        self.total = int(total) if math.isfinite(total) else 0
        self.done = 0
        self.started = self.shown = self.clock()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.done += 1
        if trainer.is_global_zero:
            self.update(dict(trainer.callback_metrics))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.finish(dict(trainer.callback_metrics))

    def on_exception(self, trainer: L.Trainer, *args: Any) -> None:
        self._end_line()  # an error message must not continue the progress line

    # --- Drawing ------------------------------------------------------------------------------
    def update(self, metrics: dict[str, Any]) -> None:
        """Show progress after a batch, if it is time to."""
        now = self.clock()
        if now - self.shown < (LIVE_REFRESH if self.live else self.every):
            return
        self.shown = now
        self._show(self.line(metrics, now))

    def finish(self, metrics: dict[str, Any]) -> None:
        """The run ended: its final line (``keep``), or none."""
        if self.keep:
            self._show(self.line(metrics, self.clock()))
        elif self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self._end_line()

    def line(self, metrics: dict[str, Any], now: float) -> str:
        """``[label] step 120/390 (31%) | 61.4k/200k tokens | loss 4.045 | 12s, ETA 27s``."""
        parts = [
            f"{self.unit} {self.done}/{self.total}" if self.total else f"{self.unit} {self.done}"
        ]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        tokens = metrics.get("tokens_seen")
        if tokens is not None and self.done:
            seen = float(tokens)
            per_step = seen / self.done
            parts.append(f"{_count(seen)}/{_count(per_step * self.total)} tokens")
        loss = next((metrics[k] for k in LOSS_KEYS if k in metrics), None)
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        parts.append(self._timing(now))
        text = " | ".join(parts)
        return f"{self.label} {text}" if self.label else text

    def _timing(self, now: float) -> str:
        elapsed = now - self.started
        if not self.total or not self.done:
            return duration(elapsed)
        if self.done >= self.total:
            return f"{duration(elapsed)}, done"
        eta = elapsed / self.done * (self.total - self.done)
        return f"{duration(elapsed)}, ETA {duration(eta)}"

    def _show(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r{text}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
