"""The GPU path's switches, checked on CPU where the feature exists there: fused AdamW, bf16
autocast, ``compile`` through Lightning, and FSDP (which Lightning runs on CUDA only)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from scalelab.data import prepare
from scalelab.model import GPT, GPTConfig
from scalelab.train import TrainConfig
from scalelab.training.language_model import LanguageModel, pretraining_trainer
from scalelab.training.optim import adamw_implementation, adamw_with_schedule
from scalelab.workspace import Workspace

STEPS = 4
TINY = dict(preset="n10k", corpus="stdlib-notests", context=32, batch_size=4, val_tokens=512)


class StepLosses(L.Callback):
    """The training loss of every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


def step_losses(workspace: Workspace, **overrides: object) -> list[float]:
    """Per-step training losses of a tiny LanguageModel run through the pre-training Trainer."""
    cfg = TrainConfig(**{**TINY, "tokens": STEPS * 4 * 32, "accelerator": "cpu", **overrides})
    data = prepare(cfg.corpus, cfg.tokenizer, cache_dir=workspace.cache_dir)
    L.seed_everything(cfg.seed, verbose=False)
    module = LanguageModel(cfg.model_cfg(data.vocab_size), cfg, data, STEPS)
    recorder = StepLosses()
    trainer = pretraining_trainer(
        cfg, STEPS, STEPS + 1, logger=False, callbacks=[recorder], enable_progress_bar=False
    )
    trainer.fit(module)
    return recorder.losses


def test_adamw_is_fused_on_cpu_and_cuda_and_default_elsewhere() -> None:
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16, context=8, vocab_size=16))
    cfg = TrainConfig(preset="n10k")
    optimizer, _ = adamw_with_schedule(model, cfg, total_steps=10)
    assert optimizer.defaults["fused"] is True
    assert adamw_implementation([torch.empty(1, device="meta")]) == {}
    assert adamw_implementation([torch.empty(1), torch.empty(1, device="meta")]) == {}


def test_fused_adamw_takes_the_same_steps_as_the_for_loop() -> None:
    """Same update, other kernel: after five steps at lr 1e-2 the parameters agree within 1%
    of one step's size (measured 4.2e-5: rounding, amplified where Adam's second moment is
    near zero)."""
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=32, context=16, vocab_size=32)
    idx = torch.randint(0, 32, (5, 2, 17), generator=torch.Generator().manual_seed(0))
    models = []
    for kernel in (dict(fused=True), dict(foreach=False, fused=False)):
        torch.manual_seed(0)
        model = GPT(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, **kernel)
        for batch in idx:
            model(batch[:, :-1], batch[:, 1:])[1].backward()
            optimizer.step()
            optimizer.zero_grad()
        models.append(model)
    for fused, loop in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(fused, loop, atol=1e-4, rtol=0)


def test_bf16_autocast_tracks_fp32_for_a_few_steps(workspace: Workspace) -> None:
    """Lightning's bf16-mixed (CPU autocast) against 32-true, same seed and batches: each of
    the first steps' losses within 0.1% (measured on CPU: at most 1.4e-4)."""
    fp32 = step_losses(workspace, precision="32-true")
    bf16 = step_losses(workspace, precision="bf16-mixed")
    assert len(bf16) == len(fp32) == STEPS
    assert bf16 == pytest.approx(fp32, rel=1e-3)
    assert bf16 != fp32  # autocast really ran in bf16


@pytest.mark.slow  # inductor builds C++ kernels: minutes on a busy two-core machine
def test_compile_switch_trains_like_eager_through_lightning(workspace: Workspace) -> None:
    """``compile: true`` compiles the blocks in ``configure_model``; the losses follow eager
    (tolerance 1e-4, as the model-level test; measured on CPU: equal)."""
    from torch._dynamo.utils import counters

    eager = step_losses(workspace)
    counters.clear()
    compiled = step_losses(workspace, compile=True)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really compiled the blocks
    assert compiled == pytest.approx(eager, abs=1e-4)


def test_compile_switch_compiles_the_blocks_in_configure_model() -> None:
    cfg = TrainConfig(preset="n10k", compile=True)
    module = LanguageModel.__new__(LanguageModel)
    L.LightningModule.__init__(module)
    module.cfg = cfg
    module.model = GPT(cfg.model_cfg(256))
    module.configure_model()
    assert all(block._compiled_call_impl is not None for block in module.model.transformer.h)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="FSDP needs a CUDA GPU: Lightning's FSDPStrategy refuses the CPU accelerator, and "
    "torch.cuda.is_available() is False here",
)
def test_fsdp_strategy_trains_through_lightning(workspace: Workspace) -> None:
    """One-GPU FSDP (the same sharding code as many GPUs, world size 1) trains finite losses
    that follow the plain single-device run."""
    from lightning.pytorch.strategies import FSDPStrategy

    plain = step_losses(workspace, accelerator="gpu", precision="32-true")
    sharded = step_losses(
        workspace, accelerator="gpu", precision="32-true", strategy=FSDPStrategy()
    )
    assert all(torch.isfinite(torch.tensor(sharded)))
    assert sharded == pytest.approx(plain, rel=1e-3)
