"""The results layer: one run reader, the best trial per cell, one fit schema, and the rule
that no module outside ``scalelab/results/`` opens MLflow."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.results import fits, runs, tracking
from scalelab.workspace import Workspace

PACKAGE = Path(__file__).resolve().parents[1] / "scalelab"


def _log_trials(ws: Workspace) -> dict[str, list[str]]:
    """Two cells of a sweep, three trials each (one without a loss), plus a parent run; the
    first cell's budget is a logged param, the second's only its label (an older store)."""
    client = tracking.client(ws)
    exp = tracking.ensure_experiment("ladder", ws)
    parent = client.create_run(exp, tags={"sweep": "s1"})
    ids: dict[str, list[str]] = {}
    for cell, n in (("N1e4-C1e10", 1e4), ("N2e4-C1e10", 2e4)):
        for trial, loss in enumerate((3.1, 2.9, None)):
            run = client.create_run(
                exp,
                tags={
                    "mlflow.parentRunId": parent.info.run_id,
                    "sweep": "s1",
                    "cell": cell,
                    "trial": str(trial),
                    "trial_state": "COMPLETE" if loss else "PRUNED",
                    "corpus_baselines": "{'unigram': 3.25, 'bigram': 2.5}",
                },
            )
            rid = run.info.run_id
            params = {"n_params": n, "tokens": 1e10 / (6 * n), "batch_size": 4, "context": 64}
            if n == 1e4:
                params |= {"budget": 1e10, "budget_kind": "compute"}
            for key, value in params.items():
                client.log_param(rid, key, value)
            for step in (0, 4, 9, 14, 19):  # tokens_seen between validations, as training logs
                client.log_metric(rid, "tokens_seen", (step + 1) * 256.0, step=step)
            for step in (9, 19):  # validations at the step before global_step, and the last
                client.log_metric(rid, "val/loss", 4.0 - step / 10, step=step)
            if loss is not None:
                client.log_metric(rid, "loss", loss + n / 1e6)
            client.set_terminated(rid)
            ids.setdefault(cell, []).append(rid)
    return ids


def test_the_run_reader_reads_budgets_unigram_and_the_best_trial_of_each_cell(
    workspace: Workspace,
) -> None:
    ids = _log_trials(workspace)
    every = runs.mlflow_runs("ladder", workspace)
    assert len(every) == 4  # the parent and the pruned trials have no loss
    assert set(every["budget"]) == {1e10} and set(every["budget_kind"]) == {"compute"}
    assert (every["unigram"] == 3.25).all()
    np.testing.assert_allclose(every["compute"], 6 * every["n_params"] * every["tokens"])

    best = runs.read_mlflow_table("ladder", workspace, best_of_cell=True).runs
    assert sorted(best["run_id"]) == sorted([ids["N1e4-C1e10"][1], ids["N2e4-C1e10"][1]])
    with pytest.raises(ValueError, match="no run of sweeps"):
        runs.mlflow_runs("ladder", workspace, sweeps=["other"])
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        runs.mlflow_runs("nope", workspace)


def test_validation_curves_are_aligned_with_the_tokens_seen(workspace: Workspace) -> None:
    _log_trials(workspace)
    table = runs.read_mlflow_table("ladder", workspace, curves=True)
    curves = table.curves
    assert curves is not None and len(curves) == 2 * len(table.runs)
    # A validation logged at step s follows s + 1 optimizer steps of 256 tokens.
    np.testing.assert_allclose(curves["tokens_seen"], (curves["step"] + 1) * 256.0)
    np.testing.assert_allclose(curves["fraction"], curves["tokens_seen"] / curves["tokens"])


def test_a_fit_logged_on_a_sweeps_parent_run_reads_back_as_a_fit(
    workspace: Workspace, tmp_path: Path
) -> None:
    frame = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(12)],
            "n_params": np.repeat([1e6, 2e6, 4e6, 8e6], 3),
            "tokens": np.tile([1e8, 2e8, 4e8], 4),
        }
    )
    frame["compute"] = 6 * frame["n_params"] * frame["tokens"]
    frame["loss"] = 1.7 + 400 * frame["n_params"] ** -0.34 + 400 * frame["tokens"] ** -0.28
    stored = fits.fit_table(
        runs.RunTable("test", frame), experiment="ladder", law="chinchilla", n_resamples=4, n_jobs=1
    )
    client = tracking.client(workspace)
    parent = client.create_run(tracking.ensure_experiment("ladder", workspace)).info.run_id
    fits.log_fit_summary(parent, stored, workspace)
    again = fits.load_fit_run(parent, workspace)
    assert again.law.params == pytest.approx(stored.law.params)
    assert client.get_run(parent).data.metrics["fit/E"] == pytest.approx(stored.law.params["E"])

    # A parent run from before sweeps stored full records: one line says what to re-run.
    old = client.create_run(tracking.ensure_experiment("ladder", workspace)).info.run_id
    tracking.log_json_artifact(client, old, {"law": {"law": "chinchilla"}}, "fit.json")
    with pytest.raises(ValueError, match="older format.*scalelab fit --experiment ladder"):
        fits.load_fit_run(old, workspace)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _offenders(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    out = []
    for path in files:
        for line, module in _imports(ast.parse(path.read_text())):
            if any(module == b or module.startswith(b + ".") for b in banned):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return out


def test_only_the_results_layer_opens_mlflow() -> None:
    """Also inside functions: an MLflow client opened anywhere else is a second owner."""
    outside = [p for p in PACKAGE.rglob("*.py") if "results" not in p.relative_to(PACKAGE).parts]
    banned = ("mlflow", "lightning.pytorch.loggers.MLFlowLogger")
    assert _offenders(outside, banned) == []


def test_the_forecast_package_never_imports_mlflow_torch_or_lightning() -> None:
    files = list((PACKAGE / "forecast").rglob("*.py"))
    assert len(files) > 10  # the engine is where this test looks
    banned = ("mlflow", "torch", "lightning", "scalelab.results", "optuna")
    assert _offenders(files, banned) == []


def test_the_import_check_catches_an_import_inside_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from mlflow import MlflowClient\n    return MlflowClient\n")
    found = _imports(ast.parse(sample.read_text()))
    assert (2, "mlflow.MlflowClient") in found
    assert json.dumps(found)  # plain data, printable in a failure


def test_a_baselines_tag_is_parsed_never_evaluated() -> None:
    from scalelab.results.runs import _unigram

    assert _unigram({"corpus_baselines": json.dumps({"unigram": 3.2, "bigram": 2.9})}) == 3.2
    assert _unigram({"corpus_baselines": str({"unigram": 3.2, "bigram": 2.9})}) == 3.2  # old runs
    hostile = "__import__('os').system('touch /tmp/scalelab-evaluated')"
    assert math.isnan(_unigram({"corpus_baselines": hostile}))
    assert math.isnan(_unigram({}))
