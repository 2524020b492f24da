"""Fit records: store a fit once (``scalelab.forecast.answer.Fit``), read it for later queries.

``scalelab fit`` and a sweep's end-of-run fit both store it, in one schema, twice:

- as an MLflow run of the experiment, tagged ``kind=fit`` (parameters and intervals as metrics,
  artifacts ``fit.json``, ``law.json``, ``parameters.csv`` and the dashboard), so a user finds
  it in the MLflow UI and ``--fit RUN_ID`` reaches it from anywhere;
- as JSON in ``<workspace>/fits/``, so ``scalelab predict --experiment NAME`` reads one small
  file instead of importing MLflow (about a second on its own).

Only the MLflow functions import MLflow, inside their bodies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scalelab.lazy_imports import lazy_module
from scalelab.results.runs import RunTable
from scalelab.vocab import DEFAULT_LAW
from scalelab.workspace import Workspace

pd = lazy_module("pandas")

if TYPE_CHECKING:  # imported where used: ``scalelab predict`` reads a record, no more
    from scalelab.forecast.answer import Fit

FIT_TAG = "kind"
FIT_TAG_VALUE = "fit"
FIT_ARTIFACT = "fit.json"


def fit_table(
    table: RunTable,
    *,
    experiment: str,
    law: str = DEFAULT_LAW,
    exclude_before: float | None = None,
    n_resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
    n_jobs: int = 2,
) -> Fit:
    """The engine's fit (``scalelab.forecast.answer.fit_runs``) of a table of stored runs,
    filed under its source and the fingerprint of the data it read."""
    from scalelab.forecast.answer import fit_runs

    return fit_runs(
        table.runs,
        law=law,
        curves=table.curves,
        exclude_before=exclude_before,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        n_jobs=n_jobs,
        experiment=experiment,
        source=table.source,
        fingerprint=table.fingerprint(exclude_before),
    )


# ---- the workspace cache -------------------------------------------------------------------
def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "_"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, default=json_default)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a fit record is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(x: Any) -> Any:
    """``json.dumps``'s ``default`` for numpy scalars and arrays."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class FitStore:
    """Fit records as JSON in ``<workspace>/fits/``.

    ``<experiment>.json`` is the latest fit of an experiment, ``<experiment>.<law>.json`` the
    latest with that law, and ``data/<sha>.<law>.json`` a fit keyed by the data it saw (so a
    CSV or a dashboard is fitted once).
    """

    def __init__(self, workspace: Workspace) -> None:
        self.root = workspace.root / "fits"

    def path(self, experiment: str, law: str | None = None) -> Path:
        stem = slug(experiment)
        return self.root / (f"{stem}.{law}.json" if law else f"{stem}.json")

    def data_path(self, fingerprint: str, law: str, exclude_before: float | None) -> Path:
        tail = "" if exclude_before is None else f".from{exclude_before:g}"
        return self.root / "data" / f"{fingerprint[:24]}.{law}{tail}.json"

    def save(self, fit: Fit) -> Path:
        """Write ``fit`` as the latest of its experiment (and law) and under its data."""
        payload = fit.to_dict()
        latest = self.path(fit.experiment)
        for path in (
            latest,
            self.path(fit.experiment, fit.key),
            self.data_path(fit.data["fingerprint"], fit.key, fit.exclude_before),
        ):
            write_json_atomic(path, payload)
        return latest

    def save_for_data(self, fit: Fit) -> Path:
        """Write ``fit`` under its data only (a fit made for a dashboard, not logged)."""
        path = self.data_path(fit.data["fingerprint"], fit.key, fit.exclude_before)
        write_json_atomic(path, fit.to_dict())
        return path

    @staticmethod
    def read(path: Path) -> Fit:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read fit record {path}: {err}") from err
        from scalelab.forecast.answer import Fit

        return Fit.from_dict(payload).recalibrated()

    def latest(self, experiment: str, law: str | None = None) -> Fit | None:
        path = self.path(experiment, law)
        return self.read(path) if path.is_file() else None

    def newest(self, law: str | None = None) -> Fit | None:
        """The most recently written fit of any experiment (with ``law``, if given)."""
        paths = [
            p for p in self.root.glob("*.json") if law is None or p.name.endswith(f".{law}.json")
        ]
        if not paths:
            return None
        return self.read(max(paths, key=lambda p: (p.stat().st_mtime_ns, p.name)))

    def for_data(self, fingerprint: str, law: str, exclude_before: float | None) -> Fit | None:
        path = self.data_path(fingerprint, law, exclude_before)
        if not path.is_file():
            return None
        fit = self.read(path)
        if fit.choice is not None:
            from scalelab.forecast.chooser import stored_rule

            if fit.choice.rule != stored_rule().describe():
                return None  # auto's rule was refitted since: choose (and fit) again
        return fit

    def json_cache(self, kind: str, key: dict[str, Any]) -> Path:
        """Path of a cached result of ``kind`` (e.g. a backtest) keyed by ``key``."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return self.root / "data" / f"{kind}-{digest[:24]}.json"


# ---- MLflow ----------------------------------------------------------------------------------
def log_fit_run(
    fit: Fit, workspace: Workspace, artifacts: list[Path] | tuple[Path, ...] = ()
) -> Fit:
    """Log ``fit`` as a ``kind=fit`` run of its experiment; returns it with its ``run_id``.

    Parameters and their interval bounds become metrics (``law/E``, ``law/E_lo``, ...) so the
    MLflow UI can compare fits; the law goes to ``law.json`` and the whole record to
    ``fit.json``, which is what ``--fit RUN_ID`` reads back. No metric is named ``loss``, so
    loaders of training runs skip the fit run.
    """
    from mlflow.entities import Metric, Param

    from scalelab.results import tracking

    experiment_id = tracking.ensure_experiment(fit.experiment, workspace)
    client = tracking.client(workspace)
    tags = {FIT_TAG: FIT_TAG_VALUE, "law": fit.law_key, "mlflow.note.content": str(fit.law)}
    run = client.create_run(experiment_id, run_name=f"fit-{fit.law_key}", tags=tags)
    run_id = run.info.run_id
    try:
        fit = replace(fit, run_id=run_id)
        now = int(datetime.now(UTC).timestamp() * 1000)
        metrics = []
        for name, row in fit.param_table().iterrows():
            for suffix, value in (("", row.estimate), ("_lo", row.lo), ("_hi", row.hi)):
                metrics.append(Metric(f"law/{name}{suffix}", float(value), now, 0))
        for key, value in fit.boot.fit.residuals.items():
            metrics.append(Metric(f"fit/{key}", float(value), now, 0))
        if fit.allocation is not None:
            s = fit.allocation.summary()
            for name in ("a", "b"):
                for col, suffix in (("estimate", ""), ("lo", "_lo"), ("hi", "_hi")):
                    metrics.append(
                        Metric(f"allocation/{name}{suffix}", float(s.loc[name, col]), now, 0)
                    )
        params = {
            "law": fit.law_key,
            "formula": fit.law.formula().replace("{", "").replace("}", ""),
            "source": str(fit.data["source"])[:500],
            "fingerprint": fit.data["fingerprint"],
            "exclude_before": fit.exclude_before,
            "n_runs": fit.data["n_runs"],
            "n_points": fit.data["n_points"],
            "max_compute": f"{fit.data['max_compute']:.6g}",
            "resamples": fit.boot.n_resamples,
            "level": fit.boot.level,
            "seed": fit.boot.seed,
        }
        client.log_batch(
            run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]
        )
        tracking.log_json_artifact(client, run_id, fit.to_dict(), FIT_ARTIFACT)
        tracking.log_json_artifact(client, run_id, fit.law.to_dict(), "law.json")
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / "parameters.csv"
            fit.param_table().to_csv(table)
            client.log_artifact(run_id, str(table))
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return fit


def log_fit_summary(run_id: str, fit: Fit, workspace: Workspace) -> None:
    """Put ``fit``'s record (``fit.json``) and parameters (``fit/<name>`` metrics) on another
    run, e.g. the parent run of the sweep it was fitted to."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    tracking.log_json_artifact(client, run_id, fit.to_dict(), FIT_ARTIFACT)
    for key, value in fit.law.params.items():
        client.log_metric(run_id, f"fit/{key}", float(value))
    client.log_metric(run_id, "fit/rmse", float(fit.boot.fit.residuals["rmse"]))


def log_fit_artifacts(run_id: str, workspace: Workspace, paths: list[Path]) -> None:
    """Add files (a dashboard, figures) to an existing fit run."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    for path in paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run_id, str(path))


def load_fit_run(run_id: str, workspace: Workspace) -> Fit:
    """The fit record logged on MLflow run ``run_id`` (its ``fit.json`` artifact)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from scalelab.results import tracking

    client = tracking.client(workspace)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"no MLflow run {run_id!r} at {workspace.tracking_uri}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, FIT_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise ValueError(
                f"run {run_id} is not a fit run (no {FIT_ARTIFACT}); make one with scalelab fit"
            ) from None
        payload = json.loads(Path(path).read_text())
    if "schema" not in payload and "law" in payload:
        # A sweep's parent run from before sweeps stored full fit records.
        experiment = client.get_experiment(run.info.experiment_id).name
        raise ValueError(
            f"run {run_id} holds a sweep's fit in an older format without intervals; "
            f"refit it with: scalelab fit --experiment {experiment}"
        )
    from scalelab.forecast.answer import Fit

    return Fit.from_dict(payload).recalibrated()


def find_fit_run(experiment: str, workspace: Workspace, law: str | None = None) -> str | None:
    """The run id of the latest fit run of ``experiment`` (with ``law``), if any."""
    from scalelab.results import tracking

    client = tracking.client(workspace)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"tags.{FIT_TAG} = '{FIT_TAG_VALUE}'"
    if law:
        query += f" and tags.law = '{law}'"
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
