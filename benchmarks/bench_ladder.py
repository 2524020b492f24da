"""A small ladder trained one run at a time and in groups, side by side, against a 4.7M model.

The same ladder (6 sizes from ~1k to ~30k non-embedding parameters × 4 token budgets) is
trained twice in one process, each run recorded in MLflow as a sweep records it:

- one at a time: ``scalelab.train.train`` per run (Lightning, one model);
- grouped: ``scalelab.training.grouped_run.train_group`` per size (its 4 budgets stacked).

Reported: end-to-end wall time of each ladder and their ratio; training FLOP/s of each
(``6·N·D`` and the full count with attention and the unembedding, ``GPTConfig.flops_per_token``);
the same for one 4.7M-parameter run trained alone in the same process, and the ladder's FLOP/s
as a fraction of it; the largest difference between a run's loss in the two ladders. A last
row times the grouped ladder's arithmetic alone (its stacked forward and backward passes and
validations, nothing else): the most any grouping can reach with these kernels. Rounds
alternate the four so machine noise hits all alike; medians over rounds.

    python benchmarks/bench_ladder.py [--rounds 1] [--steps 10 20 40 80] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scalelab.resources import keep_freed_memory
from scalelab.train import TrainConfig, budget, train
from scalelab.training.grouped_run import train_group
from scalelab.workspace import Workspace

SIZES = [1e3, 2e3, 4e3, 8e3, 1.5e4, 3e4]  # target non-embedding N
REFERENCE = dict(n_params_target=4.7e6)
CONTEXT, BATCH = 128, 16
CORPUS = "stdlib-notests"


def configs(steps: list[int], experiment: str) -> list[TrainConfig]:
    return [
        TrainConfig(
            n_params_target=n,
            context=CONTEXT,
            batch_size=BATCH,
            tokens=s * CONTEXT * BATCH,
            lr=3e-3,
            seed=i,
            corpus=CORPUS,
            val_tokens=CONTEXT * 64,
            experiment=experiment,
            run_name=f"N{n:g}-S{s}",
        )
        for i, n in enumerate(SIZES)
        for s in steps
    ]


def flops(cfgs: list[TrainConfig], vocab: int) -> tuple[float, float]:
    """(6·N·D, full count) of training every config."""
    six_nd = full = 0.0
    for cfg in cfgs:
        model, tokens = cfg.model_cfg(vocab), budget(cfg)[1]
        six_nd += 6.0 * model.n_params_nonembedding * tokens
        full += model.flops_per_token(include_embedding=True) * tokens
    return six_nd, full


def one_at_a_time(cfgs: list[TrainConfig], ws: Workspace) -> tuple[float, float, list[float]]:
    """(end-to-end seconds, training seconds, losses)."""
    started = time.perf_counter()
    results = [train(cfg, ws, enable_progress_bar=False) for cfg in cfgs]
    wall = time.perf_counter() - started
    return wall, sum(r.wall_time for r in results), [r.loss for r in results]


def grouped(cfgs: list[TrainConfig], ws: Workspace) -> tuple[float, float, list[float]]:
    """(end-to-end seconds, training seconds, losses): one group per size."""
    started = time.perf_counter()
    losses: dict[str, float] = {}
    train_seconds = 0.0
    for n in SIZES:
        members = [c for c in cfgs if c.n_params_target == n]
        results = train_group(members, ws)
        for cfg, result in zip(members, results, strict=True):
            assert not isinstance(result, BaseException), result
            losses[cfg.run_name or ""] = result.loss
        train_seconds += max(r.wall_time for r in results)  # the group trains them at once
    wall = time.perf_counter() - started
    return wall, train_seconds, [losses[c.run_name or ""] for c in cfgs]


def compute_only(cfgs: list[TrainConfig], vocab: int) -> float:
    """Seconds of the grouped ladder's unavoidable arithmetic: each group's stacked forward
    and backward passes and its validation forwards, with the members leaving as they finish,
    as ``GroupTrainer`` runs them, on random tokens; no optimizer, data, logging or MLflow."""
    from scalelab.model import GPT
    from scalelab.training.grouped import VAL_BATCH
    from scalelab.training.stacked import StackedGPT

    seconds = 0.0
    for n in SIZES:
        members = [c for c in cfgs if c.n_params_target == n]
        model_cfg = members[0].model_cfg(vocab)
        plans = [budget(c) for c in members]  # (steps, tokens, validate every)
        stack = StackedGPT.from_models([GPT(model_cfg) for _ in members])
        windows = members[0].val_tokens // CONTEXT
        started = time.perf_counter()
        rows = list(range(len(members)))  # the member of each stack row
        for step in range(1, max(p[0] for p in plans) + 1):
            active = [i for i in rows if plans[i][0] >= step]
            if active != rows:  # members left: a smaller stack, as GroupTrainer._drop makes
                keep = [rows.index(i) for i in active]
                stack.params = {
                    k: v.detach()[keep].requires_grad_(True) for k, v in stack.params.items()
                }
                rows = active
            x = torch.randint(vocab, (len(rows), BATCH, CONTEXT))
            stack.losses(x, x).sum().backward()
            due = [r for r, i in enumerate(rows) if step % plans[i][2] == 0 or step == plans[i][0]]
            if due:
                val = StackedGPT(model_cfg, {k: v.detach()[due] for k, v in stack.params.items()})
                with torch.no_grad():
                    for first in range(0, windows, VAL_BATCH):
                        chunk = min(VAL_BATCH, windows - first)
                        y = torch.randint(vocab, (len(due), chunk, CONTEXT))
                        val.losses(y, y)
            for p in stack.params.values():
                p.grad = None
        seconds += time.perf_counter() - started
    return seconds


def reference(steps: int, ws: Workspace) -> tuple[float, float, float]:
    """(training seconds, 6·N·D, full FLOPs) of the 4.7M-parameter run."""
    cfg = TrainConfig(
        **REFERENCE,
        context=CONTEXT,
        batch_size=BATCH,
        tokens=steps * CONTEXT * BATCH,
        corpus=CORPUS,
        val_tokens=CONTEXT * 64,
        experiment="reference",
    )
    result = train(cfg, ws, enable_progress_bar=False)
    six_nd, full = flops([cfg], 256)
    return result.wall_time, six_nd, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--reference-steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every sweep worker does
    from scalelab.sweep.worker import quiet_training_logs

    quiet_training_logs()
    print(
        f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs; "
        f"{args.threads} torch thread(s)"
    )
    rows: dict[str, list[float]] = {
        k: [] for k in ("alone", "grouped", "ref", "alone_t", "grouped_t", "compute")
    }
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(Path(tmp)).ensure()
        cfgs = configs(args.steps, "ladder")
        six_nd, full = flops(cfgs, 256)
        for r in range(args.rounds):
            wall_a, train_a, loss_a = one_at_a_time(cfgs, ws)
            wall_g, train_g, loss_g = grouped(cfgs, ws)
            ref_s, ref_6nd, ref_full = reference(args.reference_steps, ws)
            rows["compute"].append(compute_only(cfgs, 256))
            worst = max(worst, max(abs(a - b) for a, b in zip(loss_a, loss_g, strict=True)))
            rows["alone"].append(wall_a)
            rows["grouped"].append(wall_g)
            rows["alone_t"].append(train_a)
            rows["grouped_t"].append(train_g)
            rows["ref"].append(ref_s)
            print(
                f"round {r + 1}: one at a time {wall_a:.1f}s (training {train_a:.1f}s), "
                f"grouped {wall_g:.1f}s (training {train_g:.1f}s), 4.7M {ref_s:.1f}s, "
                f"grouped compute only {rows['compute'][-1]:.1f}s"
            )
    med = {k: statistics.median(v) for k, v in rows.items()}
    ref_rate = ref_full / med["ref"]
    print(
        f"\nladder: {len(SIZES)} sizes x {len(args.steps)} budgets ({args.steps} steps of "
        f"{CONTEXT * BATCH} tokens), {six_nd:.3g} FLOPs 6ND, {full:.3g} full; medians of "
        f"{args.rounds} round(s)"
    )
    print(
        f"{'':28}{'wall s':>9}{'train s':>9}{'FLOP/s 6ND':>12}{'FLOP/s full':>13}"
        f"{'full vs 4.7M':>14}"
    )
    for name, wall, trained in (
        ("one at a time", med["alone"], med["alone_t"]),
        ("grouped", med["grouped"], med["grouped_t"]),
    ):
        print(
            f"{name:28}{wall:9.1f}{trained:9.1f}{six_nd / wall:12.3g}{full / wall:13.3g}"
            f"{full / wall / ref_rate:14.1%}"
        )
    print(
        f"{'grouped, compute only':28}{'':9}{med['compute']:9.1f}{six_nd / med['compute']:12.3g}"
        f"{full / med['compute']:13.3g}{full / med['compute'] / ref_rate:14.1%}"
    )
    print(
        f"{'4.7M model (training only)':28}{'':9}{med['ref']:9.1f}{ref_6nd / med['ref']:12.3g}"
        f"{ref_rate:13.3g}{1:14.1%}"
    )
    print(
        f"grouped vs one at a time, end to end: {med['alone'] / med['grouped']:.2f}x; "
        f"training only: {med['alone_t'] / med['grouped_t']:.2f}x"
    )
    print(f"largest loss difference between the two ladders: {worst:.2e}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
