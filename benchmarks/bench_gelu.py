"""The GELU form: training-step throughput and fidelity of GPT-2's tanh approximation against
the exact (erf) GELU, side by side at the same shapes.

Each round trains both forms from the same initial weights on the same batches (forward,
backward, fused AdamW step, as ``scalelab.training.optim`` does), alternating which goes
first so machine noise hits both alike, and records tokens/s. Prints the largest pointwise gap
between the two forms, then per shape the median tokens/s of each form, the median of the
per-round ratios tanh/exact, and the training losses after the same steps.

    python benchmarks/bench_gelu.py [--rounds 7] [--steps 20] [--warmup 3] [--sizes 4x128 4x256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scalelab.model import GPT, GPTConfig

SIZES = [(4, 128), (4, 256)]  # (n_layer, d_model); the second is bench_train.py's middle size
CONTEXT, BATCH, VOCAB = 256, 16, 256


def train_rate(cfg: GPTConfig, steps: int, warm: int, seed: int = 0) -> tuple[float, float]:
    """Tokens/s over ``steps - warm`` timed steps and the mean loss of the last five steps."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as in training
    generator = torch.Generator().manual_seed(seed)
    batches = torch.randint(0, VOCAB, (steps, BATCH, CONTEXT + 1), generator=generator)
    losses = []
    for step in range(steps):
        if step == warm:
            start = time.perf_counter()
        x, y = batches[step, :, :-1], batches[step, :, 1:]
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    rate = (steps - warm) * BATCH * CONTEXT / (time.perf_counter() - start)
    return rate, statistics.fmean(losses[-5:])


def side_by_side_args(
    description: str, rounds: int, steps: int
) -> tuple[argparse.Namespace, list[tuple[int, int]]]:
    """The command line of a side-by-side training benchmark: rounds, timed steps, warm-up
    steps and (n_layer, d_model) sizes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--sizes", nargs="+", default=[f"{n}x{d}" for n, d in SIZES], help="LxD, e.g. 4x128"
    )
    args = parser.parse_args()
    return args, [(int(n), int(d)) for n, d in (s.split("x") for s in args.sizes)]


def main() -> None:
    args, sizes = side_by_side_args(__doc__.splitlines()[0], rounds=7, steps=20)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")

    x = torch.linspace(-10, 10, 200_001)
    gap = (torch.nn.functional.gelu(x, approximate="tanh") - torch.nn.functional.gelu(x)).abs()
    print(f"largest |tanh - exact| on [-10, 10]: {gap.max().item():.2e}")
    header = (
        f"{'model':>12} {'tanh tok/s':>11} {'exact tok/s':>12} {'tanh/exact':>11} "
        f"{'loss tanh':>10} {'loss exact':>11}"
    )
    print(header)
    for n_layer, d_model in sizes:
        rates: dict[str, list[float]] = {"tanh": [], "exact": []}
        loss: dict[str, float] = {}
        for round_ in range(args.rounds):
            order = ("tanh", "exact") if round_ % 2 == 0 else ("exact", "tanh")
            for form in order:
                cfg = GPTConfig(
                    n_layer=n_layer,
                    n_head=d_model // 32,
                    d_model=d_model,
                    context=CONTEXT,
                    vocab_size=VOCAB,
                    gelu=form,
                )
                rate, loss[form] = train_rate(cfg, args.steps, args.warmup)
                rates[form].append(rate)
        ratios = [t / e for t, e in zip(rates["tanh"], rates["exact"], strict=True)]
        print(
            f"{f'L={n_layer} d={d_model}':>12} {statistics.median(rates['tanh']):>11,.0f} "
            f"{statistics.median(rates['exact']):>12,.0f} {statistics.median(ratios):>11.3f} "
            f"{loss['tanh']:>10.4f} {loss['exact']:>11.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
