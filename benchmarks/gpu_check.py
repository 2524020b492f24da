"""GPU check: the GPU path measured in one command, in under 8 minutes on one H100.

    python benchmarks/gpu_check.py             # on the GPU: a table, benchmarks/gpu-check.json
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check.json   # CPU, toy, seconds

What it measures, in order, each phase with a share of ``--budget-s`` (a phase that fails
records its error and the rest go on; one that would overrun is skipped with the reason):

1. the chip's dense bf16 matmul peak, measured here (the MFU denominator);
2. for three sizes (~10M, ~60M, ~300M non-embedding parameters): tokens/s of scalelab's
   LightningModule under its one Trainer, of a plain loop doing the same steps, and of that
   loop with ``compile_blocks``; MFU = analytic FLOPs/s over the peak; Lightning/plain; the
   compile speed-up;
3. bf16-mixed against fp32: validation loss after the same steps, same seed and batches;
4. FSDP through Lightning on one GPU (a few steps; finite losses);
5. a mini-study: an IsoFLOP ladder (three budgets half a decade apart, four sizes each), a
   forecast of a target 100x-1000x beyond it (``scalelab.forecast`` selects the law and sizes
   the interval), written to the JSON *before* the target trains, then the outcome.

It runs on a bare GPU machine (Python 3.12, torch, Lightning, numpy, scipy, pandas,
tokenizers, pyyaml, rich): no MLflow, Optuna, pydantic or plotly, and no network. So it uses
a plain dataclass in place of ``TrainConfig`` and imports only ``scalelab.model``,
``scalelab.data``, ``scalelab.forecast`` and the Lightning parts of ``scalelab.training``; the
corpus is this interpreter's own Python files (``python-all``). ``--dry-run`` runs every phase
on the CPU at toy sizes (the numbers mean nothing; CI checks the code path and the imports).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from scalelab.model import GPT, GPTConfig, config_for_params

HERE = Path(__file__).resolve().parent


@dataclass
class Settings:
    """The fields of ``TrainConfig`` that ``LanguageModel`` and its Trainer read (pydantic-free)."""

    batch_size: int
    context: int
    lr: float = 1e-3
    precision: str = "bf16-mixed"
    compile: bool = False
    accelerator: str = "gpu"
    strategy: Any = "auto"
    seed: int = 0
    data_order: str = "random"
    val_tokens: int = 65_536
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    devices: int = 1
    num_nodes: int = 1


@dataclass
class Plan:
    """Sizes, steps and budgets of one check: the GPU plan, or the toy CPU one of --dry-run."""

    device: str
    sizes: dict[str, tuple[int, int]]  # name -> (n_layer, d_model); head dim 64 (32 dry)
    head_dim: int
    context: int
    batch: int
    warm: int  # untimed steps (compilation happens here)
    timed: int
    precision_steps: int
    study_context: int
    study_batch: int
    ladder_scales: tuple[float, ...]  # ladder sizes, as multiples of the compute-optimal guess
    resamples: int  # bootstrap resamples of the forecast's interval
    ladder_max: float  # largest ladder budget, FLOPs counted in full
    factors: tuple[float, ...]  # target / ladder_max, largest that fits first
    corpus: str
    budget_s: float
    compile_backend: str = "inductor"

    @classmethod
    def gpu(cls, budget_s: float, corpus: str) -> Plan:
        sizes = {"10M": (6, 384), "60M": (12, 640), "300M": (24, 1024)}
        return cls("cuda", sizes, 64, 1024, 32, 5, 15, 300, 256, 64, (0.25, 0.5, 1.0, 2.0), 200,
                   3e14, (1000, 300, 100), corpus, budget_s)  # fmt: skip

    @classmethod
    def dry(cls, budget_s: float, corpus: str) -> Plan:
        # Dynamo-only compilation ("eager" backend): inductor's C++ build takes minutes on CPU.
        sizes = {"tiny-a": (1, 32), "tiny-b": (2, 32), "tiny-c": (2, 64)}
        return cls("cpu", sizes, 16, 32, 4, 1, 2, 4, 32, 4, (0.5, 1.0, 2.0), 20, 1e9, (10,),
                   corpus, budget_s, "eager")  # fmt: skip


@dataclass
class Clock:
    """The run's deadline; phases ask it whether they still fit."""

    budget_s: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(plan: Plan) -> dict[str, float]:
    """Dense matmul TFLOP/s, best of 10 after a warm-up: bf16 n=8192 on CUDA, fp32 on CPU."""
    n, dtype = (8192, torch.bfloat16) if plan.device == "cuda" else (256, torch.float32)
    a = torch.randn(n, n, device=plan.device, dtype=dtype)
    b = torch.randn(n, n, device=plan.device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(10):
        sync(plan.device)
        start = time.perf_counter()
        a @ b
        sync(plan.device)
        best = min(best, time.perf_counter() - start)
    return {"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / best / 1e12}


def model_config(plan: Plan, n_layer: int, d_model: int, vocab: int) -> GPTConfig:
    return GPTConfig(
        n_layer=n_layer,
        n_head=d_model // plan.head_dim,
        d_model=d_model,
        context=plan.context,
        vocab_size=vocab,
    )


def autocast(plan: Plan, precision: str) -> contextlib.AbstractContextManager[Any]:
    """What Lightning's bf16-mixed does around a step; nothing for 32-true."""
    if precision == "bf16-mixed":
        return torch.autocast(plan.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fused_allowed(settings: Settings) -> bool:
    """As ``ScheduledModule.fused_adamw_allowed``: Lightning refuses fused AdamW with clipping
    under mixed precision, so the plain loop uses the same implementation as Lightning."""
    return not (settings.precision.endswith("-mixed") and settings.grad_clip)


def plain_loop(
    model_cfg: GPTConfig, settings: Settings, data: Any, plan: Plan, steps: int, warm: int
) -> tuple[float, GPT]:
    """Tokens/s of a hand-written loop doing what ``LanguageModel`` does: same model, AdamW
    and schedule, clipping, autocast and batches; compiled blocks if ``settings.compile``."""
    from scalelab.data import RandomWindows
    from scalelab.training.optim import adamw_with_schedule

    torch.manual_seed(settings.seed)
    model = GPT(model_cfg).to(plan.device)
    if settings.compile:
        model.compile_blocks(backend=plan.compile_backend)
    optimizer, schedule = adamw_with_schedule(
        model, settings, steps, (settings.beta1, settings.beta2), fused=fused_allowed(settings)
    )
    batches = iter(RandomWindows(data.train, settings.context, settings.batch_size, settings.seed))
    params = list(model.parameters())
    start = time.perf_counter()
    for step in range(steps):
        if step == warm:
            sync(plan.device)
            start = time.perf_counter()
        x, y = (t.to(plan.device, non_blocking=True) for t in next(batches))
        with autocast(plan, settings.precision):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    sync(plan.device)
    rate = (steps - warm) * settings.batch_size * settings.context / (time.perf_counter() - start)
    return rate, model


def lightning_loop(
    model_cfg: GPTConfig, settings: Settings, data: Any, plan: Plan, steps: int, warm: int
) -> float:
    """Tokens/s of ``LanguageModel`` under the Trainer every run uses, timed over the same
    steps as ``plain_loop`` (the clock starts at batch ``warm``)."""
    import lightning as L

    from scalelab.training.language_model import LanguageModel, pretraining_trainer

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            if batch_idx == warm:
                sync(plan.device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if batch_idx == steps - 1:
                sync(plan.device)
                self.end = time.perf_counter()

    timer = StepTimer()
    L.seed_everything(settings.seed, verbose=False)
    module = LanguageModel(model_cfg, settings, data, steps)
    trainer = pretraining_trainer(
        settings, steps, steps + 1, logger=False, callbacks=[timer], enable_progress_bar=False
    )
    trainer.fit(module)
    return (steps - warm) * settings.batch_size * settings.context / (timer.end - timer.start)


def measure_size(plan: Plan, name: str, data: Any, peak: float) -> dict[str, Any]:
    """Eager Lightning, eager plain and compiled plain loops at one size, with their MFU."""
    n_layer, d_model = plan.sizes[name]
    model_cfg = model_config(plan, n_layer, d_model, data.vocab_size)
    precision = "bf16-mixed" if plan.device == "cuda" else "32-true"
    base = Settings(plan.batch, plan.context, precision=precision, accelerator=plan.device)
    base = replace(base, accelerator="gpu" if plan.device == "cuda" else "cpu")
    steps = plan.warm + plan.timed
    plain, _ = plain_loop(model_cfg, base, data, plan, steps, plan.warm)
    lightning = lightning_loop(model_cfg, base, data, plan, steps, plan.warm)
    torch._dynamo.reset()  # each size compiles afresh, not against another size's cache limit
    started = time.perf_counter()
    compiled, _ = plain_loop(model_cfg, replace(base, compile=True), data, plan, steps, plan.warm)
    flops = model_cfg.flops_per_token(include_embedding=True)
    rates = {"lightning": lightning, "plain": plain, "compiled": compiled}
    return {
        "size": name,
        "n_params": model_cfg.n_params_nonembedding,
        "shape": f"L={n_layer} d={d_model} h={model_cfg.n_head} T={plan.context} B={plan.batch}",
        "precision": precision,
        "tokens_per_s": rates,
        "mfu": {k: r * flops / (peak * 1e12) for k, r in rates.items()},
        "lightning_over_plain": lightning / plain,
        "compile_speedup": compiled / plain,
        "compiled_wall_s": time.perf_counter() - started,  # compilation included
    }


def val_loss(model: GPT, data: Any, plan: Plan, precision: str, context: int) -> float:
    """Mean loss on the fixed validation windows (``val_windows``), under ``precision``."""
    from scalelab.data import val_windows

    windows = val_windows(data.val, context, 64 * context).to(plan.device)
    model.eval()
    with torch.no_grad(), autocast(plan, precision):
        losses = [model(w[:, :-1], w[:, 1:])[1].float() for w in windows.split(16)]
    model.train()
    return float(torch.stack(losses).mean())


def precision_check(plan: Plan, data: Any) -> dict[str, Any]:
    """bf16-mixed against fp32 (TF32 off): validation loss after the same steps."""
    name = next(iter(plan.sizes))
    model_cfg = model_config(plan, *plan.sizes[name], data.vocab_size)
    accelerator = "gpu" if plan.device == "cuda" else "cpu"
    out: dict[str, Any] = {"size": name, "steps": plan.precision_steps}
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as Lightning's 32-true
    for precision in ("32-true", "bf16-mixed"):
        settings = Settings(plan.batch, plan.context, precision=precision, accelerator=accelerator)
        _, model = plain_loop(model_cfg, settings, data, plan, plan.precision_steps, 0)
        out[precision] = val_loss(model, data, plan, precision, plan.context)
    out["relative_gap"] = out["bf16-mixed"] / out["32-true"] - 1
    return out


def fsdp_check(plan: Plan, data: Any) -> dict[str, Any]:
    """A few steps of ``LanguageModel`` under Lightning's FSDPStrategy on one GPU."""
    if plan.device != "cuda":
        return {"skipped": "FSDP needs a CUDA GPU: Lightning's FSDPStrategy refuses the CPU"}
    from lightning.pytorch.strategies import FSDPStrategy

    name = next(iter(plan.sizes))
    model_cfg = model_config(plan, *plan.sizes[name], data.vocab_size)
    settings = Settings(plan.batch, plan.context, strategy=FSDPStrategy())
    rate = lightning_loop(model_cfg, settings, data, plan, 10, 3)
    return {"size": name, "tokens_per_s": rate, "ok": True}


# --- The mini-study: an IsoFLOP ladder, a forecast, then the target ---------------------------


def study_lr(d_model: int) -> float:
    """Peak learning rate 3e-3 at d_model 128 (scalelab's default for its small presets),
    scaled as 1/width above it (muP's rule for Adam on hidden matrices), floor 3e-4. One rule
    for every run, ladder and target, since the check has no time to tune per cell."""
    return max(3e-4, min(3e-3, 3e-3 * 128 / d_model))


def study_run(plan: Plan, data: Any, n_params: float, budget: float) -> dict[str, Any]:
    """Train the size-rule model nearest ``n_params`` for ``budget`` FLOPs (counted in full:
    attention and unembedding) and return its row in the project's vocabulary."""
    model_cfg = config_for_params(n_params, context=plan.study_context, vocab_size=data.vocab_size)
    per_token = model_cfg.flops_per_token(include_embedding=True)
    tokens_per_step = plan.study_batch * plan.study_context
    steps = max(10, round(budget / per_token / tokens_per_step))
    precision = "bf16-mixed" if plan.device == "cuda" else "32-true"
    settings = Settings(
        plan.study_batch, plan.study_context, lr=study_lr(model_cfg.d_model), precision=precision
    )
    started = time.perf_counter()
    _, model = plain_loop(model_cfg, settings, data, plan, steps, 0)
    loss = val_loss(model, data, plan, precision, plan.study_context)
    wall = time.perf_counter() - started
    tokens = steps * tokens_per_step
    return {
        "budget": budget,
        "n_params": model_cfg.n_params_nonembedding,
        "n_params_total": model_cfg.n_params_total,
        "shape": f"L={model_cfg.n_layer} d={model_cfg.d_model}",
        "tokens": tokens,
        "compute": 6.0 * model_cfg.n_params_nonembedding * tokens,
        "compute_full": per_token * tokens,
        "lr": settings.lr,
        "loss": loss,
        "epochs": tokens / len(data.train),
        "wall_s": wall,
        "flops_per_s": per_token * tokens / wall,
    }


def optimal_params(budget: float, frontier: list[tuple[float, float]] | None = None) -> float:
    """Compute-optimal N for a budget: a power law through the ladder's best sizes when there
    are two budgets or more, else Hoffmann et al.'s 20 tokens per parameter (C = 120·N²)."""
    rule = math.sqrt(budget / 120)
    if frontier and len({c for c, _ in frontier}) >= 2:
        import numpy as np

        log_c, log_n = np.log([c for c, _ in frontier]), np.log([n for _, n in frontier])
        slope, intercept = np.polyfit(log_c, log_n, 1)
        # Three noisy budgets can give any slope: stay within 4x of the rule either way.
        fitted = math.exp(intercept + slope * math.log(budget))
        return min(4 * rule, max(rule / 4, fitted))
    return rule


def ladder(plan: Plan, data: Any, clock: Clock, ladder_max: float) -> list[dict[str, Any]]:
    """Three budgets half a decade apart, sizes around the compute-optimal guess at each."""
    rows = []
    for budget in (ladder_max / 10, ladder_max / math.sqrt(10), ladder_max):
        for scale in plan.ladder_scales:
            if clock.left() < 30:
                raise TimeoutError(f"ladder stopped at budget {budget:.2g}: time is up")
            row = study_run(plan, data, optimal_params(budget) * scale, budget)
            rows.append(row | {"cell": f"C{budget:.2g}-N{row['n_params']}"})
    return rows


def plan_target(plan: Plan, rows: list[dict[str, Any]], data: Any, left_s: float) -> dict:
    """The largest target (a factor in ``plan.factors`` of the ladder's top budget) whose
    tokens fit the corpus and whose time, at the largest ladder run's FLOP rate, fits."""
    best = {}
    for row in rows:
        if row["budget"] not in best or row["loss"] < best[row["budget"]]["loss"]:
            best[row["budget"]] = row
    frontier = [(b, r["n_params"]) for b, r in best.items()]
    top, rate = max(best), max(r["flops_per_s"] for r in rows)
    refused = []
    for factor in plan.factors:
        budget = factor * top
        model_cfg = config_for_params(
            optimal_params(budget, frontier), context=plan.study_context, vocab_size=data.vocab_size
        )
        tokens = budget / model_cfg.flops_per_token(include_embedding=True)
        seconds = budget / rate
        if tokens <= len(data.train) and seconds <= left_s:
            return {"factor": factor, "budget": budget, "n_params": model_cfg.n_params,
                    "estimated_s": seconds, "refused": refused}  # fmt: skip
        refused.append(f"{factor}x: {tokens:.3g} tokens, ~{seconds:.0f}s (have {left_s:.0f}s)")
    raise TimeoutError("no target fits: " + "; ".join(refused))


def forecast_target(
    rows: list[dict[str, Any]], target: dict, unigram: float, resamples: int
) -> dict:
    """``scalelab.forecast``'s forecast of the target from the ladder alone."""
    import pandas as pd

    from scalelab.forecast.forecast import cell_table, forecast, select_law

    cells = cell_table(pd.DataFrame(rows).assign(unigram=unigram))
    selection = select_law(cells)
    return forecast(cells, target, selection, n_resamples=resamples).to_dict()


def mini_study(plan: Plan, data: Any, clock: Clock, save: Callable[[dict], None]) -> dict:
    """Ladder, forecast (saved before the target trains), target, outcome."""
    tokens_cap = 0.3 * len(data.train) ** 2  # 6·N·D at 20 tokens/parameter with D = the split
    ladder_max = min(plan.ladder_max, tokens_cap / min(plan.factors))
    study: dict[str, Any] = {"ladder_max": ladder_max, "corpus_tokens": len(data.train)}
    study["ladder"] = rows = ladder(plan, data, clock, ladder_max)
    study["target_plan"] = target = plan_target(plan, rows, data, clock.left() - 20)
    model_cfg = config_for_params(
        target["n_params"], context=plan.study_context, vocab_size=data.vocab_size
    )
    tokens = target["budget"] / model_cfg.flops_per_token(include_embedding=True)
    spec = {
        "n_params": model_cfg.n_params_nonembedding,
        "n_params_total": model_cfg.n_params_total,
        "tokens": tokens,
        "compute": 6.0 * model_cfg.n_params_nonembedding * tokens,
        "compute_full": target["budget"],
    }
    started = time.perf_counter()
    study["forecast"] = forecast_target(rows, spec, data.baselines["unigram"], plan.resamples)
    study["forecast_s"] = time.perf_counter() - started
    study["forecast_recorded_at_s"] = clock.budget_s - clock.left()
    save(study)  # on disk before the target trains: the forecast cannot see the outcome
    outcome = study_run(plan, data, target["n_params"], target["budget"])
    predicted = study["forecast"]
    study["outcome"] = outcome | {
        "error": outcome["loss"] / predicted["loss"] - 1,
        "inside_interval": predicted["lo"] <= outcome["loss"] <= predicted["hi"],
    }
    return study


# --- Running the phases, the table and the JSON -----------------------------------------------


def run_phase(report: dict, name: str, clock: Clock, need_s: float, fn: Callable[[], Any]) -> Any:
    """Run one phase if ``need_s`` seconds are left; its result, error or skip goes into
    ``report[name]`` (and the JSON), and the check goes on either way."""
    if clock.left() < need_s:
        report[name] = {"skipped": f"{clock.left():.0f}s left of the budget, needs ~{need_s:.0f}s"}
        return None
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # one phase failing must not cost the others' figures
        report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
        return None
    finally:
        report.setdefault("phase_s", {})[name] = round(time.perf_counter() - started, 1)
    report[name] = result
    return result


def environment(plan: Plan) -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": plan.device,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
    }
    if plan.device == "cuda":
        info |= {
            "gpu": torch.cuda.get_device_name(),
            "capability": torch.cuda.get_device_capability(),
        }
    import lightning

    return info | {"lightning": lightning.__version__}


def table(report: dict) -> str:
    """The one table: a row per size, then the precision, FSDP and study rows."""
    lines = [
        f"GPU check on {report['env'].get('gpu', report['env']['device'])}, "
        f"peak {report.get('peak', {}).get('tflops', math.nan):.1f} TFLOP/s "
        f"({report.get('peak', {}).get('dtype', '?')} matmul, measured)",
        f"{'size':>7} {'N':>12} {'Lightning tok/s':>16} {'plain tok/s':>12} {'compiled tok/s':>15}"
        f" {'MFU L':>6} {'MFU comp':>8} {'L/plain':>8} {'compile x':>9}",
    ]
    for row in report.get("sizes", []):
        if "error" in row or "skipped" in row:
            lines.append(f"{row['size']:>7} {row.get('error') or row.get('skipped')}")
            continue
        rate, mfu = row["tokens_per_s"], row["mfu"]
        lines.append(
            f"{row['size']:>7} {row['n_params']:>12,} {rate['lightning']:>16,.0f} "
            f"{rate['plain']:>12,.0f} {rate['compiled']:>15,.0f} {mfu['lightning']:>6.1%} "
            f"{mfu['compiled']:>8.1%} {row['lightning_over_plain']:>8.3f} "
            f"{row['compile_speedup']:>9.2f}"
        )
    prec = report.get("precision", {})
    if "relative_gap" in prec:
        lines.append(
            f"bf16 vs fp32 after {prec['steps']} steps ({prec['size']}): val loss "
            f"{prec['bf16-mixed']:.4f} vs {prec['32-true']:.4f} ({prec['relative_gap']:+.2%})"
        )
    for name in ("precision", "fsdp", "study"):
        part = report.get(name, {})
        if "error" in part or "skipped" in part:
            lines.append(f"{name}: {part.get('error') or part.get('skipped')}")
    if "ok" in report.get("fsdp", {}):
        lines.append(f"FSDP (1 GPU, Lightning): {report['fsdp']['tokens_per_s']:,.0f} tok/s")
    study = report.get("study", {})
    if "outcome" in study:
        f, o = study["forecast"], study["outcome"]
        lines.append(
            f"study: {len(study['ladder'])} ladder runs to {study['ladder_max']:.2g} FLOPs; "
            f"target {study['target_plan']['factor']:g}x ({o['n_params']:,} params, "
            f"{o['tokens']:.3g} tokens): forecast {f['loss']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}]"
            f", outcome {o['loss']:.4f} ({o['error']:+.1%}, "
            f"{'inside' if o['inside_interval'] else 'outside'} the interval)"
        )
    lines.append(f"wall {report.get('wall_s', math.nan):.0f}s")
    return "\n".join(lines)


def run(plan: Plan, out: Path, cache_dir: Path) -> dict:
    """Every phase in order, the JSON rewritten after each so a killed run keeps its figures."""
    from scalelab.data import prepare

    clock = Clock(plan.budget_s)
    report: dict[str, Any] = {"plan": asdict(plan), "env": environment(plan)}

    def save(study: dict | None = None) -> None:
        if study is not None:
            report["study"] = study
        report["wall_s"] = round(clock.budget_s - clock.left(), 1)
        out.write_text(json.dumps(report, indent=2, default=str))

    data = prepare(plan.corpus, "byte", cache_dir=cache_dir)
    report["corpus"] = {"name": plan.corpus, "hash": data.corpus_hash, "train": len(data.train)}
    peak = run_phase(report, "peak", clock, 5, lambda: matmul_peak(plan))
    tflops = peak["tflops"] if peak else math.nan
    report["sizes"] = []
    for name in plan.sizes:
        part: dict[str, Any] = {}
        run_phase(part, name, clock, 60, lambda n=name: measure_size(plan, n, data, tflops))
        report["sizes"].append({"size": name, **part[name]})
        save()
    run_phase(report, "precision", clock, 45, lambda: precision_check(plan, data))
    run_phase(report, "fsdp", clock, 60, lambda: fsdp_check(plan, data))
    save()
    run_phase(report, "study", clock, 90, lambda: mini_study(plan, data, clock, save))
    save()
    return report


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """No Lightning banners between the table's inputs: its import sets its logger to INFO,
    so import it first, then raise the level."""
    import lightning  # noqa: F401

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "gpu-check.json")
    parser.add_argument("--budget-s", type=float, default=None, help="default 420 (GPU), 300")
    parser.add_argument("--corpus", default=None, help="default python-all (GPU), stdlib-notests")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "scalelab-gpu-check"
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        plan = Plan.dry(args.budget_s or 300, args.corpus or "stdlib-notests")
        # Toy tensors are too small to split: on a busy CPU two threads only wait on each other.
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU here: run with --dry-run to check the code path on CPU")
        plan = Plan.gpu(args.budget_s or 420, args.corpus or "python-all")
    # The Trainer runs with deterministic algorithms (make_trainer); the plain loops too, so
    # that Lightning/plain compares the same kernels. Lightning sets the same cuBLAS variable.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    with quiet_lightning():
        report = run(plan, args.out, args.cache_dir)
    print(table(report))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
