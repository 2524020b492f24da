"""Unigram and bigram baselines: what a model that ignores context (or sees one token) scores.

Both are fitted on the training split and scored on the validation split in nats per token,
the GPT's loss unit, over the same targets the GPT predicts: every validation token that has
a predecessor (``val[1:]``).

- unigram, add-k (Laplace for k = 1): ``p(b) = (c(b) + k) / (N + k V)``.
- bigram, interpolated with the unigram by a Dirichlet prior (MacKay and Peto, 1995):
  ``p(b | a) = (c(a, b) + alpha p(b)) / (c(a) + alpha)``, where ``c(a)`` counts training pairs
  starting with ``a``. ``alpha`` is picked from a grid on a held-out tail of the training split,
  so the validation split never tunes it.

Counting is vectorised: pair codes ``a * V + b`` go through ``np.bincount`` (dense table) when
``V * V`` is small and through ``np.unique`` (sorted sparse table) otherwise, in chunks so a
corpus of hundreds of millions of tokens needs no more than a few hundred MB.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
HELDOUT_FRACTION = 0.1
_CHUNK = 1 << 24
_DENSE_MAX = 1 << 22  # V * V entries up to which a dense pair table is used (V <= 2048)


def _check(tokens: np.ndarray, vocab_size: int, name: str) -> None:
    if len(tokens) < 2:
        raise ValueError(f"{name} has {len(tokens)} tokens; n-gram losses need at least 2")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if int(tokens.max()) >= vocab_size:
        raise ValueError(f"{name} holds token {int(tokens.max())}, outside vocab_size {vocab_size}")


def unigram_probs(train: np.ndarray, vocab_size: int, k: float = 1.0) -> np.ndarray:
    """Add-k smoothed unigram distribution over ``vocab_size`` tokens fitted on ``train``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(train), _CHUNK):
        counts += np.bincount(train[start : start + _CHUNK], minlength=vocab_size)
    return (counts + k) / (counts.sum() + k * vocab_size)


class BigramCounts:
    """Pair counts ``c(a, b)`` and context counts ``c(a)`` of a token sequence."""

    def __init__(self, tokens: np.ndarray, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.dense = vocab_size * vocab_size <= _DENSE_MAX
        self.context = np.zeros(vocab_size, dtype=np.int64)
        pair_counts = np.zeros(vocab_size * vocab_size if self.dense else 0, dtype=np.int64)
        uniques, counts = [], []
        for start in range(0, len(tokens) - 1, _CHUNK):
            # Chunks overlap by one token so the pair across each boundary is counted once.
            chunk = np.asarray(tokens[start : start + _CHUNK + 1], dtype=np.int64)
            self.context += np.bincount(chunk[:-1], minlength=vocab_size)
            codes = chunk[:-1] * vocab_size + chunk[1:]
            if self.dense:
                pair_counts += np.bincount(codes, minlength=vocab_size * vocab_size)
            else:
                u, c = np.unique(codes, return_counts=True)
                uniques.append(u)
                counts.append(c)
        if self.dense:
            self._table = pair_counts
        elif uniques:
            merged, inverse = np.unique(np.concatenate(uniques), return_inverse=True)
            self._codes = merged
            self._table = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
        else:
            self._codes = self._table = np.zeros(0, dtype=np.int64)

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``a * V + b`` of the pairs that occur, and their counts."""
        if self.dense:
            codes = np.flatnonzero(self._table)
            return codes, self._table[codes]
        return self._codes, self._table

    def pairs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``c(prev[i], nxt[i])`` for every i."""
        codes = prev.astype(np.int64) * self.vocab_size + nxt.astype(np.int64)
        if self.dense:
            return self._table[codes]
        if len(self._codes) == 0:
            return np.zeros(len(codes), dtype=np.int64)
        idx = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
        return np.where(self._codes[idx] == codes, self._table[idx], 0)


def _bigram_nll(
    counts: BigramCounts, uni: np.ndarray, tokens: np.ndarray, alphas: tuple[float, ...]
) -> list[float]:
    """Mean negative log-likelihood of ``tokens[1:]`` for each alpha, in nats."""
    # Score each distinct pair once, weighted by how often it occurs: V * V terms at most
    # instead of one per token, which makes trying many alphas cheap.
    codes, n = BigramCounts(tokens, counts.vocab_size).nonzero()
    prev, nxt = np.divmod(codes, counts.vocab_size)
    c_ab = counts.pairs(prev, nxt).astype(np.float64)
    c_a = counts.context[prev].astype(np.float64)
    p_b = uni[nxt]
    weights = n.astype(np.float64)
    return [
        -float(weights @ (np.log(c_ab + alpha * p_b) - np.log(c_a + alpha))) / float(weights.sum())
        for alpha in alphas
    ]


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int, k: float = 1.0) -> float:
    """Validation loss (nats/token over ``val[1:]``) of the add-k unigram fitted on ``train``."""
    _check(train, vocab_size, "train")
    _check(val, vocab_size, "val")
    logp = np.log(unigram_probs(train, vocab_size, k))
    total = 0.0
    for start in range(1, len(val), _CHUNK):
        total -= float(logp[np.asarray(val[start : start + _CHUNK], dtype=np.int64)].sum())
    return total / (len(val) - 1)


def select_bigram_alpha(
    train: np.ndarray, vocab_size: int, k: float = 1.0, grid: tuple[float, ...] = ALPHA_GRID
) -> float:
    """The ``alpha`` in ``grid`` that scores best on the last 10 % of ``train`` (fit on the rest).

    Too short a split to hold anything out (under 20 tokens) gets ``alpha = 1``.
    """
    _check(train, vocab_size, "train")
    cut = int(len(train) * (1 - HELDOUT_FRACTION))
    if len(train) < 20:
        return 1.0
    fit, heldout = train[:cut], train[cut:]
    losses = _bigram_nll(
        BigramCounts(fit, vocab_size), unigram_probs(fit, vocab_size, k), heldout, grid
    )
    return grid[int(np.argmin(losses))]


def bigram_loss(
    train: np.ndarray,
    val: np.ndarray,
    vocab_size: int,
    alpha: float | None = None,
    k: float = 1.0,
) -> float:
    """Validation loss (nats/token over ``val[1:]``) of the smoothed bigram fitted on ``train``.

    ``alpha`` None selects it with ``select_bigram_alpha``.
    """
    _check(train, vocab_size, "train")
    _check(val, vocab_size, "val")
    if alpha is None:
        alpha = select_bigram_alpha(train, vocab_size, k)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    counts = BigramCounts(train, vocab_size)
    return _bigram_nll(counts, unigram_probs(train, vocab_size, k), val, (alpha,))[0]


def ngram_baselines(train: np.ndarray, val: np.ndarray, vocab_size: int) -> dict[str, float]:
    """``{"unigram", "bigram", "bigram_alpha"}``: the reference losses (nats/token) of a corpus."""
    alpha = select_bigram_alpha(train, vocab_size)
    out = {
        "unigram": unigram_loss(train, val, vocab_size),
        "bigram": bigram_loss(train, val, vocab_size, alpha=alpha),
        "bigram_alpha": alpha,
    }
    for key in ("unigram", "bigram"):
        if not math.isfinite(out[key]):
            raise ArithmeticError(f"{key} baseline is not finite: {out[key]}")
    return out
