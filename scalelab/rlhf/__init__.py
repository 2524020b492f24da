"""RLHF on the GPT trunk: GPT-1's task head, SFT, a reward model, PPO(-ptx), best-of-n.

Everything runs offline on a synthetic instruction task with a programmatic gold reward
(``task``). Stages are Lightning modules on the shared ``scalelab.model.GPT`` trunk, each run
tracked in MLflow by ``run_stage`` (see ``stages`` for the Python usage):

- ``classify`` (``classify.py``): GPT-1's linear head on the final token, cross-entropy plus
  λ times the auxiliary language-model loss;
- ``sft`` (``sft.py``): next-token loss on response tokens only, single- and multi-turn;
- ``reward`` (``reward.py``): InstructGPT's K-wise ranking loss, all C(K,2) pairs of a prompt
  in one batch element; accuracy, margin and agreement with the gold reward;
- ``ppo`` (``ppo.py``): rollouts, a KL penalty to the SFT policy (fixed or adaptive β), GAE,
  clipped policy and value losses, and InstructGPT's pre-training mix (PPO-ptx);
- ``bestofn.py``: best-of-n sampling against the reward model, with KL = log n − (n−1)/n.

Importing this package imports no torch, Lightning or MLflow: ``run_stage`` and
``StageResult`` load ``stages`` on first use.
"""

from typing import TYPE_CHECKING, Any

from scalelab.rlhf.config import (
    STAGES,
    ClassifyConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    StageConfig,
    stage_config,
)
from scalelab.rlhf.task import Comparison, Example, Prompt, SyntheticTask, TaskConfig

if TYPE_CHECKING:
    from scalelab.rlhf.stages import StageResult, run_stage

__all__ = [
    "STAGES",
    "ClassifyConfig",
    "Comparison",
    "Example",
    "PPOConfig",
    "Prompt",
    "RewardConfig",
    "SFTConfig",
    "StageConfig",
    "StageResult",
    "SyntheticTask",
    "TaskConfig",
    "run_stage",
    "stage_config",
]


def __getattr__(name: str) -> Any:
    if name in ("StageResult", "run_stage"):
        from scalelab.rlhf import stages

        return getattr(stages, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
