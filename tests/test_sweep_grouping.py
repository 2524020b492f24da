"""Sweeps that train small trials in groups: the same trials, losses and records as one at a
time, each trial asked, reported and told on its own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from scalelab.data import prepare
from scalelab.sweep import grouping
from scalelab.sweep.spec import SpecError, parse_spec
from scalelab.sweep.study import Sweep
from scalelab.sweep.worker import work
from scalelab.workspace import Workspace

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

LADDER = {
    "name": "grouped",
    "corpus": "stdlib-notests",
    "context": 32,
    "sizes": ["n10k", "n30k"],
    "budgets": {"tokens": [32 * 4 * 12, 32 * 4 * 20]},
    "search": {
        "sampler": "random",
        "trials": 2,
        "lr": {"low": 1e-3, "high": 1e-2},
        "batch_size": 4,
    },
    "validations": 2,
    "train": {"val_tokens": 32 * 16},
}


def _sweep(root: Path, token_cache: Path, **changes: object) -> Sweep:
    workspace = Workspace.resolve(root).ensure()
    workspace.cache_dir.rmdir()
    workspace.cache_dir.symlink_to(token_cache, target_is_directory=True)
    spec = parse_spec({**LADDER, **changes})
    data = prepare(spec.corpus, spec.tokenizer, cache_dir=workspace.cache_dir)
    sweep = Sweep(spec, f"journal:{root / 'optuna-journal.log'}", workspace)
    sweep.ensure(data.corpus_hash)
    return sweep


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"max_trials": 0}, "group.max_trials"),
        ({"max_params": -1}, "group.max_params"),
        ({"size": 3}, "group: unknown key 'size'"),
        ("yes", "group"),
    ],
)
def test_group_settings_are_validated_naming_the_field(group: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**LADDER, "group": group})


def test_grouping_applies_to_small_cpu_pretraining_only() -> None:
    spec = parse_spec(LADDER)
    assert spec.group.enabled and all(grouping.applies(spec, c) for c in spec.cells())
    off = parse_spec({**LADDER, "group": False})
    assert not any(grouping.applies(off, c) for c in off.cells())
    small = parse_spec({**LADDER, "group": {"max_params": 2e4}})
    assert [c.size for c in small.cells() if grouping.applies(small, c)] == ["n10k", "n10k"]
    for train in (
        {"compile": True},
        {"dropout": 0.1},
        {"precision": "bf16-mixed"},
    ):
        spec = parse_spec({**LADDER, "train": {**LADDER["train"], **train}})
        assert not any(grouping.applies(spec, c) for c in spec.cells()), train
    for top in ({"variant": "llama"}, {"parametrization": "mup", "mup_base_width": 16}):
        spec = parse_spec({**LADDER, **top})
        assert not any(grouping.applies(spec, c) for c in spec.cells()), top


@pytest.mark.parametrize(
    ("env", "workers", "threads"), [("8", 2, 4), ("8", 4, 2), ("8", 16, 1), ("2", 2, 2)]
)
def test_workers_times_threads_stay_within_the_cores(
    monkeypatch: pytest.MonkeyPatch, env: str, workers: int, threads: int
) -> None:
    from scalelab import resources

    monkeypatch.setattr(resources, "cores", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert resources.pick_threads(workers)[0] == threads
    assert resources.pick_threads(workers, override=3) == (3, "--threads")  # asked for


@pytest.mark.slow
def test_a_grouped_sweep_trains_every_trial_as_one_at_a_time(
    tmp_path: Path, token_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grouped = _sweep(tmp_path / "grouped", token_cache)
    grouped_outcomes = work(grouped)
    tracking_uri = grouped.workspace.tracking_uri
    # MLflow exports the tracking URI it used; the second workspace must not inherit it.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    alone = _sweep(tmp_path / "alone", token_cache, group=False)
    alone_outcomes = work(alone)
    assert len(grouped_outcomes) == len(alone_outcomes) == 8
    assert {o.state for o in grouped_outcomes} == {"COMPLETE"}

    def by_trial(outcomes):
        return {(o.cell, o.number): o for o in outcomes}

    a, b = by_trial(grouped_outcomes), by_trial(alone_outcomes)
    assert a.keys() == b.keys()
    for key, outcome in a.items():
        assert outcome.params == b[key].params  # each trial sampled as it would be alone
        assert outcome.loss == pytest.approx(b[key].loss, abs=1e-4), b[key].line()
    client = mlflow.MlflowClient(tracking_uri)
    for outcome in grouped_outcomes:
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.metrics["loss"] == outcome.loss
        assert int(run.data.tags["group_size"]) == 4  # a size's 2 budgets x 2 trials
        assert run.data.tags["trial_state"] == "COMPLETE"
        assert "val/loss" in run.data.metrics and "train/loss" in run.data.metrics
    # Each trial told on its own, with its own reports keyed by tokens seen.
    for cell in grouped.cells:
        for trial in grouped.study(cell).get_trials():
            assert trial.state == TrialState.COMPLETE
            assert max(trial.intermediate_values) == cell.tokens


def test_pruned_members_leave_their_group_each_told_and_killed(
    workspace: Workspace, token_cache: Path, tmp_path: Path
) -> None:
    sweep = _sweep(
        tmp_path / "pruned",
        token_cache,
        sizes=["n10k"],
        budgets={"tokens": [32 * 4 * 12]},
        search={"sampler": "random", "trials": 3, "lr": 3e-3, "batch_size": 4},
        pruner={"kind": "median", "startup_trials": 1, "warmup": 0.0},
    )
    cell = sweep.cells[0]
    study = sweep.study(cell)
    every = cell.tokens // 2
    # A finished trial of this cell that did far better at one validation and far worse at
    # none: every member is pruned at its first report, the group ends with no survivor.
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=1.0,
            intermediate_values={every: 1.0, 2 * every: 1.0},
            user_attrs={"slot": 99},
        )
    )
    outcomes = work(sweep)
    assert Counter(o.state for o in outcomes) == {"PRUNED": 3}
    client = mlflow.MlflowClient(sweep.workspace.tracking_uri)
    for outcome in outcomes:
        trial = study.get_trials()[outcome.number]
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [every]
        run = client.get_run(outcome.run_id)
        assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "PRUNED"
    assert sweep.progress().complete
