"""Sweep specs: every shipped spec loads, cells follow the budgets, bad specs fail clearly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scalelab.cli import app
from scalelab.model import PRESETS
from scalelab.sweep.spec import Range, SpecError, SweepSpec, load_spec, parse_spec

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
BASE = {
    "name": "t",
    "corpus": "stdlib-notests",
    "context": 64,
    "sizes": ["n10k", "3e4"],
    "budgets": {"tokens": ["1e5", 4e5]},
}


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.cells(), path


def test_shipped_specs_cover_the_required_designs() -> None:
    quick = load_spec(SWEEPS / "quickstart.yaml")
    sizes = quick.resolved_sizes()
    assert len(sizes) >= 5
    assert max(s.n_params for s in sizes) / min(s.n_params for s in sizes) >= 30
    # A Chinchilla fit needs D to vary independently of N, over at least three budgets: with
    # two, B and beta could not be told from E (tests/test_quickstart_fit.py).
    assert len({c.tokens for c in quick.cells()}) >= 3

    iso = load_spec(SWEEPS / "isoflop.yaml")
    assert iso.budgets.kind == "compute"
    assert len(iso.budgets.values) >= 3 and len(iso.sizes) >= 5

    lr = load_spec(SWEEPS / "lr-tuning.yaml")
    assert lr.search.sampler == "tpe" and isinstance(lr.search.lr, Range) and lr.search.lr.log
    assert lr.pruner.kind != "none"
    assert lr.search.trials > 1


def test_compute_budgets_give_d_equal_c_over_6n_in_whole_steps() -> None:
    spec = parse_spec({**BASE, "budgets": {"compute": [1e11, 1e12]}, "sizes": ["n10k", "n100k"]})
    step = 32 * 64
    for cell in spec.cells():
        budget = float(cell.budget.removeprefix("C"))
        wanted = budget / (6 * cell.n_params)
        assert cell.tokens % step == 0
        assert wanted - step < cell.tokens <= wanted
        assert cell.compute == 6 * cell.n_params * cell.tokens
    # Smallest budget first, then smallest size.
    order = [(c.budget, c.n_params) for c in spec.cells()]
    assert order == [("C1e11", 9872), ("C1e11", 100096), ("C1e12", 9872), ("C1e12", 100096)]


def test_full_flops_budgets_count_attention_and_unembedding() -> None:
    from scalelab.model import GPTConfig

    data = {**BASE, "budgets": {"compute": [1e11], "flops": "full"}, "sizes": ["n10k", "n100k"]}
    spec = parse_spec(data)
    six_nd = parse_spec({**data, "budgets": {"compute": [1e11]}})
    for cell, naive in zip(spec.cells(), six_nd.cells(), strict=True):
        shape = GPTConfig.from_name(cell.preset, context=64, vocab_size=256)
        per_token = shape.flops_per_token(include_embedding=True)
        assert 1e11 - per_token * 32 * 64 < per_token * cell.tokens <= 1e11
        assert cell.tokens < naive.tokens  # the smallest model is no longer cheap
    # Full counting is part of what a stored sweep's results mean; 6nd sweeps keep their hash.
    assert spec.identity()["budgets"] == {"compute": [1e11], "flops": "full"}
    assert six_nd.identity()["budgets"] == {"compute": [1e11]}


def test_tokens_per_param_and_searched_batches_share_a_step() -> None:
    spec = parse_spec(
        {**BASE, "budgets": {"tokens_per_param": [20]}, "search": {"batch_size": [8, 12]}}
    )
    for cell in spec.cells():
        assert cell.tokens % (24 * 64) == 0  # lcm(8, 12) sequences of 64 tokens
        assert abs(cell.tokens - 20 * cell.n_params) < 24 * 64


def test_seeds_replicate_cells_and_identity_tracks_what_matters() -> None:
    spec = parse_spec({**BASE, "seeds": [0, 1]})
    keys = [c.key for c in spec.cells()]
    assert len(keys) == 2 * 2 * 2 and len(set(keys)) == len(keys)
    more_trials = parse_spec({**BASE, "seeds": [0, 1], "search": {"trials": 5}})
    assert more_trials.spec_hash() == spec.spec_hash()  # trials may grow on resume
    other = parse_spec({**BASE, "seeds": [0, 1], "sizes": ["n10k"]})
    assert other.spec_hash() != spec.spec_hash()


def test_spec_names_every_preset_in_its_size_error() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "sizes": ["n5k"]}, "x.yaml")
    message = str(err.value)
    assert message.startswith("x.yaml: sizes:")
    assert all(p in message for p in PRESETS)


def test_grid_sampler_refuses_ranges_and_too_many_trials() -> None:
    with pytest.raises(SpecError, match="grid sampler needs lr"):
        parse_spec({**BASE, "search": {"sampler": "grid", "lr": {"low": 1e-3, "high": 1e-2}}})
    with pytest.raises(SpecError, match="exceeds the 4 points"):
        search = {"sampler": "grid", "lr": [1e-3, 2e-3], "batch_size": [8, 16], "trials": 5}
        parse_spec({**BASE, "search": search})


MALFORMED = [
    ({"bogus": 1}, "spec: unknown key 'bogus'; allowed keys: name,"),
    ({"name": "a b"}, "name: use 1 to 80 letters"),
    ({"sizes": ["n10k", "huge"]}, "sizes: 'huge' is neither a preset"),
    ({"sizes": ["n10k", 1e4]}, "sizes: n10k and N1e4 build the same model"),
    ({"budgets": {"tokens": [1e5], "compute": [1e12]}}, "budgets: give exactly one budget axis"),
    ({"budgets": {"flop": [1e12]}}, "budgets: unknown key 'flop'; allowed keys: compute,"),
    ({"budgets": {"tokens": [1e5], "flops": "full"}}, "budgets: flops counts compute budgets"),
    ({"budgets": {"compute": [1e12], "flops": "8nd"}}, "budgets.flops: Input should be '6nd'"),
    ({"budgets": {"compute": [1e6]}}, "budgets: budget C1e6 gives n10k"),
    ({"search": {"lr": "fast"}}, "search.lr: give lr as a number (fixed), a list"),
    ({"search": {"lr": {"low": 1e-2, "high": 1e-3}}}, "search.lr: lr range: high (0.001)"),
    ({"search": {"sampler": "cmaes"}}, "search.sampler: Input should be 'tpe', 'random'"),
    ({"search": {"batch_size": 0}}, "search.batch_size: give batch_size"),
    ({"pruner": "sometimes"}, "pruner.kind: Input should be 'none', 'median' or 'hyperband'"),
    ({"train": {"lr": 1e-3}}, "train: 'lr' is set by the sweep itself"),
    ({"train": {"grad_clipp": 1}}, "train: unknown key 'grad_clipp'; allowed keys:"),
    ({"heartbeat": {"interval": 10, "grace": 5}}, "heartbeat: grace (5 s) must exceed"),
    ({"seeds": [1, 1]}, "seeds: a seed is listed twice"),
    ({"context": 4}, "context: Input should be greater than or equal to 8"),
]


@pytest.mark.parametrize(("change", "needle"), MALFORMED, ids=[m[1][:24] for m in MALFORMED])
def test_malformed_spec_exits_2_naming_the_field(
    change: dict, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    monkeypatch.setenv("SCALELAB_HOME", str(tmp_path / "ws"))
    result = CliRunner().invoke(app, ["sweep", "run", str(path)])
    assert result.exit_code == 2, result.output
    assert f"error: {path}: {needle}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "ws" / "optuna-journal.log").exists()  # refused before any work


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [unclosed", "not valid YAML at line 1"),
        ("- just\n- a list\n", "a spec is a mapping of keys"),
        ("name: x\nsizes: [n10k]\n", "budgets: required: one of compute"),
    ],
)
def test_unreadable_spec_exits_2(text: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["sweep", "run", str(path)])
    assert result.exit_code == 2
    assert needle in result.output


def test_missing_spec_file_exits_2_from_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "SCALELAB_HOME": str(tmp_path / "ws")}
    result = subprocess.run(
        [sys.executable, "-m", "scalelab", "sweep", "run", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no spec file at {tmp_path / 'nope.yaml'}"
    assert "Traceback" not in result.stdout + result.stderr


def test_spec_round_trips_through_its_json_dump() -> None:
    spec = load_spec(SWEEPS / "lr-tuning.yaml")
    again = SweepSpec.model_validate(spec.model_dump(mode="json"))
    assert again.spec_hash() == spec.spec_hash()
    assert [c.key for c in again.cells()] == [c.key for c in spec.cells()]
    assert math.isclose(again.search.lr.low, spec.search.lr.low)


def test_sweep_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, scalelab.cli.sweep, scalelab.cli; "
        "print(sorted(m for m in ('optuna', 'mlflow', 'torch', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_conflicting_spec_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace
) -> None:
    from scalelab.data import prepare
    from scalelab.sweep.storage import default_storage_url
    from scalelab.sweep.study import Sweep

    first = parse_spec({**BASE, "name": "clash"})
    data = prepare(first.corpus, first.tokenizer, cache_dir=workspace.cache_dir)
    Sweep(first, default_storage_url(workspace), workspace).ensure(data.corpus_hash)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**BASE, "name": "clash", "sizes": ["n10k"]}))
    result = CliRunner().invoke(app, ["sweep", "run", str(changed)])
    assert result.exit_code == 2
    assert "error: sweep 'clash' already exists in journal:" in result.output
    assert "different sizes" in result.output and "--name NEW" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_storage_is_one_line_without_the_password() -> None:
    url = "postgresql://scalelab:s3cret@127.0.0.1:1/optuna"
    result = CliRunner().invoke(app, ["sweep", "status", "any", "--storage", url])
    assert result.exit_code == 2
    assert "cannot open the Optuna storage postgresql://scalelab:***@127.0.0.1:1/optuna" in (
        result.output
    )
    assert "s3cret" not in result.output
