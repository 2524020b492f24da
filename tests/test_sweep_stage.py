"""Sweeps of the RLHF stages: spec validation, tiny sweeps end to end, pruning by step."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from scalelab.cli import app
from scalelab.rlhf import stage_config
from scalelab.sweep.coordinator import run_sweep
from scalelab.sweep.spec import SpecError, parse_spec
from scalelab.sweep.study import Sweep, SweepConflict
from scalelab.sweep.worker import work
from scalelab.workspace import Workspace

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)

STAGE = {
    "name": "rm",
    "stage": "reward",
    "context": 64,
    "sizes": ["n10k", "3e4"],
    "budgets": {"steps": [40, 80]},
    "search": {"batch_size": [4, 8]},
}
# A stage trial in a second or two: 20 steps on a few hundred examples, validated twice.
TINY = {
    "name": "tiny",
    "context": 64,
    "sizes": ["n10k"],
    "budgets": {"steps": [20]},
    "search": {"trials": 2, "sampler": "grid", "lr": [2e-3, 5e-3], "batch_size": 8},
    "validations": 2,
    "train": {"n_train": 256, "n_eval": 64},
}
# Stages train on their synthetic task: the corpus hash only enters the sweep's identity.
CORPUS = "synthetic-task"


def test_a_stage_budget_is_steps_with_nominal_tokens_on_the_stage_trunk() -> None:
    spec = parse_spec(STAGE)
    cells = spec.cells()
    assert sorted(c.key for c in cells) == ["N3e4-S40", "N3e4-S80", "n10k-S40", "n10k-S80"]
    assert [c.compute for c in cells] == sorted(c.compute for c in cells)
    for cell in cells:
        assert cell.steps == int(cell.budget.removeprefix("S"))
        assert cell.tokens == cell.steps * 8 * 64  # the largest searched batch
        assert cell.compute == 6.0 * cell.n_params * cell.tokens
        trunk = stage_config(
            "reward", preset=cell.preset, n_params_target=cell.n_params_target, context=64
        ).model_cfg()
        assert (trunk.vocab_size, trunk.n_params, trunk.d_model) == (
            256,
            cell.n_params,
            cell.d_model,
        )


BAD = [
    ({"budgets": {"tokens": [1e5]}}, "budgets: stage reward trains for a number of optimizer"),
    ({"stage": "pretrain"}, "budgets: steps is the budget of an RLHF stage"),
    ({"train": {"kl_coef": 0.1}}, "train: unknown key 'kl_coef' for stage reward; allowed keys:"),
    ({"train": {"steps": 10}}, "train: 'steps' is set by the sweep itself"),
    ({"train": {"init": "runs:/x"}}, "train: 'init' is set by the sweep itself"),
    ({"train": {"k_min": 9, "k_max": 4}}, "train: k_min (9) must be <= k_max (4)"),
    ({"corpus": "tinyshakespeare"}, "corpus: stage reward trains on its synthetic"),
    ({"stage": "ppo", "pruner": "median"}, "pruner: ppo evaluates inside its training loop"),
    ({"stage": "ppo"}, "search: ppo does not use batch_size"),
    ({"stage": "rlhf"}, "stage: Input should be 'pretrain', 'sft', 'reward', 'ppo' or"),
]


@pytest.mark.parametrize(("change", "needle"), BAD, ids=[b[1][:30] for b in BAD])
def test_a_bad_stage_spec_names_the_field_and_the_fix(change: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**STAGE, **change}, "x.yaml")
    assert str(err.value).startswith(f"x.yaml: {needle}"), str(err.value)


def test_unknown_stage_keys_list_the_stage_fields() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**STAGE, "train": {"bogus": 1}})
    allowed = str(err.value).split("allowed keys: ")[1].split(", ")
    assert {"k_min", "k_max", "label_noise", "n_train", "task"} <= set(allowed)
    assert not {"steps", "lr", "preset", "eval_every", "init"} & set(allowed)


def test_the_stage_is_part_of_the_identity_but_not_for_pretraining() -> None:
    reward = parse_spec(STAGE)
    sft = parse_spec({**STAGE, "stage": "sft"})
    assert reward.identity()["stage"] == "reward"
    assert [c.key for c in sft.cells()] == [c.key for c in reward.cells()]
    assert sft.spec_hash() != reward.spec_hash()
    pretrain = {"name": "p", "sizes": ["n10k"], "budgets": {"tokens": [1e5]}}
    assert "stage" not in parse_spec(pretrain).identity()  # stored sweeps stay valid
    explicit = parse_spec({**pretrain, "stage": "pretrain"})
    assert explicit.spec_hash() == parse_spec(pretrain).spec_hash()


def test_changing_the_stage_of_a_stored_sweep_is_refused(workspace: Workspace) -> None:
    url = f"journal:{workspace.root / 'optuna-journal.log'}"
    Sweep(parse_spec({**TINY, "stage": "reward"}), url, workspace).ensure(CORPUS)
    with pytest.raises(SweepConflict, match="with a different stage"):
        Sweep(parse_spec({**TINY, "stage": "sft"}), url, workspace).ensure(CORPUS)


def test_a_bad_stage_spec_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**STAGE, "budgets": {"tokens": [1e5]}}))
    monkeypatch.setenv("SCALELAB_HOME", str(tmp_path / "ws"))
    result = CliRunner().invoke(app, ["sweep", "run", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: {path}: budgets: stage reward trains for a number of optimizer steps; give "
        "budgets: {steps: [...]} instead of tokens"
    )
    assert not (tmp_path / "ws" / "optuna-journal.log").exists()


@pytest.mark.parametrize("stage", ["reward", "classify"])
def test_a_tiny_stage_sweep_completes_with_its_loss_and_tags(
    stage: str, workspace: Workspace
) -> None:
    spec = parse_spec({**TINY, "name": f"tiny-{stage}", "stage": stage})
    sweep = Sweep(spec, f"journal:{workspace.root / 'optuna-journal.log'}", workspace)
    summary = run_sweep(sweep, CORPUS, echo=lambda line: None)
    assert summary.complete and summary.counts == {"COMPLETE": 2}
    client = mlflow.MlflowClient(workspace.tracking_uri)
    (cell,) = sweep.cells
    for trial in sweep.study(cell).get_trials():
        assert trial.state == TrialState.COMPLETE
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert trial.value == run.data.metrics["loss"]
        assert trial.user_attrs["metric"] == run.data.metrics["metric"]
        assert trial.user_attrs["metric_name"] == "eval_accuracy"
        tags = run.data.tags
        assert (tags["stage"], tags["sweep"], tags["cell"], tags["trial"]) == (
            stage,
            spec.name,
            "n10k-S20",
            str(trial.number),
        )
        assert tags["mlflow.parentRunId"] == sweep.attrs["mlflow_parent_run_id"]
        assert run.data.params["steps"] == "20" and run.data.params["eval_every"] == "10"
        assert list(trial.intermediate_values) == [10, 20]  # reported by optimizer step
        assert trial.intermediate_values[20] == pytest.approx(trial.value)


def test_a_stage_trial_is_pruned_by_step_and_its_run_killed(workspace: Workspace) -> None:
    spec = parse_spec(
        {
            **TINY,
            "stage": "reward",
            "search": {"trials": 1, "lr": 1e-6, "batch_size": 8},
            "pruner": {"kind": "median", "startup_trials": 1, "warmup": 0.0},
        }
    )
    sweep = Sweep(spec, f"journal:{workspace.root / 'optuna-journal.log'}", workspace)
    sweep.ensure(CORPUS)
    study = sweep.study(sweep.cells[0])
    # A finished trial of this cell that did far better at every validation.
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=0.01,
            intermediate_values={10: 0.01, 20: 0.01},
            user_attrs={"slot": 99},
        )
    )
    (outcome,) = work(sweep)
    assert outcome.state == "PRUNED" and "pruned at step 10: eval_loss" in outcome.reason
    pruned = study.get_trials()[outcome.number]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [10]
    run = mlflow.MlflowClient(workspace.tracking_uri).get_run(outcome.run_id)
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "PRUNED"
    assert "failure_reason" not in run.data.tags
