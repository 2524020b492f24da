"""Grouped training: a stack of same-shape runs trains exactly as the runs do one by one."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from scalelab.data import RandomWindows, prepare, val_windows
from scalelab.model import GPT, GPTConfig
from scalelab.train import TrainConfig, budget
from scalelab.training.grouped import GroupTrainer, Member
from scalelab.training.language_model import LanguageModel, pretraining_trainer
from scalelab.training.stacked import StackedGPT
from scalelab.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT, BATCH = 32, 4


@pytest.mark.parametrize("variant", ["gpt1", "gpt2", "gpt3"])
def test_stacked_forward_and_gradients_equal_each_gpt(variant: str) -> None:
    cfg = GPTConfig.from_name(
        "n10k", context=CONTEXT, vocab_size=64, variant=variant, band_window=4
    )
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(GPT(cfg))
    stacked = StackedGPT.from_models(models)
    x = torch.randint(0, 64, (3, BATCH, CONTEXT))
    y = torch.randint(0, 64, (3, BATCH, CONTEXT))
    losses = stacked.losses(x, y)
    expected = torch.stack([m(x[i], y[i])[1] for i, m in enumerate(models)])
    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-5)
    losses.sum().backward()
    expected.sum().backward()
    for i, model in enumerate(models):
        for name, p in model.named_parameters():
            torch.testing.assert_close(stacked.params[name].grad[i], p.grad, rtol=0, atol=1e-6)
        model.load_state_dict(stacked.state_dict(i))  # the stack's weights load into a GPT


def _configs() -> list[TrainConfig]:
    """Three runs of one shape that differ in everything a member owns."""
    common = dict(
        preset="n10k",
        context=CONTEXT,
        batch_size=BATCH,
        corpus="stdlib-notests",
        val_tokens=CONTEXT * 16,
    )
    return [
        TrainConfig(**common, tokens=CONTEXT * BATCH * 24, lr=3e-3, seed=0, val_every=2048),
        TrainConfig(**common, tokens=CONTEXT * BATCH * 16, lr=1e-2, seed=1, schedule="wsd"),
        TrainConfig(
            **common,
            tokens=CONTEXT * BATCH * 20,
            lr=5e-3,
            seed=2,
            weight_decay=0.0,
            grad_clip=0.0,
            warmup=0.2,
            beta2=0.99,
        ),
    ]


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(float(outputs["loss"]))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))


def _alone(cfg: TrainConfig, data, model_cfg: GPTConfig) -> _Losses:
    """The run as ``scalelab.train.train`` trains it, without MLflow."""
    steps, _, val_every = budget(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = LanguageModel(model_cfg, cfg, data, steps)
    losses = _Losses()
    trainer = pretraining_trainer(
        cfg, steps, val_every, logger=False, callbacks=[losses], enable_progress_bar=False
    )
    trainer.fit(module)
    if steps % val_every:
        trainer.validate(module, verbose=False)
    return losses


def test_a_group_trains_each_run_as_it_trains_alone(workspace: Workspace) -> None:
    configs = _configs()
    data = prepare("stdlib-notests", "byte", cache_dir=workspace.cache_dir)
    model_cfg = configs[0].model_cfg(data.vocab_size)
    members = []
    for cfg in configs:
        steps, _, val_every = budget(cfg)
        stream = RandomWindows(data.train, CONTEXT, BATCH, cfg.seed)
        members.append(Member(cfg, steps, val_every, stream))
    GroupTrainer(model_cfg, members, val_windows(data.val, CONTEXT, CONTEXT * 16)).run()

    for cfg, member in zip(configs, members, strict=True):
        alone = _alone(cfg, data, model_cfg)
        assert member.outcome.error is None
        assert len(member.outcome.train_losses) == len(alone.train) == budget(cfg)[0]
        torch.testing.assert_close(
            torch.tensor(member.outcome.train_losses), torch.tensor(alone.train), rtol=0, atol=1e-5
        )
        assert [s for s, _ in member.outcome.val_losses] == [s for s, _ in alone.val]
        torch.testing.assert_close(
            torch.tensor([v for _, v in member.outcome.val_losses]),
            torch.tensor([v for _, v in alone.val]),
            rtol=0,
            atol=1e-5,
        )
        assert member.outcome.loss == pytest.approx(alone.val[-1][1], abs=1e-5)


def test_a_member_that_stops_leaves_the_others_untouched(workspace: Workspace) -> None:
    configs = _configs()
    data = prepare("stdlib-notests", "byte", cache_dir=workspace.cache_dir)
    model_cfg = configs[0].model_cfg(data.vocab_size)
    val = val_windows(data.val, CONTEXT, CONTEXT * 16)

    def pruned(step: int, loss: float) -> None:
        raise RuntimeError(f"pruned at step {step}")

    def group(stop_first: bool) -> list[Member]:
        members = [
            Member(cfg, *budget(cfg)[::2], RandomWindows(data.train, CONTEXT, BATCH, cfg.seed))
            for cfg in configs
        ]
        if stop_first:
            members[0].on_validation = pruned
        GroupTrainer(model_cfg, members, val, keep_weights=True).run()
        return members

    full, cut = group(False), group(True)
    assert str(cut[0].outcome.error) == f"pruned at step {budget(configs[0])[2]}"
    assert cut[0].outcome.state_dict is None and cut[0].outcome.steps_done < budget(configs[0])[0]
    for a, b in zip(full[1:], cut[1:], strict=True):
        assert b.outcome.error is None
        torch.testing.assert_close(
            torch.tensor(b.outcome.train_losses), torch.tensor(a.outcome.train_losses)
        )
        assert b.outcome.state_dict is not None
