"""benchmarks/gpu_check.py: its CPU dry run covers every phase, on the GPU machine's packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the bare GPU machine lacks: the script must not import any of it.
ABSENT = ("mlflow", "optuna", "pydantic", "plotly")

RUNNER = """
import runpy, sys

ABSENT = set({absent!r})

class Absent:
    '''Refuses the packages the GPU machine does not have, as a missing install would.'''

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU machine)")
        return None

sys.meta_path.insert(0, Absent())
sys.argv = ["gpu_check.py", "--dry-run", "--out", {out!r}, "--cache-dir", {cache!r}]
runpy.run_path({script!r}, run_name="__main__")
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & ABSENT)
assert not loaded, loaded
"""


def test_dry_run_covers_every_phase_without_mlflow_optuna_pydantic_or_plotly(
    tmp_path: Path, token_cache: Path
) -> None:
    out = tmp_path / "gpu-check.json"
    code = RUNNER.format(
        absent=ABSENT,
        out=str(out),
        cache=str(token_cache),
        script=str(ROOT / "benchmarks/gpu_check.py"),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "L/plain" in result.stdout and "study:" in result.stdout

    report = json.loads(out.read_text())
    assert report["env"]["device"] == "cpu" and report["peak"]["tflops"] > 0
    assert [row["size"] for row in report["sizes"]] == ["tiny-a", "tiny-b", "tiny-c"]
    for row in report["sizes"]:
        assert set(row["tokens_per_s"]) == {"lightning", "plain", "compiled"}, row
        assert row["lightning_over_plain"] > 0 and row["compile_speedup"] > 0
    assert abs(report["precision"]["relative_gap"]) < 0.01
    assert "needs a CUDA GPU" in report["fsdp"]["skipped"]
    study = report["study"]
    assert len(study["ladder"]) == 9 and study["target_plan"]["factor"] == 10
    assert study["forecast"]["lo"] <= study["forecast"]["loss"] <= study["forecast"]["hi"]
    assert study["forecast_recorded_at_s"] < report["wall_s"]
    assert study["outcome"]["loss"] > 0 and "inside_interval" in study["outcome"]
