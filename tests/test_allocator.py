"""``keep_freed_memory``: a small model's steps stop page-faulting on memory they just freed."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A fresh process (the setting is process-wide): minor page faults per training step of a
# 1k-parameter model, before and after the setting.
PROBE = """
import resource, torch
from scalelab.model import GPT, GPTConfig
from scalelab.resources import keep_freed_memory

torch.set_num_threads(1)
torch.manual_seed(0)
model = GPT(GPTConfig(n_layer=1, n_head=1, d_model=8, context=128, vocab_size=256))
x = torch.randint(0, 256, (16, 128))

def faults_per_step(steps=10):
    for _ in range(3):
        model(x, x)[1].backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        model(x, x)[1].backward()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

default = faults_per_step()
applied = keep_freed_memory()
print(default, applied, faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_without_page_faults() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    default, applied, kept = float(out[0]), out[1] == "True", float(out[2])
    assert applied
    if default < 100:
        pytest.skip(f"this C library reuses freed memory already ({default} faults/step)")
    assert kept < default / 4, (default, kept)
