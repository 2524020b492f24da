"""μP learning-rate transfer: the loss over a learning-rate grid at several widths, with and
without μP, on a real corpus.

Each (parametrisation, width, lr) trains a fixed-depth GPT from the same seed on the same
batches for a few dozen Adam steps (``adamw_with_schedule``: the groups and schedule every
run uses) and scores it on a fixed validation set. Width changes d_model only (depth, heads,
context and batch fixed), so d_head grows with width and μP's 1/d_head attention matters. A
plain loop rather than Lightning: the grid is many tiny runs, where a Trainer would cost more
than the training. :func:`tracked_grids` records every point as an MLflow run (its settings,
its training-loss curve and its validation loss) and reads the grids back from those runs, so
a report's curves are runs a reader can open; a point already recorded is not trained again.

Transfer is read off the grid: the best learning rate's index at each width, and the drift
from the base width to the widest, in grid steps.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from scalelab.data import RandomWindows, TokenData, val_windows
from scalelab.model import GPT, GPTConfig
from scalelab.training.optim import adamw_with_schedule
from scalelab.workspace import Workspace

EXPERIMENT = "mup-transfer"
PARAMETRISATIONS = ("standard", "mup")


@dataclass(frozen=True)
class GridSettings:
    """The fixed part of every run of the grid."""

    n_layer: int = 2
    n_head: int = 4
    context: int = 32
    batch_size: int = 8
    steps: int = 50
    warmup: float = 0.1
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    weight_decay: float = 0.0
    lr: float = 0.0  # set per run; ``adamw_with_schedule`` reads the fields above
    val_tokens: int = 16_384
    variant: str = "gpt2"
    seed: int = 0


def final_loss(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    width: int,
    lr: float,
    base_width: int | None,
    settings: GridSettings,
    curve: list[float] | None = None,
) -> float:
    """Validation loss (nats/token) after ``settings.steps`` steps; ``inf`` if training
    diverged. ``base_width`` None: the standard parametrisation. Each step's training loss is
    appended to ``curve`` when given."""
    torch.manual_seed(settings.seed)
    cfg = GPTConfig(
        variant=settings.variant,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        d_model=width,
        context=settings.context,
        vocab_size=vocab_size,
        mup_base_width=base_width,
    )
    model = GPT(cfg)
    optimizer, scheduler = adamw_with_schedule(model, replace(settings, lr=lr), settings.steps)
    stream = iter(RandomWindows(train, settings.context, settings.batch_size, settings.seed))
    for _ in range(settings.steps):
        x, y = next(stream)
        _, loss = model(x, y)
        if curve is not None:
            curve.append(loss.item())
        if not torch.isfinite(loss):
            return math.inf  # diverged
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as every run clips
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    windows = val_windows(val, settings.context, settings.val_tokens)
    with torch.no_grad():
        losses = [model(w[:, :-1], w[:, 1:])[1].item() for w in windows.split(64)]
    return float(np.mean(losses))


@dataclass(frozen=True)
class Transfer:
    """Losses ``[width][lr]`` of one parametrisation and where their minima sit."""

    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    losses: tuple[tuple[float, ...], ...]

    @property
    def best(self) -> tuple[int, ...]:
        """Index of the best learning rate at each width."""
        return tuple(int(np.argmin(row)) for row in self.losses)

    @property
    def drift(self) -> int:
        """Grid steps the best learning rate moved from the first width to the last."""
        return self.best[-1] - self.best[0]

    @property
    def reused(self) -> float:
        """The widest model's loss at the rate tuned at the first width (tune once, reuse)."""
        return self.losses[-1][self.best[0]]

    @property
    def reuse_gap(self) -> float:
        """How much worse reusing is than tuning at the widest width, relative."""
        return self.reused / min(self.losses[-1]) - 1


def lr_grid(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    widths: tuple[int, ...],
    lrs: tuple[float, ...],
    base_width: int | None,
    settings: GridSettings,
) -> Transfer:
    """The loss at every (width, lr); ``base_width`` None trains the standard parametrisation."""
    losses = tuple(
        tuple(final_loss(train, val, vocab_size, w, lr, base_width, settings) for lr in lrs)
        for w in widths
    )
    return Transfer(widths, lrs, losses)


def settings_hash(settings: GridSettings, corpus_hash: str) -> str:
    """What makes two grid points comparable: the fixed settings and the corpus."""
    payload = json.dumps({**asdict(settings), "corpus": corpus_hash}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tracked_grids(
    data: TokenData,
    widths: tuple[int, ...],
    lrs: tuple[float, ...],
    settings: GridSettings,
    workspace: Workspace,
    experiment: str = EXPERIMENT,
) -> tuple[dict[str, Transfer], dict[tuple[str, int, float], str]]:
    """Both parametrisations' grids (μP's base width is ``widths[0]``), every point an MLflow
    run in ``experiment``; returns the grids read back from the runs and each point's run id.
    Points with a finished run of the same settings and corpus are reused, not trained."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    experiment_id = tracking.ensure_experiment(experiment, workspace)
    key = settings_hash(settings, data.corpus_hash)
    done = recorded(client, experiment_id, key)
    for name in PARAMETRISATIONS:
        base = widths[0] if name == "mup" else None
        for width in widths:
            for lr in lrs:
                if (name, width, lr) in done:
                    continue
                curve: list[float] = []
                loss = final_loss(
                    data.train, data.val, data.vocab_size, width, lr, base, settings, curve
                )
                point = {"parametrization": name, "d_model": width, "lr": lr}
                _record(
                    client, experiment_id, key, data.corpus_hash, point, base, settings, curve, loss
                )
    runs = recorded(client, experiment_id, key)
    grids = {
        name: Transfer(
            widths, lrs, tuple(tuple(runs[(name, w, lr)][1] for lr in lrs) for w in widths)
        )
        for name in PARAMETRISATIONS
    }
    return grids, {point: run_id for point, (run_id, _) in runs.items()}


def recorded(
    client: Any, experiment_id: str, key: str
) -> dict[tuple[str, int, float], tuple[str, float]]:
    """(parametrisation, d_model, lr) -> (run id, validation loss; inf: diverged) of the
    finished grid runs with settings hash ``key``."""
    out = {}
    for run in client.search_runs(
        [experiment_id],
        f"tags.settings_hash = '{key}' and attributes.status = 'FINISHED'",
        max_results=10_000,
    ):
        params = run.data.params
        point = (params["parametrization"], int(params["d_model"]), float(params["lr"]))
        out[point] = (run.info.run_id, run.data.metrics.get("loss", math.inf))
    return out


def _record(
    client: Any,
    experiment_id: str,
    key: str,
    corpus_hash: str,
    point: dict[str, Any],
    base_width: int | None,
    settings: GridSettings,
    curve: list[float],
    loss: float,
) -> str:
    """One grid point as a finished MLflow run: its settings as params, ``train/loss`` per
    step, ``loss`` (absent, and the tag ``outcome: diverged``, when training diverged)."""
    from scalelab.results import tracking

    name = f"{point['parametrization']}-d{point['d_model']}-lr{point['lr']:.3g}"
    diverged = not math.isfinite(loss)
    run_id = tracking.create_run(
        client,
        experiment_id,
        name=name,
        tags={
            "kind": EXPERIMENT,
            "settings_hash": key,
            "corpus_hash": corpus_hash,
            "outcome": "diverged" if diverged else "completed",
        },
        params={**asdict(settings), **point, "mup_base_width": base_width},
    )
    # A diverged run's curve ends at its first non-finite loss, which MLflow is not given.
    series = {"train/loss": [v for v in curve if math.isfinite(v)]}
    if not diverged:
        series["loss"] = [loss]
    tracking.log_series(client, run_id, series)
    client.set_terminated(run_id, "FINISHED")
    return run_id
