"""Reading the RLHF stages' models back from checkpoints (``scalelab.training.checkpoint``).

The format, references (``runs:/<run_id>`` or a ``.pt`` path), ``load`` and ``trunk`` are those
of every training run, re-exported here; a ``reward`` checkpoint adds the reward head and a
``classify`` checkpoint the task head.
"""

from __future__ import annotations

from torch import nn

from scalelab.rlhf.heads import RewardModel, TaskHead
from scalelab.training.checkpoint import ARTIFACT_PATH, load, payload, resolve, trunk

__all__ = ["ARTIFACT_PATH", "load", "payload", "resolve", "reward_model", "task_head", "trunk"]


def _load_head(model: nn.Module, ckpt: dict) -> None:
    model.load_state_dict(
        {**{f"trunk.{k}": v for k, v in ckpt["state_dict"].items()}, **ckpt["head_state"]}
    )


def reward_model(ckpt: dict) -> RewardModel:
    """The reward model of a ``reward`` stage checkpoint."""
    if ckpt.get("stage") != "reward":
        raise ValueError(f"expected a reward-model checkpoint, got stage {ckpt.get('stage')!r}")
    model = RewardModel(trunk(ckpt))
    _load_head(model, ckpt)
    return model


def task_head(ckpt: dict) -> TaskHead:
    """The classifier of a ``classify`` stage checkpoint."""
    if ckpt.get("stage") != "classify":
        raise ValueError(f"expected a classifier checkpoint, got stage {ckpt.get('stage')!r}")
    model = TaskHead(trunk(ckpt), int(ckpt["meta"]["n_classes"]))
    _load_head(model, ckpt)
    return model
