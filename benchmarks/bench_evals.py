"""What the capability suites add to a trial: evaluation time over training time.

Trains the quickstart sweep's trials (``sweeps/quickstart.yaml``: its sizes, budgets and
search, one trial per cell) with every suite in ``eval:``, in a throwaway workspace, and prints
per trial the training wall time (``wall_time``: fit and final validation), the evaluation
time (``eval_time``) and their ratio; the issue's goal is a ratio under 10%.

    python benchmarks/bench_evals.py [--cells n10k-D2e+05-s0 ...] [--samples 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from scalelab.evals.suites import SUITES
from scalelab.results import tracking
from scalelab.sweep.spec import load_spec
from scalelab.sweep.trial import choices, pretrain_config
from scalelab.train import train
from scalelab.workspace import Workspace

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", help="cell keys (default: every cell)")
    parser.add_argument("--samples", type=int, default=0, help="eval_samples of each trial")
    args = parser.parse_args()
    tracking.quiet_logs()
    spec = load_spec(SPEC)
    spec = spec.model_copy(update={"eval": sorted(SUITES)})
    cells = [c for c in spec.cells() if not args.cells or c.key in args.cells]
    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.resolve(Path(home)).ensure()
        print(f"{'cell':<22} {'train s':>8} {'eval s':>7} {'ratio':>6}")
        for cell in cells:
            # The quickstart searches nothing: each parameter has one choice per cell.
            params = {k: choices(spec, cell, k)[0] for k in ("lr", "warmup", "batch_size")}
            params["batch_size"] = int(params["batch_size"])
            cfg = pretrain_config(spec, cell, 0, params)
            cfg = cfg.model_copy(update={"eval_samples": args.samples})
            result = train(cfg, ws, enable_progress_bar=False)
            metrics = tracking.client(ws).get_run(result.run_id).data.metrics
            ratio = metrics["eval_time"] / result.wall_time
            print(
                f"{cell.key:<22} {result.wall_time:8.1f} {metrics['eval_time']:7.1f} {ratio:6.1%}"
            )


if __name__ == "__main__":
    main()
