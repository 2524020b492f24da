"""Every RLHF stage trained for real on tiny models: learning, MLflow records, parameters.

One SFT policy and one reward model are trained once for the module and reused by the PPO and
best-of-n tests. Each run gets a callback that snapshots the trainable parameters when fitting
starts and lists those that never changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch

from scalelab.model import GPT
from scalelab.rlhf import checkpoint, run_stage, stage_config
from scalelab.rlhf.bestofn import best_of_n, bon_frame, sample_pool
from scalelab.rlhf.config import SFTConfig
from scalelab.rlhf.sft import collate, sft_loss
from scalelab.rlhf.stages import EVAL_SEED, StageResult
from scalelab.rlhf.task import SyntheticTask
from scalelab.train import TrainingDiverged
from scalelab.workspace import Workspace

POLICY = dict(preset="n100k", experiment="rlhf-tests", seed=0)


class ParamsChanged(L.Callback):
    """Records the names of trainable parameters that did not change during fitting."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.unchanged: list[str] | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.before = {
            n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad
        }

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        after = dict(module.named_parameters())
        self.unchanged = [n for n, p in self.before.items() if torch.equal(p, after[n].detach())]


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> Iterator[Workspace]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield Workspace.resolve(tmp_path_factory.mktemp("rlhf") / "ws").ensure()


@pytest.fixture(scope="module")
def sft(ws: Workspace) -> tuple[StageResult, ParamsChanged]:
    watch = ParamsChanged()
    cfg = {**POLICY, "steps": 300, "lr": 2e-3, "n_train": 2048}
    return run_stage("sft", cfg, ws, callbacks=[watch]), watch


@pytest.fixture(scope="module")
def reward(
    ws: Workspace, sft: tuple[StageResult, ParamsChanged]
) -> tuple[StageResult, ParamsChanged]:
    watch = ParamsChanged()
    cfg = dict(
        init=sft[0].checkpoint,  # InstructGPT starts the reward model from the SFT model
        steps=400,
        lr=2e-3,
        label_noise=0.02,
        experiment="rlhf-tests",
    )
    return run_stage("reward", cfg, ws, callbacks=[watch]), watch


def _mlflow_run(ws: Workspace, run_id: str) -> mlflow.entities.Run:
    return mlflow.MlflowClient(tracking_uri=ws.tracking_uri).get_run(run_id)


def _assert_logged(ws: Workspace, result: StageResult, metrics: list[str]) -> None:
    run = _mlflow_run(ws, result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == result.stage
    for key in ["loss", "metric", "wall_time", *metrics]:
        assert key in run.data.metrics, key
        assert math.isfinite(run.data.metrics[key]), key
    assert int(run.data.params["n_params"]) == result.n_params
    assert run.data.metrics["loss"] == pytest.approx(result.loss)
    artifacts = {a.path for a in mlflow.MlflowClient(ws.tracking_uri).list_artifacts(result.run_id)}
    assert {"config.json", "checkpoint"} <= artifacts


def test_sft_lowers_the_response_loss(
    ws: Workspace, sft: tuple[StageResult, ParamsChanged]
) -> None:
    result, watch = sft
    assert watch.unchanged == []
    _assert_logged(ws, result, ["train_loss", "eval_loss", "eval_gold_reward"])
    history = mlflow.MlflowClient(ws.tracking_uri).get_metric_history(result.run_id, "eval_loss")
    assert len(history) >= 2

    # The untrained model (same seed, same shape) on the same held-out demonstrations.
    cfg = SFTConfig(**POLICY)
    L.seed_everything(cfg.seed, verbose=False)
    fresh = GPT(cfg.model_cfg())
    demos = SyntheticTask(cfg.task).demonstrations(cfg.n_eval, EVAL_SEED)
    with torch.no_grad():
        before = sft_loss(fresh, *collate(demos)).item()
    assert before > math.log(256) - 0.5
    assert result.metrics["eval_loss"] < before - 2.5
    # Sampled answers already follow the instructions most of the time.
    assert result.metrics["eval_gold_reward"] > 0.6


def test_reward_model_ranks_held_out_completions(
    ws: Workspace, reward: tuple[StageResult, ParamsChanged]
) -> None:
    result, watch = reward
    assert watch.unchanged == []
    _assert_logged(
        ws,
        result,
        [
            "train_loss",
            "train_accuracy",
            "train_margin",
            "eval_accuracy",
            "eval_margin",
            "eval_gold_accuracy",
            "reward_bias",
        ],
    )
    assert result.metric_name == "eval_accuracy"
    assert result.metrics["eval_accuracy"] > 0.90
    assert result.metrics["eval_gold_accuracy"] > 0.90
    assert result.metrics["eval_margin"] > 0
    model = checkpoint.reward_model(checkpoint.load(result.checkpoint, ws))
    assert model.bias.item() == pytest.approx(result.metrics["reward_bias"])


def test_ppo_raises_gold_reward_with_bounded_kl(
    ws: Workspace,
    sft: tuple[StageResult, ParamsChanged],
    reward: tuple[StageResult, ParamsChanged],
) -> None:
    watch = ParamsChanged()
    cfg = dict(
        init=sft[0].checkpoint,
        reward_init=reward[0].checkpoint,
        steps=24,
        eval_every=12,
        kl_coef=0.1,
        experiment="rlhf-tests",
    )
    result = run_stage("ppo", cfg, ws, callbacks=[watch])
    assert watch.unchanged == []
    expected = [
        "train_reward",
        "train_gold_reward",
        "train_kl",
        "train_approx_kl",
        "train_clipfrac",
        "train_vf_clipfrac",
        "train_entropy",
        "train_pg_loss",
        "train_vf_loss",
        "train_non_score_reward",
        "eval_gold_reward",
        "eval_reward",
        "eval_kl",
    ]
    _assert_logged(ws, result, expected)
    start, end = result.history[0], result.history[-1]
    assert start["iteration"] == 0 and start["kl"] == pytest.approx(0.0, abs=1e-6)
    assert end["iteration"] == 24
    assert end["gold_reward"] > start["gold_reward"] + 0.03  # better than the SFT policy
    assert end["reward"] > start["reward"]
    assert 0.0 < end["kl"] < 5.0  # nats: the penalty keeps the policy near SFT
    history = mlflow.MlflowClient(ws.tracking_uri).get_metric_history(result.run_id, "eval_kl")
    assert sorted(m.step for m in history) == [0, 12, 24]


def test_best_of_n_against_the_reward_model_raises_gold_reward(
    ws: Workspace,
    sft: tuple[StageResult, ParamsChanged],
    reward: tuple[StageResult, ParamsChanged],
) -> None:
    policy = checkpoint.trunk(checkpoint.load(sft[0].checkpoint, ws))
    rm = checkpoint.reward_model(checkpoint.load(reward[0].checkpoint, ws))
    prompts = SyntheticTask().prompts(64, seed=EVAL_SEED)
    pool = sample_pool(policy, prompts, 16, max_new_tokens=12, reward_model=rm, seed=0)
    frame = bon_frame(pool)
    assert frame.n.tolist() == [1, 2, 4, 8, 16]
    assert frame.kl.iloc[0] == 0.0 and frame.kl.iloc[-1] == pytest.approx(math.log(16) - 15 / 16)
    assert frame.proxy.is_monotonic_increasing
    assert frame.gold.iloc[-1] > frame.gold.iloc[0] + 0.03
    responses, gold = best_of_n(pool, 16)
    assert len(responses) == 64 and gold.mean() >= pool.gold.mean()


def test_task_head_classifies_the_synthetic_task(ws: Workspace) -> None:
    watch = ParamsChanged()
    cfg = dict(preset="n30k", steps=120, lr=2e-3, n_train=2048, experiment="rlhf-tests")
    result = run_stage("classify", cfg, ws, callbacks=[watch])
    assert watch.unchanged == []
    _assert_logged(
        ws,
        result,
        [
            "train_loss",
            "train_class_loss",
            "train_lm_loss",
            "eval_accuracy",
            "eval_class_loss",
            "eval_lm_loss",
        ],
    )
    assert result.metrics["eval_accuracy"] > 0.95
    model = checkpoint.task_head(checkpoint.load(result.checkpoint, ws))
    assert model.n_classes == 5


def test_ppo_ptx_adaptive_kl_and_shared_value_head(
    ws: Workspace,
    sft: tuple[StageResult, ParamsChanged],
    reward: tuple[StageResult, ParamsChanged],
) -> None:
    watch = ParamsChanged()
    cfg = dict(
        init=sft[0].checkpoint,
        reward_init=reward[0].checkpoint,
        steps=3,
        rollout_batch=16,
        minibatch_size=8,
        ppo_epochs=1,
        ptx_coef=1.0,
        kl_control="adaptive",
        kl_target=0.01,
        kl_horizon=100,
        value_model="shared",
        experiment="rlhf-tests",
    )
    result = run_stage("ppo", cfg, ws, callbacks=[watch])
    assert watch.unchanged == []
    history = mlflow.MlflowClient(ws.tracking_uri).get_metric_history(
        result.run_id, "train_ptx_loss"
    )
    assert len(history) == 3 and all(0.0 < m.value < 10.0 for m in history)
    betas = mlflow.MlflowClient(ws.tracking_uri).get_metric_history(result.run_id, "train_kl_coef")
    values = [m.value for m in sorted(betas, key=lambda m: m.step)]
    assert values[0] == pytest.approx(0.05) and values[-1] != values[0]  # the controller moved β


def test_ppo_trains_its_prerequisites_when_not_given(ws: Workspace) -> None:
    cfg = dict(
        preset="n10k",
        reward_preset="n10k",
        sft_steps=10,
        reward_steps=10,
        steps=1,
        rollout_batch=8,
        minibatch_size=8,
        ppo_epochs=1,
        n_eval=16,
        experiment="rlhf-chain",
    )
    result = run_stage("ppo", cfg, ws)
    mlflow.set_tracking_uri(ws.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["rlhf-chain"], output_format="list")
    stages = sorted(r.data.tags["stage"] for r in runs)
    assert stages == ["ppo", "reward", "sft"]
    children = [r for r in runs if r.data.tags.get("rlhf_parent") == result.run_id]
    assert len(children) == 2
    assert math.isfinite(result.loss) and result.n_params == 9872


def test_stage_configs_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of init"):
        stage_config("sft", {})
    with pytest.raises(ValueError, match="exactly one of init"):
        stage_config("sft", preset="n10k", n_params_target=1e4)
    with pytest.raises(ValueError, match="stage must be one of"):
        stage_config("pretrain", preset="n10k")
    with pytest.raises(ValueError, match="k_min"):
        stage_config("reward", preset="n10k", k_min=6, k_max=4)
    with pytest.raises(ValueError, match="extra"):
        stage_config("sft", preset="n10k", kl_coef=0.1)  # a PPO field
    with pytest.raises(ValueError, match="not a file"):
        checkpoint.resolve(str(tmp_path / "missing.pt"))
    cfg = stage_config("ppo", preset="n10k", kl_control="adaptive")
    assert cfg.kl_control == "adaptive" and cfg.answer_budget() == 12


class PoisonAt(L.Callback):
    """Sets every weight to NaN before training step ``step``: the loss must turn NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, *_: object
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in module.parameters():
                    p.fill_(float("nan"))


def test_divergence_fails_the_run_with_a_reason(ws: Workspace) -> None:
    cfg = dict(preset="n10k", steps=10, experiment="rlhf-diverge")
    with pytest.raises(TrainingDiverged, match="training loss became nan at step 3"):
        run_stage("sft", cfg, ws, callbacks=[PoisonAt(3)])
    client = mlflow.MlflowClient(ws.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("rlhf-diverge").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "training loss became nan" in runs[0].data.tags["failure_reason"]
