"""Training: schedules, determinism, MLflow records, divergence handling (real tiny runs)."""

from __future__ import annotations

import math
import subprocess
import sys

import mlflow
import pytest

from scalelab.train import TrainConfig, TrainingDiverged, lr_factor, train
from scalelab.workspace import Workspace

TINY = dict(
    preset="n10k",
    corpus="stdlib-notests",
    context=64,
    batch_size=8,
    tokens=64 * 8 * 30,
    val_tokens=64 * 32,
    experiment="tests",
)


def test_cosine_schedule_warms_up_then_decays_to_floor() -> None:
    cfg = TrainConfig(preset="n10k", warmup=0.1, min_lr_ratio=0.1)
    factors = [lr_factor(step, 100, cfg) for step in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_wsd_schedule_is_constant_then_decays_linearly() -> None:
    cfg = TrainConfig(preset="n10k", warmup=0.0, schedule="wsd", decay_fraction=0.2)
    factors = [lr_factor(step, 100, cfg) for step in range(100)]
    assert factors[:80] == [1.0] * 80
    assert factors[-1] == pytest.approx(0.1)
    assert factors[80] > factors[90] > factors[99]


def test_config_requires_exactly_one_size() -> None:
    with pytest.raises(ValueError, match="exactly one of preset"):
        TrainConfig()
    with pytest.raises(ValueError, match="exactly one of preset"):
        TrainConfig(preset="n10k", n_params_target=1e5)
    with pytest.raises(ValueError, match="tokens"):
        TrainConfig(preset="n10k", tokens=0)


def test_training_is_deterministic_and_logged(workspace: Workspace) -> None:
    first = train(TrainConfig(**TINY), workspace, enable_progress_bar=False)
    second = train(TrainConfig(**TINY), workspace, enable_progress_bar=False)
    assert first.loss == second.loss
    assert first.run_id != second.run_id
    assert first.tokens == 64 * 8 * 30
    assert first.compute == 6 * first.n_params * first.tokens
    # Thirty steps on real text move a fresh model well below the uniform loss ln(256).
    assert first.loss < math.log(256) - 0.5

    mlflow.set_tracking_uri(workspace.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["tests"])
    assert len(runs) == 2
    run = runs[runs.run_id == first.run_id].iloc[0]
    assert run.status == "FINISHED"
    assert run["metrics.loss"] == pytest.approx(first.loss)
    assert int(run["params.tokens"]) == first.tokens
    assert int(run["params.n_params"]) == first.n_params
    assert run["params.tokenizer"] == "byte"
    history = mlflow.MlflowClient().get_metric_history(first.run_id, "val/loss")
    assert len(history) >= 2  # periodic validation plus the end
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(first.run_id)]
    assert "config.json" in artifacts
    # Artifacts stay inside the workspace.
    assert (workspace.artifacts_dir / "tests").is_dir()


def test_divergence_fails_the_run_with_a_reason(workspace: Workspace) -> None:
    cfg = TrainConfig(**{**TINY, "lr": 1e2, "grad_clip": 0.0, "warmup": 0.0})
    with pytest.raises(TrainingDiverged, match="training loss became"):
        train(cfg, workspace, enable_progress_bar=False)
    mlflow.set_tracking_uri(workspace.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["tests"])
    assert list(runs.status) == ["FAILED"]
    assert "training loss became" in runs.iloc[0]["tags.failure_reason"]


def test_trains_on_pretokenized_bin_files(workspace: Workspace, tmp_path) -> None:
    """nanoGPT-style train.bin/val.bin: trains, logs the loss, and has no bits/byte to report."""
    import numpy as np

    folder = tmp_path / "bins"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 500, size=97, dtype=np.uint16)  # a learnable periodic sequence
    np.tile(pattern, 400).tofile(folder / "train.bin")
    np.tile(pattern, 40).tofile(folder / "val.bin")
    cfg = TrainConfig(**{**TINY, "corpus": str(folder), "tokenizer": "pretokenized"})
    result = train(cfg, workspace, enable_progress_bar=False)
    assert math.isfinite(result.loss) and math.isnan(result.bpb)
    assert result.loss < math.log(500) - 0.5


@pytest.mark.parametrize(
    "module", ["scalelab.training.config", "scalelab.train", "scalelab.rlhf.config"]
)
def test_config_modules_import_no_torch_or_lightning(module: str) -> None:
    """The CLI and sweep specs read the configs; importing them must stay cheap."""
    code = (
        f"import sys, {module}; "
        "heavy = sorted({'lightning', 'torch', 'mlflow'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pretraining_checkpoint_initialises_an_rlhf_stage(workspace: Workspace) -> None:
    import torch

    from scalelab.rlhf import checkpoint, run_stage

    pretrained = train(
        TrainConfig(**{**TINY, "tokens": 64 * 8 * 3, "save_checkpoint": True}),
        workspace,
        enable_progress_bar=False,
    )
    ckpt = checkpoint.load(f"runs:/{pretrained.run_id}", workspace)
    assert ckpt["stage"] == "pretrain"
    trunk = checkpoint.trunk(ckpt)
    assert trunk.config.n_params_nonembedding == pretrained.n_params

    cfg = dict(init=f"runs:/{pretrained.run_id}", steps=2, n_train=32, n_eval=8, n_sample=4)
    sft = run_stage("sft", {**cfg, "experiment": "tests-sft"}, workspace)
    assert sft.n_params == pretrained.n_params and math.isfinite(sft.loss)
    tuned = checkpoint.load(sft.checkpoint, workspace)
    assert tuned["stage"] == "sft" and tuned["config"] == ckpt["config"]

    # A checkpoint of an older version (config and weights only) still loads.
    old = workspace.root / "old.pt"
    torch.save({"config": ckpt["config"], "state_dict": ckpt["state_dict"]}, old)
    restored = checkpoint.trunk(checkpoint.load(str(old)))
    assert all(
        torch.equal(a, b)
        for a, b in zip(restored.state_dict().values(), trunk.state_dict().values(), strict=True)
    )
