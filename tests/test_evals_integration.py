"""``eval:`` in a spec reaches each trial's TrainConfig; a trained run logs its suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalelab.sweep.spec import SpecError, parse_spec
from scalelab.sweep.trial import pretrain_config
from scalelab.train import TrainConfig
from scalelab.workspace import Workspace

BASE = {
    "name": "t",
    "corpus": "stdlib-notests",
    "context": 64,
    "sizes": ["n10k"],
    "budgets": {"tokens": [1e5]},
}


def test_spec_eval_reaches_the_trial_config_and_trains_alone() -> None:
    from scalelab.training.grouped_run import ungroupable

    spec = parse_spec({**BASE, "eval": ["copy", "python"]})
    cfg = pretrain_config(spec, spec.cells()[0], 0, {"lr": 1e-3, "warmup": 0.1, "batch_size": 8})
    assert cfg.evals == ["copy", "python"]
    assert ungroupable(cfg) == "evaluation suites"
    # Adding suites changes what a sweep is; a sweep without them keeps its old identity.
    assert spec.spec_hash() != parse_spec(BASE).spec_hash()
    assert "eval" not in parse_spec(BASE).identity()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"eval": ["copy", "nope"]}, "eval: unknown suite 'nope'; valid suites: brackets, copy"),
        ({"eval": "copy"}, "eval"),
        ({"eval": ["copy"], "tokenizer": "bpe512"}, "eval: the suites' prompts are byte"),
        ({"train": {"evals": ["copy"]}}, "'evals' is set by the sweep itself"),
    ],
)
def test_bad_eval_is_refused_naming_the_field(extra: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **extra})


def test_train_config_names_bad_suites() -> None:
    with pytest.raises(ValueError, match="unknown suite 'x'; valid suites: brackets"):
        TrainConfig(preset="n10k", evals=["x"])


def test_predict_metric_bad_input_exits_2_with_one_line(scalelab_cli, tmp_path: Path) -> None:
    for args, needle in [
        (["--metric", "pass_rate.nope", "--compute", "1e15", "--experiment", "x"], "--metric"),
        (["--metric", "pass_rate.copy", "--experiment", "x"], "--compute"),
        (["--metric", "pass_rate.copy", "--compute", "1e15"], "--experiment"),
    ]:
        out = scalelab_cli(["predict", *args], tmp_path / "ws")
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr


def test_train_eval_flag_names_bad_suites(scalelab_cli, tmp_path: Path) -> None:
    out = scalelab_cli(["train", "--preset", "n10k", "--eval", "copy,nope"], tmp_path / "ws")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--eval" in lines[0] and "nope" in lines[0], out.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_trained_run_logs_pass_rates_and_per_problem_tables(workspace: Workspace) -> None:
    from scalelab.results import tracking
    from scalelab.train import train

    cfg = TrainConfig(
        preset="n10k",
        corpus="stdlib-notests",
        context=64,
        batch_size=8,
        tokens=64 * 8 * 4,
        val_tokens=64 * 8,
        experiment="tests",
        evals=["copy", "indent"],
    )
    result = train(cfg, workspace, enable_progress_bar=False)
    client = tracking.client(workspace)
    metrics = client.get_run(result.run_id).data.metrics
    assert {"pass_rate.copy", "pass_at_1.copy", "pass_rate.indent", "eval_time"} <= set(metrics)
    assert 0.0 <= metrics["pass_at_1.copy"] <= 1.0
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"eval-copy.csv", "eval-indent.csv"} <= names
    import pandas as pd

    table = pd.read_csv(
        tracking.artifact_file(f"runs:/{result.run_id}", workspace, "eval-copy.csv")
    )
    assert len(table) == 200 and {"problem", "passed", "pass_rate"} <= set(table.columns)
