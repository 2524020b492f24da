"""Sweep overhead: how much of a sweep's wall time is not training.

Runs ``scalelab sweep run SPEC`` as a user would (a fresh process, a fresh workspace sharing a
token cache, so tokenizing the corpus once is not counted) and splits its wall time into

- training: each trial's ``wall_time`` (Lightning fit plus its validations, as logged to MLflow);
- per-trial machinery: the rest of each trial, from claiming it in Optuna to telling Optuna the
  result (MLflow run creation and closing, parameters, config artifact, Trainer and model
  construction, heartbeats, Optuna writes);
- fixed costs: process start and imports, opening the storage, creating the studies and the
  parent run, the end-of-sweep fit.

    python benchmarks/bench_sweep.py [--spec sweeps/quickstart.yaml] [--sizes 3]
        [--workers 1] [--tracking-uri http://127.0.0.1:5000] [--cache DIR]

``--sizes K`` keeps the K smallest sizes of the spec (a shorter run); ``--cache`` reuses a
token cache (default: one under ``~/.cache/scalelab-bench``, built on the first run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "sweeps" / "quickstart.yaml")
    parser.add_argument("--sizes", type=int, default=None, help="keep the K smallest sizes")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tracking-uri", default=None, help="an MLflow server (default: SQLite)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "scalelab-bench")
    args = parser.parse_args()

    from scalelab.data import prepare
    from scalelab.sweep.spec import load_spec

    spec = load_spec(args.spec)
    raw = yaml.safe_load(args.spec.read_text())
    if args.sizes:
        by_n = sorted(
            zip(spec.resolved_sizes(), raw["sizes"], strict=True), key=lambda p: p[0].n_params
        )
        raw["sizes"] = [item for _, item in by_n[: args.sizes]]
    raw["name"] = f"bench-{int(time.time())}"
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepare(spec.corpus, spec.tokenizer, cache_dir=args.cache)  # once, not timed below
    print(f"token cache ready in {time.perf_counter() - started:.1f}s ({args.cache})")

    with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        (workspace / "cache").symlink_to(args.cache, target_is_directory=True)
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "SCALELAB_HOME": str(workspace)}
        if args.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
        else:
            env.pop("MLFLOW_TRACKING_URI", None)
        command = [
            sys.executable,
            "-m",
            "scalelab",
            "sweep",
            "run",
            str(spec_path),
            "--workers",
            str(args.workers),
        ]
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"sweep failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        report(raw["name"], workspace, env.get("MLFLOW_TRACKING_URI"), wall, args.workers)


def report(name: str, workspace: Path, tracking_uri: str | None, wall: float, workers: int):
    import optuna
    from mlflow import MlflowClient

    from scalelab.sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"journal:{workspace / 'optuna-journal.log'}")
    trial_seconds, runs = [], []
    for study in storage.get_all_studies():
        if study.study_name.startswith(f"{name}/"):
            for t in storage.get_all_trials(study._study_id):
                if t.state.is_finished() and t.datetime_start and t.datetime_complete:
                    trial_seconds.append((t.datetime_complete - t.datetime_start).total_seconds())
                    runs.append(t.user_attrs["mlflow_run_id"])
    client = MlflowClient(tracking_uri or f"sqlite:///{workspace / 'mlflow.db'}")
    train = [client.get_run(r).data.metrics["wall_time"] for r in runs]
    n = len(runs)
    in_trials, training = sum(trial_seconds), sum(train)
    # With K workers trials overlap: compare training with K × wall of worker time.
    capacity = wall * workers
    print(f"sweep {name}: {n} trials, {workers} worker(s)")
    print(f"  wall time                 {wall:8.1f} s")
    print(f"  training (sum)            {training:8.1f} s")
    print(
        f"  per-trial machinery (sum) {in_trials - training:8.1f} s "
        f"({(in_trials - training) / n:.2f} s per trial)"
    )
    print(f"  fixed (start, setup, fit) {capacity - in_trials:8.1f} s")
    print(
        f"  overhead                  {100 * (capacity - training) / capacity:7.1f} % of "
        f"worker time ({100 * (in_trials - training) / capacity:.1f} % per-trial, "
        f"{100 * (capacity - in_trials) / capacity:.1f} % fixed)"
    )


if __name__ == "__main__":
    main()
