"""``LanguageModel``: next-token pre-training of a GPT as a LightningModule, and its Trainer.

Lightning does the loop, devices (``devices``/``num_nodes``/``strategy`` pass straight through),
progress bar, throughput and logging; this module only says what a step is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from scalelab.data import EpochWindows, RandomWindows, TokenData, val_windows
from scalelab.model import GPT, GPTConfig
from scalelab.training.module import ScheduledModule, check_finite
from scalelab.training.trainer import make_trainer, resolve_precision

if TYPE_CHECKING:  # a type only: gpu_check.py passes a plain dataclass and has no pydantic
    from scalelab.training.config import TrainConfig


class LanguageModel(ScheduledModule):
    """Next-token pre-training of ``GPT(model_cfg)`` for ``steps`` steps, with losses in
    nats/token and bits/byte."""

    cfg: TrainConfig

    def __init__(self, model_cfg: GPTConfig, cfg: TrainConfig, data: TokenData, steps: int):
        super().__init__(cfg, steps, betas=(cfg.beta1, cfg.beta2))
        self.model = GPT(model_cfg)
        self.model_cfg, self.data = model_cfg, data
        self.tokens_per_step = cfg.batch_size * cfg.context
        # Pre-tokenized corpora do not know their bytes: no bits/byte for them.
        per_token = data.val_bytes_per_token
        self.bits_per_nat = 1.0 / (math.log(2) * per_token) if per_token > 0 else None
        self.device_batch = cfg.batch_size  # split across devices in setup
        self.flops_per_batch = 0.0

    def configure_model(self) -> None:
        # Lightning's hook for compiling (and sharding) the model once per fit. Compilation is
        # lazy: the code is built at the first step, on the device the strategy chose.
        if self.cfg.compile:
            self.model.compile_blocks()

    def setup(self, stage: str) -> None:
        # The batch is global, so the number of steps (and the loss) does not depend on
        # how many devices share it.
        world = self.trainer.world_size
        if self.cfg.batch_size % world:
            raise ValueError(
                f"batch_size {self.cfg.batch_size} must be divisible by the "
                f"{world} devices that share it"
            )
        self.device_batch = self.cfg.batch_size // world
        # ThroughputMonitor reads this attribute; the analytic count includes attention.
        per_token = self.model_cfg.flops_per_token(include_embedding=True)
        self.flops_per_batch = per_token * self.device_batch * self.cfg.context

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # Each rank draws its own windows; batches arrive whole, so no collation.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if self.cfg.data_order == "epoch":  # one shared order, split between ranks
            stream = EpochWindows(
                self.data.train,
                self.cfg.context,
                self.device_batch,
                self.cfg.seed,
                rank=rank,
                world=world,
            )
        else:
            seed = self.cfg.seed + 1_000_003 * rank
            stream = RandomWindows(self.data.train, self.cfg.context, self.device_batch, seed)
        return torch.utils.data.DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        windows = val_windows(self.data.val, self.cfg.context, self.cfg.val_tokens)
        dataset = torch.utils.data.TensorDataset(windows)
        return torch.utils.data.DataLoader(dataset, batch_size=32)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        check_finite(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True)
        if self.bits_per_nat:
            self.log("train/bpb", loss * self.bits_per_nat)
        self.log("lr", self.lr_schedulers().get_last_lr()[0])
        self.log("tokens_seen", float((self.global_step + 1) * self.tokens_per_step))
        return loss

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        (windows,) = batch
        _, loss = self.model(windows[:, :-1], windows[:, 1:])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(windows))
        if self.bits_per_nat:
            self.log("val/bpb", loss * self.bits_per_nat, sync_dist=True, batch_size=len(windows))


def pretraining_trainer(
    cfg: TrainConfig,
    steps: int,
    val_every_steps: int,
    *,
    logger: Any,
    callbacks: list[L.Callback] | None = None,
    enable_progress_bar: bool = True,
    root_dir: Path | None = None,
) -> L.Trainer:
    """The Trainer of a pre-training run: ``cfg``'s devices and precision, periodic
    validation, throughput."""
    throughput = ThroughputMonitor(batch_size_fn=len, length_fn=lambda b: b[0].numel())
    return make_trainer(
        steps,
        val_every=val_every_steps,
        grad_clip=cfg.grad_clip or None,
        log_every=max(1, min(50, steps // 100)),
        logger=logger,
        callbacks=[throughput, *(callbacks or [])],
        enable_progress_bar=enable_progress_bar,
        root_dir=root_dir,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision),
    )
