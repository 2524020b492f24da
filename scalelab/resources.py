"""What a run needs against what the machine has: memory, devices and CPU threads.

Checked before anything is started or stored, so a run that cannot fit is refused with the
numbers instead of being killed by the kernel minutes later (leaving its run RUNNING). Only
the standard library at import; torch is asked about GPUs inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GB = 1024**3
# fp32 weights (4) + gradients (4) + AdamW's two moments (8), per parameter.
STATE_BYTES_PER_PARAM = 16
# Activations kept for the backward pass, per token, layer and model width, in fp32: about
# 34 values per token per layer per unit of width without recomputation (Korthikanti et al.
# 2022, "Reducing Activation Recomputation", section 4.1, counted in 2-byte halves: 34 bytes);
# doubled for fp32.
ACTIVATION_BYTES = 68


def available_memory() -> int:
    """Bytes this process can still allocate on the host (``MemAvailable``; its cgroup limit
    when lower)."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            used = int(Path(used_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            available = min(available, int(limit) - used)
        break
    return max(0, available)


def training_memory(model_cfg: Any, batch_per_device: int) -> dict[str, int]:
    """Bytes a training process needs: parameter state, activations and the logits."""
    tokens = batch_per_device * model_cfg.context
    state = STATE_BYTES_PER_PARAM * model_cfg.n_params_total
    activations = ACTIVATION_BYTES * tokens * model_cfg.d_model * model_cfg.n_layer
    logits = 3 * 4 * tokens * model_cfg.vocab_size  # logits, softmax and their gradient
    return {"state": state, "activations": activations + logits}


def _gpu_free() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


def uses_gpu(accelerator: str) -> bool:
    if accelerator == "cpu":
        return False
    import torch

    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def check_training_fits(model_cfg: Any, batch_per_device: int, accelerator: str) -> None:
    """Refuse (``ValueError`` naming the numbers) a run whose memory estimate exceeds what
    is free on the device that would hold it."""
    need = training_memory(model_cfg, batch_per_device)
    total = sum(need.values())
    on_gpu = uses_gpu(accelerator)
    free = (_gpu_free() if on_gpu else None) or available_memory()
    where = "GPU memory free" if on_gpu else "memory available on this machine"
    if total > free:
        raise ValueError(
            f"params: a {model_cfg.n_params_total:.3g}-parameter model needs about "
            f"{total / GB:.3g} GB to train ({need['state'] / GB:.3g} GB of weights, gradients "
            f"and AdamW state, {need['activations'] / GB:.3g} GB of activations at "
            f"{batch_per_device} sequences of {model_cfg.context}); {free / GB:.3g} GB of "
            f"{where}"
        )


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_devices(devices: int | str, accelerator: str) -> None:
    """Refuse a device count the machine cannot give (``ValueError`` naming the flag)."""
    if isinstance(devices, str):
        if not devices.lstrip("-").isdigit():
            return  # "auto" or a list of device ids: Lightning checks those
        devices = int(devices)
    if devices == -1:
        return  # Lightning's "every device"
    if devices < 1:
        raise ValueError(f"devices: at least 1 device; got {devices}")
    if uses_gpu(accelerator):
        import torch

        have = torch.cuda.device_count()
        if devices > have:
            raise ValueError(f"devices: {devices} GPUs asked for; this machine has {have}")
    elif devices > cores():
        raise ValueError(
            f"devices: {devices} CPU processes asked for; this machine gives this process "
            f"{cores()} cores (one process per device)"
        )


def check_resources(cfg: Any, model_cfg: Any) -> None:
    """A training config against this machine: its device count, then its memory."""
    check_devices(cfg.devices, cfg.accelerator)
    per_device = cfg.batch_size
    if isinstance(cfg.devices, int) and cfg.devices > 1:
        per_device = -(-cfg.batch_size // cfg.devices)
    check_training_fits(model_cfg, per_device, cfg.accelerator)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) clock ticks of the whole machine since boot, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def free_cores(window: float = 0.5) -> float:
    """Cores not busy with other processes' work, measured over ``window`` seconds.

    Sampled rather than read from the load average, which lags a minute behind a job that
    just started or ended; this process's own CPU use in the window is not counted as busy.
    """
    import time

    before, own_before = _cpu_times(), time.process_time()
    if before is None:
        try:
            return max(0.0, cores() - os.getloadavg()[0])
        except OSError:
            return float(cores())
    time.sleep(window)
    after, own = _cpu_times(), time.process_time() - own_before
    assert after is not None
    ticks = max(after[1] - before[1], 1e-9)
    machine = os.cpu_count() or 1
    busy = (after[0] - before[0]) / ticks * machine - own / window
    return max(0.0, min(float(cores()), machine - max(0.0, busy)))


def pick_threads(workers: int = 1, override: int | None = None) -> tuple[int, str]:
    """Torch threads per training process, and why.

    More threads than free cores do not add speed but lose it: OpenMP threads spin-wait for
    each other, and on a loaded 2-core machine a tiny trial took 38.5 s with two threads
    against 2.8 s with one. So each of ``workers`` processes takes its share of the free
    cores (at least one); ``override`` (``--threads``) wins, and so does ``OMP_NUM_THREADS``
    up to a share of the cores: a variable set for one process must not give each of
    ``workers`` processes all of them (``workers`` × threads stays within the cores).
    """
    if override:
        return override, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        share = max(1, cores() // max(1, workers))
        if int(env) > share:
            return share, f"OMP_NUM_THREADS={env} capped at {cores()} cores / {workers} workers"
        return int(env), "OMP_NUM_THREADS"
    free = free_cores()
    threads = max(1, int(free + 0.5) // max(1, workers))
    return threads, f"{free:.1f} of {cores()} cores free, {max(1, workers)} worker(s)"


def set_torch_threads(threads: int) -> None:
    """Torch's intra-op threads for this process (before the first op is best)."""
    import torch

    torch.set_num_threads(threads)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest accepted value on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let this process reuse the memory its tensors free instead of returning it to the OS.

    A small model's step allocates and frees the same few megabytes of activations every
    step. glibc hands blocks of that size back to the kernel on free (mmap'd, or trimmed off
    the heap's top), so each step pays for page faults on fresh memory: ~1,250 per step for a
    1k-parameter model, a quarter of its step time. Raising the mmap and trim thresholds
    keeps them in the heap. Process-wide and idempotent; False where the C library has no
    ``mallopt`` (not glibc), which changes nothing but speed.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def share_cores_among_processes(devices: int | str, accelerator: str) -> None:
    """Torch threads for a run of ``devices`` CPU processes on this machine (DDP on CPU): each
    takes its share of the cores (``pick_threads``), set here and in ``OMP_NUM_THREADS`` so the
    processes Lightning starts inherit it. Without this each process took every core the
    environment gave it (Lightning keeps an ``OMP_NUM_THREADS`` that is already set), and two
    processes of two threads on two cores spin-waited on each other for most of their time."""
    if not isinstance(devices, int) or devices < 2 or uses_gpu(accelerator):
        return
    threads, _ = pick_threads(devices)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    set_torch_threads(threads)
