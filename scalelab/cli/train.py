"""``scalelab train`` and ``scalelab corpus``: one GPT trained for an exact budget, and the
tokenized corpora it trains on.

Torch, Lightning and MLflow are imported inside the commands: ``import lightning`` alone costs
seconds, and ``--help`` should not.
"""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from scalelab.cli import common
from scalelab.cli.common import TrackingOpt, UsageError, WorkspaceOpt, user_input

TRAIN_EXAMPLE = "Example: scalelab train --preset n300k --tokens 2e6 --variant gpt2"
CORPUS_EXAMPLE = "Example: scalelab corpus --corpus stdlib --tokenizer byte"
# scalelab.model.PRESETS by name (importing the model would import torch into --help; a test
# keeps the two in step), with the rounded non-embedding size each stands for.
PRESET_HELP = (
    "Size preset: n10k, n30k, n100k, n300k, n1m, n3m, n10m or n20m (about 1e4 to 2e7 "
    "non-embedding parameters, half a decade apart)."
)


def train(
    preset: Annotated[str | None, typer.Option(help=PRESET_HELP)] = None,
    params: Annotated[
        float | None, typer.Option(help="Target non-embedding parameters, e.g. 3e5.")
    ] = None,
    tokens: Annotated[
        float,
        typer.Option(
            help="Training tokens D, e.g. 2e6, rounded down to whole steps (the real D is printed)."
        ),
    ] = 2e6,
    variant: Annotated[str, typer.Option(help="gpt1, gpt2, gpt3 or llama.")] = "gpt2",
    corpus: Annotated[
        str, typer.Option(help="stdlib, stdlib-notests, python-all, or a path.")
    ] = "stdlib",
    tokenizer: Annotated[str, typer.Option(help="byte, or bpeN (e.g. bpe4096).")] = "byte",
    data_order: Annotated[
        str, typer.Option(help="random windows, or epoch: shuffled windows, none seen twice.")
    ] = "random",
    repeat_data: Annotated[
        bool, typer.Option(help="Allow more tokens than the training split holds.")
    ] = False,
    context: Annotated[int, typer.Option(help="Context length in tokens.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Sequences per step (all devices).")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    warmup: Annotated[float, typer.Option(help="Warm-up as a fraction of steps.")] = 0.05,
    schedule: Annotated[str, typer.Option(help="cosine or wsd.")] = "cosine",
    seed: Annotated[int, typer.Option(help="Seed for init and batches.")] = 0,
    val_every: Annotated[
        float | None, typer.Option(help="Validate every this many tokens (default: D/10).")
    ] = None,
    devices: Annotated[str, typer.Option(help="Lightning devices (int or 'auto').")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Lightning num_nodes.")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, fsdp...")] = "auto",
    accelerator: Annotated[str, typer.Option(help="cpu, gpu or auto.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (bf16-mixed on GPUs with bf16, else 32-true) or Lightning's.")
    ] = "auto",
    compile: Annotated[bool, typer.Option(help="torch.compile each transformer block.")] = False,
    gelu: Annotated[str, typer.Option(help="GELU form: tanh (GPT-2's) or exact.")] = "tanh",
    mup: Annotated[
        bool, typer.Option(help="μP relative to --mup-base-width: lr tuned there transfers.")
    ] = False,
    mup_base_width: Annotated[
        int | None, typer.Option(help="With --mup: the d_model at which μP is the standard model.")
    ] = None,
    evals: Annotated[
        str,
        typer.Option(
            "--eval",
            help="Capability suites to run after training, comma separated "
            "(python,brackets,indent,copy,digits).",
        ),
    ] = "",
    eval_samples: Annotated[
        int, typer.Option(help="With --eval: sampled completions per problem for pass@k.")
    ] = 0,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "scalelab",
    save_checkpoint: Annotated[bool, typer.Option(help="Log the weights to MLflow.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Train one GPT for an exact token budget and log it to MLflow."""
    from scalelab.train import TrainConfig, TrainingDiverged, check_no_repeats
    from scalelab.train import train as run_training

    flags = {
        "n_params_target": "--params",
        "tokens": "--tokens",
        "evals": "--eval",
        "eval_samples": "--eval-samples",
    }
    with user_input(flags=flags):
        if preset is None and params is None:
            raise UsageError("give --preset NAME or --params N (e.g. --params 3e5)")
        if mup != (mup_base_width is not None):
            raise UsageError(
                "--mup-base-width: give it with --mup, and only then (the d_model the learning "
                "rate is tuned at, e.g. --mup --mup-base-width 64)"
            )
        for flag, value in (("--tokens", tokens), ("--params", params), ("--lr", lr)):
            # int(1e400) is an OverflowError and a NaN fails range checks with a wrong reason.
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{flag} must be a finite number; got {value}")
        cfg = TrainConfig(
            preset=preset,
            n_params_target=params,
            tokens=int(tokens),
            variant=variant,
            corpus=corpus,
            tokenizer=tokenizer,
            data_order=data_order,
            repeat_data=repeat_data,
            context=context,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            schedule=schedule,
            seed=seed,
            val_every=int(val_every) if val_every else None,
            devices=int(devices) if devices.isdigit() else devices,
            num_nodes=num_nodes,
            strategy=strategy,
            accelerator=accelerator,
            precision=precision,
            compile=compile,
            gelu=gelu,
            parametrization="mup" if mup else "standard",
            mup_base_width=mup_base_width,
            evals=[name.strip() for name in evals.split(",") if name.strip()],
            eval_samples=eval_samples,
            experiment=experiment,
            save_checkpoint=save_checkpoint,
        )
        ws = common.workspace(workspace, tracking_uri)
        # Build the model config and data before Lightning starts, so bad sizes or
        # corpora fail here with a clear message.
        from scalelab.data import prepare

        data = prepare(cfg.corpus, cfg.tokenizer, cache_dir=ws.ensure().cache_dir)
        from scalelab.resources import check_resources

        check_resources(cfg, cfg.model_cfg(data.vocab_size))
        check_no_repeats(cfg.tokens, len(data.train), cfg)
    try:
        result = run_training(cfg, ws, enable_progress_bar=not json_out)
    except TrainingDiverged as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if not result.run_id:  # a non-zero rank of a multi-process run
        return
    if json_out:
        typer.echo(json.dumps(result.__dict__))
        return
    if result.tokens != cfg.tokens:
        typer.echo(_rounded_budget(cfg.tokens, result.tokens, cfg.batch_size * cfg.context))
    typer.echo(
        f"final val loss {result.loss:.4f} nats/token ({result.bpb:.4f} bits/byte) | "
        f"N={result.n_params:,} D={result.tokens:,} C={result.compute:.3g} | "
        f"{result.wall_time:.1f}s | MLflow run {result.run_id}"
    )


def _rounded_budget(asked: int, trained: int, per_step: int) -> str:
    """Why D differs from --tokens: the budget is trained in whole optimizer steps."""
    return (
        f"--tokens {asked:,} trained as D={trained:,}: whole steps of "
        f"{per_step:,} tokens (--batch-size x --context), {trained // per_step:,} steps"
    )


def corpus(
    corpus: Annotated[
        str, typer.Option(help="stdlib, stdlib-notests, python-all, or a path.")
    ] = "stdlib",
    tokenizer: Annotated[str, typer.Option(help="byte, or bpeN (e.g. bpe4096).")] = "byte",
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Build (or reuse) a tokenized corpus and print its hash, sizes and n-gram baselines."""
    from scalelab.data import prepare

    with user_input():
        ws = common.workspace(workspace, None).ensure()
        data = prepare(corpus, tokenizer, cache_dir=ws.cache_dir)
    info = data.describe()
    if json_out:
        typer.echo(json.dumps(info, default=str))
    else:
        for key, value in info.items():
            typer.echo(f"{key:>24}: {value}")
