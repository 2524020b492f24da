"""The one checkpoint format: pre-training and every RLHF stage write it, and any of them
initialises a stage (pre-train → SFT → reward model → PPO).

A checkpoint is a ``torch.save`` dict with ``config`` (``GPTConfig.to_dict()``), ``state_dict``
(the GPT trunk), ``stage`` (``pretrain`` or the RLHF stage), ``head_state`` (a head's
parameters and buffers, keys without the ``trunk.`` prefix; empty for a bare trunk) and
``meta``. Checkpoints of older versions hold only ``config`` and ``state_dict``; they load.

A reference is a path to a ``.pt`` file or ``runs:/<run_id>[/<artifact path>]`` (default
artifact path ``checkpoint/model.pt``, where ``log`` puts every run's checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.model import GPT, GPTConfig
from scalelab.results import tracking
from scalelab.workspace import Workspace

ARTIFACT_PATH = tracking.CHECKPOINT_ARTIFACT


def payload(trunk: GPT, stage: str, module: nn.Module | None = None, **meta: Any) -> dict:
    """The checkpoint dict of ``trunk`` and, if given, the head parts of ``module``."""
    head_state = {}
    if module is not None:
        head_state = {
            k: v for k, v in module.state_dict().items() if not k.startswith(("trunk.", "policy."))
        }
    return {
        "config": trunk.config.to_dict(),
        "state_dict": trunk.state_dict(),
        "stage": stage,
        "head_state": head_state,
        "meta": meta,
    }


def log(mlflow_client: Any, run_id: str, ckpt: dict, workspace: Workspace) -> str:
    """Log ``ckpt`` as the run's checkpoint artifact; returns ``runs:/<run_id>``."""
    return tracking.log_checkpoint(
        mlflow_client, run_id, lambda path: torch.save(ckpt, path), workspace
    )


def resolve(ref: str, workspace: Workspace | None = None) -> Path:
    """The local file of a checkpoint reference (downloads ``runs:/`` artifacts if remote)."""
    if ref.startswith("runs:/"):
        return tracking.artifact_file(ref, workspace or Workspace.resolve(), ARTIFACT_PATH)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ValueError(f"checkpoint {ref!r} is not a file (expected a .pt path or runs:/<id>)")
    return path


def load(ref: str, workspace: Workspace | None = None) -> dict:
    """The checkpoint dict behind ``ref``."""
    ckpt = torch.load(resolve(ref, workspace), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"checkpoint {ref!r} has no GPT config and state_dict")
    return ckpt


def trunk(ckpt: dict) -> GPT:
    """The GPT trunk of a checkpoint."""
    model = GPT(GPTConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model
