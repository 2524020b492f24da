"""MLflow tracking: the one place that opens an MLflow client or logger.

Experiments keep their artifacts in the workspace; training runs log through
:func:`run_logger` (Lightning's ``MLFlowLogger``) and keep their weights at
``CHECKPOINT_ARTIFACT`` (:func:`log_checkpoint`), which ``runs:/<run_id>`` finds
(:func:`artifact_file`). MLflow is imported inside functions:
importing it costs about a second, and prediction queries must not pay for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalelab.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient


_STORES_READY: set[str] = set()  # SQLite stores checked (or created) by this process


def client(workspace: Workspace) -> MlflowClient:
    from mlflow import MlflowClient

    ensure_store(workspace)
    return MlflowClient(tracking_uri=workspace.tracking_uri)


def ensure_store(workspace: Workspace) -> None:
    """Make sure a workspace's SQLite store is whole before MLflow opens it.

    MLflow creates its schema in place, in dozens of migrations: a full disk or a crash in the
    middle leaves a file every later run fails on (``table ... already exists``). So a new
    store is built under a temporary name and linked into place only when complete, and an
    incomplete store that holds no run (it never worked) is set aside and rebuilt.
    """
    uri = workspace.tracking_uri
    if uri in _STORES_READY or not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.name in ("", ":memory:"):
        return
    if path.exists() and _incomplete_store(path):
        aside = path.with_name(f"{path.name}.incomplete-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):  # another process set it aside first
            os.rename(path, aside)
    if not path.exists():
        _create_store(path, workspace)
    _STORES_READY.add(uri)


def _incomplete_store(path: Path) -> bool:
    """True for a store whose schema creation stopped part-way and that holds no run."""
    import sqlite3

    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
            if "runs" in tables and db.execute("select count(*) from runs").fetchone()[0]:
                return False  # holds work: MLflow's own upgrade path decides, not us
            version = (
                db.execute("select version_num from alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
    except sqlite3.DatabaseError:
        return path.stat().st_size == 0 or not _has_sqlite_header(path)
    stray = any(t.startswith("_alembic_tmp_") for t in tables)
    return stray or version is None or version[0] != _get_latest_schema_revision()


def _has_sqlite_header(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _create_store(path: Path, workspace: Workspace) -> None:
    """Build the schema under a temporary name, then link it into place (never clobbering a
    store another process finished first)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", workspace.artifacts_dir.as_uri())
        store.engine.dispose()
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except Exception as err:  # a full disk surfaces as OSError or sqlite's OperationalError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot create the MLflow store {path}: {first}") from err
    finally:
        tmp.unlink(missing_ok=True)


# MLflow's UI opens an experiment as GenAI development (traces, evaluations) unless its
# ``mlflow.experimentKind`` tag says it holds model training, as every scalelab experiment does.
MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch call
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def ensure_experiment(name: str, workspace: Workspace) -> str:
    """Return the id of experiment ``name``, creating it with artifacts in the workspace and
    marked as a model-training experiment (``EXPERIMENT_KIND_TAG``).

    Without an explicit artifact location MLflow stores artifacts relative to the current
    directory, which scatters them; the workspace keeps them next to the store. An existing
    experiment without a kind gets one; a kind someone chose is left alone.
    """
    mlflow_client = client(workspace)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            mlflow_client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
            )
        return experiment.experiment_id
    workspace.ensure()
    location = None
    if workspace.tracking_uri.startswith("sqlite:"):
        location = (workspace.artifacts_dir / name).as_uri()
    try:
        return mlflow_client.create_experiment(
            name,
            artifact_location=location,
            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
        )
    except Exception:
        # Another worker created it between our lookup and create.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def create_run(
    mlflow_client: MlflowClient,
    experiment_id: str,
    *,
    name: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
) -> str:
    """A new run with ``tags`` and ``params`` (logged in one batch); returns its id."""
    from mlflow.entities import Param

    run_id = mlflow_client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    if params:
        mlflow_client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run_id


def log_series(mlflow_client: MlflowClient, run_id: str, series: dict[str, list[float]]) -> None:
    """Log each name's values as that metric at steps 0, 1, ... (in batches MLflow accepts)."""
    from mlflow.entities import Metric

    metrics = [
        Metric(k, v, 0, step) for k, values in series.items() for step, v in enumerate(values)
    ]
    for start in range(0, len(metrics), MAX_BATCH):
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])


def log_json_artifact(
    mlflow_client: MlflowClient, run_id: str, payload: dict[str, Any], name: str
) -> None:
    """Log ``payload`` as ``name`` (a JSON file) in the run's artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        mlflow_client.log_artifact(run_id, str(path))


def log_table_artifact(
    mlflow_client: MlflowClient, run_id: str, table: pd.DataFrame, name: str
) -> None:
    """Log ``table`` as ``name`` (a CSV file) in the run's artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        table.to_csv(path, index=False)
        mlflow_client.log_artifact(run_id, str(path))


def run_logger(
    experiment: str,
    workspace: Workspace,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> MLFlowLogger:
    """Lightning's MLflow logger for a training run of ``experiment`` (created in the
    workspace if new); ``run_id`` continues a run the caller created (a sweep's trial)."""
    from lightning.pytorch.loggers import MLFlowLogger

    ensure_experiment(experiment, workspace)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=workspace.tracking_uri,
        tags=tags,
        run_id=run_id,
    )


# ---- checkpoints and other run artifacts -------------------------------------------------------
CHECKPOINT_ARTIFACT = "checkpoint/model.pt"  # where every training run logs its weights


def log_checkpoint(
    mlflow_client: MlflowClient, run_id: str, save: Callable[[Path], None], workspace: Workspace
) -> str:
    """Log the file ``save(path)`` writes as the run's ``CHECKPOINT_ARTIFACT``; returns the
    reference ``runs:/<run_id>`` that ``artifact_file`` resolves."""
    directory, _, name = CHECKPOINT_ARTIFACT.rpartition("/")
    with tempfile.TemporaryDirectory(dir=workspace.root) as tmp:
        path = Path(tmp) / name
        save(path)
        mlflow_client.log_artifact(run_id, str(path), artifact_path=directory)
    return f"runs:/{run_id}"


def artifact_file(ref: str, workspace: Workspace, default: str = CHECKPOINT_ARTIFACT) -> Path:
    """The local file of ``runs:/<run_id>[/<artifact path>]`` (``default`` when no path is
    given): read in place from a local artifact store, downloaded from a remote one."""
    from urllib.parse import unquote, urlparse

    run_id, _, path = ref.removeprefix("runs:/").strip("/").partition("/")
    path = path or default
    mlflow_client = client(workspace)
    root = urlparse(mlflow_client.get_run(run_id).info.artifact_uri)
    if root.scheme in ("", "file"):  # a local store: read in place, no copy
        local = Path(unquote(root.path)) / path
        if not local.is_file():
            raise ValueError(f"run {run_id} has no artifact {path!r}")
        return local
    return Path(mlflow_client.download_artifacts(run_id, path))


def quiet_logs() -> None:
    """MLflow's loggers at WARNING, and no run links printed to stdout.

    MLflow configures its loggers when imported, so it is imported first. Over HTTP it prints
    (and fetches the run for) two links per closed run: one line per trial is enough.
    """
    import logging
    import os

    import mlflow  # noqa: F401

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
