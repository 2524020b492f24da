"""AdamW's three implementations on this machine's CPU: the for-loop (torch's CPU default),
``foreach`` and ``fused``, timed on the parameters of scalelab GPTs.

Times ``optimizer.step()`` alone (gradients fixed and random), alternating the order of the
implementations every round so machine noise hits all of them alike, and prints the median
milliseconds per step and each one's speed relative to the for-loop. The choice it informs is
``scalelab.training.optim.adamw_implementation``.

    python benchmarks/bench_optim.py [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scalelab.model import GPT, GPTConfig

SIZES = {"n1m": (4, 144), "n10m": (10, 288)}  # (n_layer, d_model)
KERNELS = {"for-loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True),
           "fused": dict(fused=True)}  # fmt: skip


def step_ms(params: list[torch.nn.Parameter], kernel: dict[str, bool], steps: int) -> float:
    """Median milliseconds of one ``AdamW.step`` over ``steps`` steps after one warm-up."""
    optimizer = torch.optim.AdamW(params, lr=1e-4, **kernel)
    optimizer.step()  # allocate the moments outside the timing
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':>6} {'params':>11} " + " ".join(f"{k + ' ms':>12}" for k in KERNELS))
    for name, (n_layer, d_model) in SIZES.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=n_layer, n_head=d_model // 16, d_model=d_model))
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        times: dict[str, list[float]] = {k: [] for k in KERNELS}
        for round_ in range(args.rounds):
            order = list(KERNELS) if round_ % 2 == 0 else list(reversed(KERNELS))
            for kernel in order:
                times[kernel].append(step_ms(params, KERNELS[kernel], args.steps))
        medians = {k: statistics.median(v) for k, v in times.items()}
        cells = " ".join(
            f"{medians[k]:>6.2f} ({medians['for-loop'] / medians[k]:.2f}x)" for k in KERNELS
        )
        print(f"{name:>6} {sum(p.numel() for p in params):>11,} {cells}", flush=True)
    print("(x: speed relative to the for-loop; higher is faster)")


if __name__ == "__main__":
    main()
