"""Library noise a user does not need, kept off the terminal unless they ask for it.

Lightning announces the hardware it found ("GPU available: False, used: False"), advertises
a cloud logger and says that ``max_steps`` was reached; MLflow reports creating its tables;
Lightning trips over a deprecation inside PyTorch. None of it is about the user's run.
:func:`quiet_libraries` silences exactly these, by logger or by warning category and message,
and nothing else: a library's real warnings still show. ``SCALELAB_VERBOSE=1`` (the CLI's
``--verbose``, inherited by worker processes) keeps everything.

Nothing here imports the libraries: the loggers named are children the libraries never
configure themselves, so their levels hold whether the library is imported before or after.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["VERBOSE_ENV", "quiet_libraries", "verbose"]

VERBOSE_ENV = "SCALELAB_VERBOSE"

# Loggers whose INFO records are banners, not results.
BANNER_LOGGERS = (
    # GPU/TPU available, the litlogger tip, "`Trainer.fit` stopped: `max_steps=N` reached"
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",  # LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]
    "mlflow.store.db.utils",  # creating or upgrading the store's tables
    "alembic.runtime.migration",  # the same, one line per migration
)

# (category, message, module): warnings one library raises about another's internals.
LIBRARY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        r"lightning\.pytorch\.utilities\._pytree",
    ),
)


def verbose() -> bool:
    """True when the user asked to see every library message (``SCALELAB_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def quiet_libraries() -> None:
    """Silence the banners and warnings listed above, unless :func:`verbose`."""
    if verbose():
        return
    for name in BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category, message, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
