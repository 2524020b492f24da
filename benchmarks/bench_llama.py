"""LLaMA-style against GPT-2 blocks: training-step throughput at equal parameters, side by side.

Both variants take the same shape (n_layer, n_head, d_model), where their non-embedding counts
differ by under 3% (SwiGLU's hidden width is 8/3·d_model rounded to a multiple of 8), and train
on the same batches with fused AdamW, alternating which goes first in each round so machine
noise hits both alike. Prints per shape both N, the median tokens/s of each, the median of the
per-round ratios llama/gpt2 (the issue's goal: within 10%, i.e. >= 0.90) and the same ratio
per non-embedding parameter.

    python benchmarks/bench_llama.py [--rounds 5] [--steps 15] [--warmup 3] [--sizes 4x128 4x256]

Measured on 2 shared cores (load 1-4, one torch thread, ``--rounds 5 --steps 8 --warmup 2``),
llama/gpt2: 0.907 at L=2 d=32, 0.884 at L=2 d=64, 0.866 at L=4 d=128 and 0.943 at L=4 d=256
(N 3,139,840 vs 3,159,552). The 10% goal holds at d=32 and d=256 and is missed by 1.6 and
3.4 points at d=64 and d=128, where elementwise work (RMSNorm's unfused ops, the rotation,
SwiGLU's gate) weighs more beside the matmuls than GPT-2's fused LayerNorm and GELU; the
ratio moved by about ±0.03 between repeated runs (0.877 to 0.920 at d=128). An earlier run
under load 6-16 with 3 rounds gave 1.066 (d=128) and 0.974 (d=256): on a busy machine only
many rounds tell.
"""

from __future__ import annotations

import statistics

import torch
from bench_gelu import (  # one timed training loop and command line for both benchmarks
    BATCH,
    CONTEXT,
    VOCAB,
    side_by_side_args,
    train_rate,
)

from scalelab.model import GPTConfig

VARIANTS = ("gpt2", "llama")


def main() -> None:
    args, sizes = side_by_side_args(__doc__.splitlines()[0], rounds=5, steps=15)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU; "
        f"batch {BATCH} x context {CONTEXT}, vocabulary {VOCAB}"
    )
    print(
        f"{'model':>12} {'N gpt2':>10} {'N llama':>10} {'gpt2 tok/s':>11} {'llama tok/s':>12} "
        f"{'llama/gpt2':>11} {'per N':>7}"
    )
    for n_layer, d_model in sizes:
        configs = {
            v: GPTConfig(
                variant=v,
                n_layer=n_layer,
                n_head=d_model // 32,
                d_model=d_model,
                context=CONTEXT,
                vocab_size=VOCAB,
            )
            for v in VARIANTS
        }
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for round_ in range(args.rounds):
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                rates[variant].append(train_rate(configs[variant], args.steps, args.warmup)[0])
        ratio = statistics.median(
            ll / g for ll, g in zip(rates["llama"], rates["gpt2"], strict=True)
        )
        n = {v: cfg.n_params for v, cfg in configs.items()}
        print(
            f"{f'L={n_layer} d={d_model}':>12} {n['gpt2']:>10,} {n['llama']:>10,} "
            f"{statistics.median(rates['gpt2']):>11,.0f} "
            f"{statistics.median(rates['llama']):>12,.0f} {ratio:>11.3f} "
            f"{ratio * n['llama'] / n['gpt2']:>7.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
