"""The workspace: one folder holding every file scalelab writes.

Default ``./scalelab-runs``; ``SCALELAB_HOME`` moves it. Inside it live the MLflow SQLite
store and its artifacts, the Optuna storage, token caches and dashboards, so a user can find
(and delete) everything in one place. ``MLFLOW_TRACKING_URI`` overrides the tracking store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "SCALELAB_HOME"
DEFAULT_HOME = "scalelab-runs"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """The workspace at ``root``, else ``$SCALELAB_HOME``, else ``./scalelab-runs``."""
        chosen = root or os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def cache_dir(self) -> Path:
        """Tokenized corpora and trained tokenizers, keyed by content hash."""
        return self.root / "cache"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dashboards_dir(self) -> Path:
        return self.root / "dashboards"

    @property
    def tracking_uri(self) -> str:
        """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store in the workspace."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    def ensure(self) -> Workspace:
        for path in (self.root, self.cache_dir, self.artifacts_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self
