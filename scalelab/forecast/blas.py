"""Run fits with single-threaded BLAS.

L-BFGS-B calls BLAS on vectors of a handful of parameters. Threads cannot speed that up, and
on a machine whose cores are busy OpenBLAS's spinning worker threads slowed our fits 10-100x
(measured: a Chinchilla fit took 0.5 s single-threaded and 5-15 s with 2 BLAS threads while
two other processes held the 2 cores). ``threadpoolctl`` is used when installed (it comes with
scikit-learn, an MLflow dependency); without it the decorator does nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None

F = TypeVar("F", bound=Callable[..., Any])


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """A context in which BLAS libraries use one thread."""
    if threadpool_limits is None:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def with_single_threaded_blas(func: F) -> F:
    """Decorator form of :func:`single_threaded_blas`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded_blas():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
