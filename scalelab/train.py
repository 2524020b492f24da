"""Language-model pre-training: a LightningModule, its data, and one tracked run.

``train(TrainConfig(...))`` trains one GPT for an exact token budget D (so that compute
C = 6·N·D is controlled), validates on a fixed held-out set, and logs everything to MLflow.
Lightning does the loop, devices (``devices``/``num_nodes``/``strategy`` pass straight through),
progress bar, throughput and logging; this module only says what a step is.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalelab.data import EpochWindows, RandomWindows, TokenData, prepare, val_windows
from scalelab.model import GPT, GPTConfig, config_for_params
from scalelab.workspace import Workspace

if TYPE_CHECKING:
    import lightning as L


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainConfig(BaseModel):
    """Everything that defines one training run; validated so a bad value names its field."""

    model_config = ConfigDict(extra="forbid")

    # Model: a preset name, or a target non-embedding parameter count on the preset width rule.
    preset: str | None = None
    n_params_target: float | None = Field(None, gt=0)
    variant: Literal["gpt1", "gpt2", "gpt3"] = "gpt2"
    context: int = Field(256, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    band_window: int = Field(64, ge=1)

    # Data.
    corpus: str = "stdlib"
    tokenizer: str = "byte"
    data_order: Literal["random", "epoch"] = Field(
        "random", description="random windows, or shuffled non-overlapping ones (no repeats)"
    )
    repeat_data: bool = Field(
        False, description="allow a budget larger than the training split (repeated data)"
    )

    # Budget and optimisation.
    tokens: int = Field(2_000_000, gt=0, description="training tokens D")
    batch_size: int = Field(16, ge=1, description="sequences per optimizer step, all devices")
    lr: float = Field(3e-3, gt=0, lt=1e3)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="fraction of steps")
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd: final decay fraction")
    weight_decay: float = Field(0.1, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    grad_clip: float = Field(1.0, ge=0.0)
    seed: int = 0

    # Validation: a fixed set, evaluated every ``val_every`` tokens and at the end.
    val_tokens: int = Field(65_536, gt=0)
    val_every: int | None = Field(None, gt=0, description="tokens; default: 10 evaluations")

    # Hardware: passed to Lightning's Trainer unchanged.
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "auto"

    # Tracking.
    experiment: str = "scalelab"
    run_name: str | None = None
    save_checkpoint: bool = False

    @model_validator(mode="after")
    def _one_size(self) -> TrainConfig:
        if (self.preset is None) == (self.n_params_target is None):
            raise ValueError(
                "give exactly one of preset (e.g. 'n1m') or n_params_target (e.g. 3e5)"
            )
        return self

    def model_cfg(self, vocab_size: int) -> GPTConfig:
        shape = dict(
            variant=self.variant,
            context=self.context,
            vocab_size=vocab_size,
            dropout=self.dropout,
            band_window=self.band_window,
        )
        if self.preset is not None:
            return GPTConfig.from_name(self.preset, **shape)
        return config_for_params(self.n_params_target, **shape)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    loss: float
    bpb: float
    n_params: int
    n_params_total: int
    tokens: int
    compute: float
    wall_time: float


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total``.

    Linear warm-up, then either cosine decay to ``min_lr_ratio`` (GPT-3, Chinchilla) or
    warm-up-stable-decay: constant, then linear decay over the last ``decay_fraction``.
    """
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return (step + 1) / warmup
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = total - int(cfg.decay_fraction * total)
    if step < decay_start:
        return 1.0
    return 1.0 - (1 - floor) * (step - decay_start + 1) / max(1, total - decay_start)


def _lightning_module_class() -> type[L.LightningModule]:
    import lightning as L

    class LanguageModel(L.LightningModule):
        """Next-token pre-training of a GPT, with losses in nats/token and bits/byte."""

        def __init__(self, model_cfg: GPTConfig, cfg: TrainConfig, data: TokenData, steps: int):
            super().__init__()
            self.model = GPT(model_cfg)
            self.model_cfg, self.cfg, self.data, self.steps = model_cfg, cfg, data, steps
            self.tokens_per_step = cfg.batch_size * cfg.context
            # Pre-tokenized corpora do not know their bytes: no bits/byte for them.
            per_token = data.val_bytes_per_token
            self.bits_per_nat = 1.0 / (math.log(2) * per_token) if per_token > 0 else None
            self.device_batch = cfg.batch_size  # split across devices in setup
            self.flops_per_batch = 0.0

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
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss became {loss.item()} at step {self.global_step}"
                )
            seen = (self.global_step + 1) * self.tokens_per_step
            self.log("train/loss", loss, prog_bar=True)
            if self.bits_per_nat:
                self.log("train/bpb", loss * self.bits_per_nat)
            self.log("lr", self.lr_schedulers().get_last_lr()[0])
            self.log("tokens_seen", float(seen))
            self.log("flops_seen", float(seen) * self.model_cfg.flops_per_token())
            return loss

        def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
            (windows,) = batch
            _, loss = self.model(windows[:, :-1], windows[:, 1:])
            self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(windows))
            if self.bits_per_nat:
                self.log(
                    "val/bpb", loss * self.bits_per_nat, sync_dist=True, batch_size=len(windows)
                )

        def configure_optimizers(self) -> dict[str, Any]:
            # Decay matrices only (Radford et al. 2019 via nanoGPT); biases and gains are not
            # scale parameters and decaying them only hurts.
            params = [p for p in self.model.parameters() if p.requires_grad]
            groups = [
                {
                    "params": [p for p in params if p.dim() >= 2],
                    "weight_decay": self.cfg.weight_decay,
                },
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            optimizer = torch.optim.AdamW(
                groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2)
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(step, self.steps, self.cfg)
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    return LanguageModel


def resolve_precision(precision: str) -> str:
    """bf16 autocast where the GPU supports it, else fp32 (CPU bf16 is emulated, ~4x slower)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def run_params(cfg: TrainConfig, model_cfg: GPTConfig, data: TokenData, tokens: int) -> dict:
    """The parameters logged to MLflow, in the project's shared vocabulary."""
    n_params = model_cfg.n_params_nonembedding
    return {
        "variant": model_cfg.variant,
        "n_layer": model_cfg.n_layer,
        "n_head": model_cfg.n_head,
        "d_model": model_cfg.d_model,
        "context": model_cfg.context,
        "vocab_size": model_cfg.vocab_size,
        "n_params": n_params,
        "n_params_nonembedding": n_params,
        "n_params_total": model_cfg.n_params_total,
        "n_params_chinchilla": model_cfg.n_params_chinchilla,
        "tokens": tokens,
        "compute": 6 * n_params * tokens,
        "compute_full": model_cfg.flops_per_token(include_embedding=True) * tokens,
        "corpus": data.corpus_hash,
        "corpus_source": cfg.corpus,
        "tokenizer": data.tokenizer_id,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "warmup": cfg.warmup,
        "schedule": cfg.schedule,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "preset": cfg.preset or "",
    }


class RepeatedDataError(ValueError):
    """A budget larger than the training split, without ``repeat_data``."""


def check_no_repeats(tokens: int, train_tokens: int, cfg: TrainConfig) -> None:
    """Refuse a run that would see training text twice, unless ``repeat_data`` allows it.

    Repeated tokens are worth less than fresh ones (Muennighoff et al. 2023), so a run that
    repeats data sits off the scaling law fitted on runs that do not.
    """
    epochs = tokens / max(1, train_tokens)
    if epochs <= 1:
        return
    if not cfg.repeat_data:
        raise RepeatedDataError(
            f"tokens: {tokens:,} training tokens are {epochs:.2f} passes over the "
            f"{train_tokens:,}-token training split of corpus {cfg.corpus!r}; use a larger "
            "corpus (e.g. python-all, or a folder of text), a smaller budget, or set "
            "repeat_data to train on repeated data"
        )
    warnings.warn(f"training repeats data: {epochs:.2f} epochs of {cfg.corpus!r}", stacklevel=2)


def make_trainer(
    cfg: TrainConfig,
    steps: int,
    val_every_steps: int,
    *,
    logger: Any,
    callbacks: list[Any] | None = None,
    enable_progress_bar: bool = True,
    root_dir: Path | None = None,
) -> L.Trainer:
    """The Trainer every run uses: exact step count, periodic validation, throughput."""
    import lightning as L
    from lightning.pytorch.callbacks import ThroughputMonitor

    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision),
        max_steps=steps,
        val_check_interval=val_every_steps,
        log_every_n_steps=max(1, min(50, steps // 100)),
        logger=logger,
        callbacks=[ThroughputMonitor(batch_size_fn=len, length_fn=lambda b: b[0].numel())]
        + list(callbacks or []),
        gradient_clip_val=cfg.grad_clip or None,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=None,
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        default_root_dir=str(root_dir) if root_dir else None,
        deterministic=True,
    )


def language_model(
    model_cfg: GPTConfig, cfg: TrainConfig, data: TokenData, steps: int
) -> L.LightningModule:
    """The LightningModule that pre-trains ``GPT(model_cfg)`` for ``steps`` steps."""
    return _lightning_module_class()(model_cfg, cfg, data, steps)


def train(
    cfg: TrainConfig,
    workspace: Workspace | None = None,
    *,
    run_id: str | None = None,
    callbacks: list[Any] | None = None,
    tags: dict[str, str] | None = None,
    enable_progress_bar: bool = True,
) -> TrainResult:
    """Train one model for ``cfg.tokens`` tokens and log it to MLflow.

    ``run_id`` continues an MLflow run created by the caller (sweeps create nested runs);
    otherwise a new run is started in ``cfg.experiment``. Raises ``TrainingDiverged`` (after
    marking the run FAILED) if the loss becomes non-finite.
    """
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger

    from scalelab.results import tracking

    workspace = (workspace or Workspace.resolve()).ensure()
    data = prepare(cfg.corpus, cfg.tokenizer, cache_dir=workspace.cache_dir)
    model_cfg = cfg.model_cfg(data.vocab_size)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    tokens_per_step = cfg.batch_size * cfg.context
    steps = max(1, cfg.tokens // tokens_per_step)
    tokens = steps * tokens_per_step
    check_no_repeats(tokens, len(data.train), cfg)
    val_every_steps = max(1, (cfg.val_every or tokens // 10) // tokens_per_step)

    tracking.ensure_experiment(cfg.experiment, workspace)
    logger = MLFlowLogger(
        experiment_name=cfg.experiment,
        run_name=cfg.run_name,
        tracking_uri=workspace.tracking_uri,
        tags=tags,
        run_id=run_id,
    )

    trainer = make_trainer(
        cfg,
        steps,
        val_every_steps,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=enable_progress_bar,
        root_dir=workspace.root / "lightning",
    )
    module = language_model(model_cfg, cfg, data, steps)
    if trainer.is_global_zero:
        logger.log_hyperparams(run_params(cfg, model_cfg, data, tokens))
        experiment = logger.experiment
        experiment.set_tag(logger.run_id, "corpus_baselines", str(data.baselines))
        tracking.log_json_artifact(
            experiment,
            logger.run_id,
            {"train": cfg.model_dump(), "model": model_cfg.to_dict(), "data": data.describe()},
            "config.json",
        )

    started = time.perf_counter()
    try:
        trainer.fit(module)
    except TrainingDiverged as err:
        if trainer.is_global_zero:
            logger.experiment.set_tag(logger.run_id, "failure_reason", str(err))
        raise
    if steps % val_every_steps:
        trainer.validate(module, verbose=False)
    wall = time.perf_counter() - started

    loss = float(trainer.callback_metrics["val/loss"])
    bpb = float(trainer.callback_metrics.get("val/bpb", math.nan))
    result = TrainResult(
        run_id=logger.run_id,
        loss=loss,
        bpb=bpb,
        n_params=model_cfg.n_params_nonembedding,
        n_params_total=model_cfg.n_params_total,
        tokens=tokens,
        compute=6.0 * model_cfg.n_params_nonembedding * tokens,
        wall_time=wall,
    )
    if trainer.is_global_zero:
        experiment = logger.experiment
        finals = {"loss": loss, "val_bpb": bpb, "wall_time": wall}
        for key, value in finals.items():
            if math.isfinite(value):
                experiment.log_metric(logger.run_id, key, value, step=steps)
        if cfg.save_checkpoint:
            _log_checkpoint(experiment, logger.run_id, module.model, model_cfg, workspace)
        logger.finalize("success")
    return result


def _log_checkpoint(
    experiment: Any, run_id: str, model: GPT, model_cfg: GPTConfig, workspace: Workspace
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir=workspace.root) as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"config": model_cfg.to_dict(), "state_dict": model.state_dict()}, path)
        experiment.log_artifact(run_id, str(path), artifact_path="checkpoint")
