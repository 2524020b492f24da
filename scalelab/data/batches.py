"""Training batches (random or epoch-ordered windows, seeded) and fixed validation windows."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info


class _BatchStream(IterableDataset):
    """Batches ``start``, ``start + 1``, ... of ``self.batch(i)``; DataLoader worker ``w`` of
    ``W`` makes batches ``w, w + W, ...``, which the DataLoader interleaves back in order."""

    start: int

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self):
        info = get_worker_info()
        step, index = (1, self.start) if info is None else (info.num_workers, self.start + info.id)
        while True:
            yield self.batch(index)
            index += step


class RandomWindows(_BatchStream):
    """An endless stream of ``(x, y)`` int64 batches of shape ``(batch_size, context)``.

    Each row is a window of ``context + 1`` consecutive tokens starting at a uniformly drawn
    position; ``x`` is its first ``context`` tokens and ``y`` the same shifted by one. Batch
    ``i`` depends only on ``(seed, i)``, so the stream is reproducible, can resume at any batch
    (``start``), and is the same whatever the number of DataLoader workers (worker ``w`` of
    ``W`` makes batches ``w, w + W, ...``, which the DataLoader interleaves back in order).
    Batches come whole: wrap it in ``DataLoader(stream, batch_size=None)``. Separate streams
    (e.g. one per DDP rank) need separate seeds.
    """

    def __init__(
        self, tokens: np.ndarray, context: int, batch_size: int, seed: int, start: int = 0
    ) -> None:
        super().__init__()
        if context < 1 or batch_size < 1:
            raise ValueError(
                f"context and batch_size must be positive, got {context}, {batch_size}"
            )
        if len(tokens) < context + 1:
            raise ValueError(f"{len(tokens)} tokens are too few for windows of {context + 1}")
        if seed < 0 or start < 0:
            raise ValueError(f"seed and start must be non-negative, got {seed}, {start}")
        self.tokens = tokens
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self._offsets = np.arange(context + 1)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` of the stream."""
        rng = np.random.default_rng([self.seed, index])
        starts = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


class EpochWindows(_BatchStream):
    """Like ``RandomWindows``, but no token is seen twice before every token is seen once.

    The training split is cut into non-overlapping windows of ``context + 1`` tokens, shuffled
    once per epoch by ``(seed, epoch)``; batch ``i`` takes the next ``batch_size`` windows.
    Random windows drawn with replacement revisit text long before an epoch ends (a quarter
    of the windows of a 0.3-epoch run overlap earlier ones), which a scaling study that
    claims "no repeated data" must not do. ``rank`` of ``world`` takes every world-th batch
    of one shared order, so data-parallel ranks never see the same window either.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        context: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        super().__init__()
        self.n_windows = len(tokens) // (context + 1)
        if context < 1 or batch_size < 1 or self.n_windows < 1:
            raise ValueError(
                f"need context, batch_size >= 1 and at least one window of {context + 1} "
                f"tokens; got context {context}, batch_size {batch_size}, {len(tokens)} tokens"
            )
        if seed < 0 or start < 0 or not 0 <= rank < world:
            raise ValueError(f"bad seed/start/rank: {seed}, {start}, {rank} of {world}")
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self._orders: dict[int, np.ndarray] = {}
        self._offsets = np.arange(context + 1)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {
                epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            }
        return self._orders[epoch]

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = (index * self.world + self.rank) * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        epochs, slots = np.divmod(positions, self.n_windows)
        starts = np.concatenate(
            [self._order(int(e))[slots[epochs == e]] for e in np.unique(epochs)]
        ) * (self.context + 1)
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


def val_windows(tokens: np.ndarray, context: int, max_tokens: int) -> torch.Tensor:
    """Fixed ``(n, context + 1)`` int64 windows evenly spread over ``tokens``, not overlapping.

    ``n = min(max_tokens // context, len(tokens) // (context + 1))``, so at most ``max_tokens``
    targets are scored. Window ``i`` starts at ``i * (len(tokens) - context - 1) // (n - 1)``:
    the first starts at the beginning, the last ends at the end, and consecutive starts are at
    least ``context + 1`` apart. Same inputs, same windows.
    """
    if context < 1:
        raise ValueError(f"context must be positive, got {context}")
    n = min(max_tokens // context, len(tokens) // (context + 1))
    if n < 1:
        raise ValueError(
            f"no validation window fits: {len(tokens)} tokens, context {context}, "
            f"max_tokens {max_tokens} (need max_tokens >= context and len > context)"
        )
    span = len(tokens) - (context + 1)
    starts = np.arange(n, dtype=np.int64) * span // max(n - 1, 1)
    return torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))
