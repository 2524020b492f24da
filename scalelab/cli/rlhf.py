"""``scalelab rlhf STAGE``: one RLHF stage (SFT, reward model, PPO, GPT-1 task head) on the
synthetic task.

Torch, Lightning and MLflow are imported inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, UsageError, WorkspaceOpt, user_input

RLHF_EXAMPLE = (
    "Examples: scalelab rlhf sft --preset n100k --steps 400 | "
    "scalelab rlhf ppo --init runs:/ID --reward-init runs:/ID --set kl_coef=0.02"
)


def rlhf(
    stage: Annotated[str, typer.Argument(help="sft, reward, ppo or classify.")],
    preset: Annotated[str | None, typer.Option(help="Size preset of a fresh trunk.")] = None,
    params: Annotated[
        float | None, typer.Option(help="Target non-embedding parameters of a fresh trunk.")
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="Checkpoint to start from: a .pt path or runs:/<run_id>.")
    ] = None,
    reward_init: Annotated[str | None, typer.Option(help="ppo: reward-model checkpoint.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (ppo: iterations).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per step (reward: prompts).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for init, data and sampling.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Other config fields as KEY=VALUE (repeatable); task fields as task.KEY=VALUE.",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "scalelab-rlhf",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Run one RLHF stage (SFT, reward model, PPO, GPT-1 task head) on the synthetic task."""
    import yaml

    from scalelab.rlhf.stages import run_stage, stage_config
    from scalelab.train import TrainingDiverged

    given = {
        "preset": preset,
        "n_params_target": params,
        "init": init,
        "reward_init": reward_init,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
    }
    fields = {key: value for key, value in given.items() if value is not None}
    with user_input(flags={"n_params_target": "--params", "reward_init": "--reward-init"}):
        task: dict[str, object] = {}
        for item in set_ or []:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set kl_coef=0.02")
            value = yaml.safe_load(raw)
            if key.startswith("task."):
                task[key.removeprefix("task.")] = value
            else:
                fields[key] = value
        if task:
            fields["task"] = task
        cfg = stage_config(stage, seed=seed, experiment=experiment, **fields)
        ws = common.workspace(workspace, tracking_uri)
    try:
        result = run_stage(stage, cfg, ws, enable_progress_bar=not json_out)
    except TrainingDiverged as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result.to_dict(), default=str) if json_out else str(result))
