"""Checkpoints that chain the stages: pre-train → SFT → reward model → PPO.

A checkpoint is a ``torch.save`` dict with ``config`` (``GPTConfig.to_dict()``) and
``state_dict`` (the GPT trunk), the format ``scalelab train --save-checkpoint`` writes, so a
pre-trained trunk initialises any stage. RLHF stages add ``stage``, ``head_state`` (the
head's parameters and buffers, keys without the ``trunk.`` prefix) and ``meta``.

A reference is a path to a ``.pt`` file or ``runs:/<run_id>[/<artifact path>]`` (default
artifact path ``checkpoint/model.pt``, where every stage and ``scalelab train`` log it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.model import GPT, GPTConfig
from scalelab.rlhf.heads import RewardModel, TaskHead
from scalelab.workspace import Workspace

ARTIFACT_PATH = "checkpoint/model.pt"


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


def resolve(ref: str, workspace: Workspace | None = None) -> Path:
    """The local file of a checkpoint reference (downloads ``runs:/`` artifacts if remote)."""
    if ref.startswith("runs:/"):
        from urllib.parse import unquote, urlparse

        from scalelab.results import tracking

        run_id, _, path = ref[len("runs:/") :].strip("/").partition("/")
        path = path or ARTIFACT_PATH
        workspace = workspace or Workspace.resolve()
        client = tracking.client(workspace)
        root = urlparse(client.get_run(run_id).info.artifact_uri)
        if root.scheme in ("", "file"):  # a local store: read in place, no copy
            local = Path(unquote(root.path)) / path
            if not local.is_file():
                raise ValueError(f"run {run_id} has no artifact {path!r}")
            return local
        return Path(client.download_artifacts(run_id, path))
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


def reward_model(ckpt: dict) -> RewardModel:
    """The reward model of a ``reward`` stage checkpoint."""
    if ckpt.get("stage") != "reward":
        raise ValueError(f"expected a reward-model checkpoint, got stage {ckpt.get('stage')!r}")
    model = RewardModel(trunk(ckpt))
    model.load_state_dict(
        {**{f"trunk.{k}": v for k, v in ckpt["state_dict"].items()}, **ckpt["head_state"]}
    )
    return model


def task_head(ckpt: dict) -> TaskHead:
    """The classifier of a ``classify`` stage checkpoint."""
    if ckpt.get("stage") != "classify":
        raise ValueError(f"expected a classifier checkpoint, got stage {ckpt.get('stage')!r}")
    model = TaskHead(trunk(ckpt), int(ckpt["meta"]["n_classes"]))
    model.load_state_dict(
        {**{f"trunk.{k}": v for k, v in ckpt["state_dict"].items()}, **ckpt["head_state"]}
    )
    return model
