"""Training throughput: Lightning module vs a plain PyTorch loop, and MFU against this machine.

Measures, in one process and alternating so that machine noise hits all of them alike:
the fp32 matmul peak (GFLOP/s), and for three model sizes the steady-state training throughput
(tokens/s) of (a) scalelab's LightningModule under the same Trainer every run uses (no logger)
and (b) a plain loop with the same model, optimizer, schedule, clipping and batches. Prints
medians over rounds, the Lightning/plain ratio and MFU = analytic model FLOPs/s over the peak.

    python benchmarks/bench_train.py [--rounds 5] [--steps 30] [--warmup 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from scalelab.data import RandomWindows, prepare
from scalelab.model import GPT, GPTConfig
from scalelab.train import TrainConfig
from scalelab.training.optim import adamw_with_schedule

SIZES = [  # (n_layer, d_model): the middle one is the MFU target in the issue
    (4, 128),
    (4, 256),
    (4, 384),
]
CONTEXT, BATCH = 256, 16


def matmul_peak(n: int = 1024, reps: int = 20) -> float:
    """fp32 GFLOP/s of an n×n matmul, best of ``reps`` after a warm-up."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def plain_loop(model_cfg: GPTConfig, cfg: TrainConfig, train_tokens: Any, steps: int, warm: int):
    """Tokens/s of a hand-written loop doing exactly what the LightningModule does."""
    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    params = list(model.parameters())
    optimizer, schedule = adamw_with_schedule(model, cfg, steps, (cfg.beta1, cfg.beta2))
    batches = iter(RandomWindows(train_tokens, cfg.context, cfg.batch_size, cfg.seed))
    for step in range(steps):
        if step == warm:
            start = time.perf_counter()
        x, y = next(batches)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return (steps - warm) * cfg.batch_size * cfg.context / (time.perf_counter() - start)


def lightning_loop(model_cfg: GPTConfig, cfg: TrainConfig, data: Any, steps: int, warm: int):
    """Tokens/s of ``scalelab.train``'s module and Trainer, timed over the same steps."""
    import lightning as L

    from scalelab.training.language_model import LanguageModel, pretraining_trainer

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # noqa: ANN001
            if batch_idx == warm:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # noqa: ANN001
            self.end = time.perf_counter()

    timer = StepTimer()
    L.seed_everything(cfg.seed, verbose=False)
    module = LanguageModel(model_cfg, cfg, data, steps)
    trainer = pretraining_trainer(
        cfg, steps, steps + 1, logger=False, callbacks=[timer], enable_progress_bar=False
    )
    trainer.fit(module)
    return (steps - warm) * cfg.batch_size * cfg.context / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    data = prepare("stdlib", "byte")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    peaks: list[float] = []
    results: dict[tuple[int, int], dict[str, list[float]]] = {
        s: {"lightning": [], "plain": []} for s in SIZES
    }
    for round_ in range(args.rounds):
        for n_layer, d_model in SIZES:
            model_cfg = GPTConfig(
                n_layer=n_layer, n_head=d_model // 32, d_model=d_model, context=CONTEXT
            )
            cfg = TrainConfig(
                preset="n10k", context=CONTEXT, batch_size=BATCH, tokens=10**9, accelerator="cpu"
            )
            peaks.append(matmul_peak())
            # Alternate the order each round so neither side always runs on a warmer machine.
            order = ("lightning", "plain") if round_ % 2 == 0 else ("plain", "lightning")
            for which in order:
                if which == "plain":
                    rate = plain_loop(model_cfg, cfg, data.train, args.steps, args.warmup)
                else:
                    rate = lightning_loop(model_cfg, cfg, data, args.steps, args.warmup)
                results[(n_layer, d_model)][which].append(rate)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    peak = statistics.median(peaks)
    print(f"\nfp32 matmul peak: median {peak:.0f} GFLOP/s over {len(peaks)} measurements")
    header = (
        f"{'model':>16} {'N non-emb':>10} {'Lightning tok/s':>16} {'plain tok/s':>12} "
        f"{'L/plain':>8} {'MFU L':>6} {'MFU plain':>9}"
    )
    print(header)
    for (n_layer, d_model), rates in results.items():
        cfg = GPTConfig(n_layer=n_layer, n_head=d_model // 32, d_model=d_model, context=CONTEXT)
        flops = cfg.flops_per_token(include_embedding=True)
        lit, plain = statistics.median(rates["lightning"]), statistics.median(rates["plain"])
        ratios = [a / b for a, b in zip(rates["lightning"], rates["plain"], strict=True)]
        print(
            f"{f'L={n_layer} d={d_model}':>16} {cfg.n_params_nonembedding:>10,} {lit:>16,.0f} "
            f"{plain:>12,.0f} {statistics.median(ratios):>8.3f} "
            f"{lit * flops / peak / 1e9:>6.1%} {plain * flops / peak / 1e9:>9.1%}"
        )
    print("(MFU: analytic FLOPs incl. attention and unembedding / median matmul peak)")


if __name__ == "__main__":
    main()
