"""Proof that evaluation problems are held out: none occurs in a training split.

Every ``WINDOW``-byte window of the training text is hashed (a polynomial rolling hash,
vectorised) and marks one of ``2^BUCKET_BITS`` buckets. A problem's text (body and answer)
can occur in the training text only if the bucket of each of its windows is marked, so a
problem with one unmarked window is held out: no false negatives. A problem whose windows are
all marked (by chance, with a problem of some thirty windows, about never) is searched for
directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scalelab.evals.suites import Problem

WINDOW = 8  # bytes; shorter than every problem's text
BUCKET_BITS = 26
_BASE = np.uint64(1099511628211)  # the FNV-1 prime; arithmetic wraps modulo 2^64
_SHIFT = np.uint64(64 - BUCKET_BITS)
_CHUNK = 1 << 22  # bytes hashed at a time, to bound memory


def window_hashes(data: np.ndarray) -> np.ndarray:
    """The hash of every ``WINDOW``-byte window of ``data`` (uint8), in order."""
    data = np.asarray(data, dtype=np.uint64)
    n = len(data) - WINDOW + 1
    if n < 1:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(WINDOW):
        h = h * _BASE + data[j : j + n]
    return h


def _marked_buckets(train: np.ndarray) -> np.ndarray:
    marked = np.zeros(1 << BUCKET_BITS, dtype=bool)
    for start in range(0, max(1, len(train) - WINDOW + 1), _CHUNK):
        chunk = train[start : start + _CHUNK + WINDOW - 1]  # windows that start in this chunk
        marked[window_hashes(chunk) >> _SHIFT] = True
    return marked


def leaked(problems: Sequence[Problem], train: np.ndarray) -> list[str]:
    """Ids of the ``problems`` whose body + answer occurs in ``train`` (the training split's
    bytes, uint8; documents may be joined by a separator byte)."""
    marked = _marked_buckets(np.asarray(train, dtype=np.uint8))
    text = None
    out = []
    for p in problems:
        needle = (p.body + p.answer).encode("latin-1")
        if len(needle) < WINDOW:
            raise ValueError(f"problem {p.id} of {p.suite} is shorter than {WINDOW} bytes")
        own = window_hashes(np.frombuffer(needle, dtype=np.uint8)) >> _SHIFT
        if marked[own].all():  # every window may occur: look for the text itself
            text = np.asarray(train, dtype=np.uint8).tobytes() if text is None else text
            if needle in text:
                out.append(p.id)
    return out
