"""Fit records and the runs they are fitted to (``scalelab.fits``), on runs of a known law.

Also home of the synthetic sweep the query and dashboard tests share: MLflow runs laid out as
IsoFLOP profiles whose losses follow a known Chinchilla law exactly, with validation curves,
and an Optuna study with intermediate values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from in_process import scalelab

from scalelab.forecast import Chinchilla
from scalelab.forecast.answer import EXTRAPOLATION_WARN, Fit
from scalelab.results.fits import FitStore, fit_table
from scalelab.results.runs import RunTable, read_csv_table, read_mlflow_table
from scalelab.workspace import Workspace

KNOWN = Chinchilla(E=1.5, A=40.0, B=120.0, alpha=0.3, beta=0.3)
BUDGETS = (1e12, 1e13, 1e14)
SIZE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
STEPS = 10  # training steps per synthetic run
VAL_STEPS = (2, 4, 6, 8, 10)
SEEN_STEPS = (1, 3, 5, 7, 9)  # tokens_seen is logged between validations, as in training


def synthetic_runs(law: Chinchilla = KNOWN) -> pd.DataFrame:
    """IsoFLOP profiles: at each budget, N from 1/4 to 4 times the law's N_opt, D = C/(6N)."""
    rows = []
    for c in BUDGETS:
        n_opt = float(law.optimal_allocation(c)[0])
        for k, f in enumerate(SIZE_FACTORS):
            n = round(n_opt * f)
            d = c / (6 * n)
            rows.append(
                {
                    "run_id": f"c{c:.0e}-{k}",
                    "n_params": float(n),
                    "tokens": d,
                    "compute": 6 * n * d,
                    "loss": float(law.predict(n_params=n, tokens=d)),
                }
            )
    return pd.DataFrame(rows)


def write_csv(path: Path) -> Path:
    synthetic_runs().to_csv(path, index=False)
    return path


def make_experiment(workspace: Workspace, name: str = "syn", corpus: str = "abc123") -> list[str]:
    """Log the synthetic sweep to MLflow the way training does; returns the run ids.

    A sweep-like parent run without a ``loss`` metric is logged too: loaders must skip it.
    """
    from mlflow.entities import Metric, Param

    from scalelab.results import tracking

    exp_id = tracking.ensure_experiment(name, workspace)
    client = tracking.client(workspace)
    parent = client.create_run(exp_id, run_name="sweep-parent", tags={"sweep": name})
    client.set_terminated(parent.info.run_id)
    ids = []
    for i, row in synthetic_runs().iterrows():
        run = client.create_run(
            exp_id,
            tags={
                "sweep": name,
                "cell": row.run_id,  # one cell per size and budget, one trial each
                "trial": str(i),
                "corpus": corpus,
                "tokenizer": "byte",
                "mlflow.parentRunId": parent.info.run_id,
            },
        )
        rid = run.info.run_id
        n, d = row.n_params, row.tokens
        metrics = [
            Metric("val/loss", float(KNOWN.predict(n_params=n, tokens=d * s / STEPS)), 0, s)
            for s in VAL_STEPS
        ]
        metrics += [Metric("tokens_seen", d * s / STEPS, 0, s) for s in SEEN_STEPS]
        metrics.append(Metric("loss", row.loss, 0, STEPS))
        params = {
            "n_params": int(n),
            "n_params_total": int(n) + 1000,
            "tokens": d,
            "compute": row.compute,
            "corpus": corpus,
            "tokenizer": "byte",
        }
        client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(rid)
        ids.append(rid)
    return ids


def make_study(storage: Any, name: str = "syn-study", n_trials: int = 6) -> None:
    """An Optuna study in ``storage`` (URL or storage object) whose trials report intermediate
    losses by tokens seen, as sweep trials do."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        warmup = trial.suggest_float("warmup", 0.0, 0.2)
        loss = 2.0 + (math.log10(lr) + 2.5) ** 2 + warmup
        for step in (1, 2, 3):
            trial.report(loss + 1.0 / step, step * 65536)
        return loss

    study.optimize(objective, n_trials=n_trials)


@dataclass(frozen=True)
class Sweep:
    """A workspace holding the synthetic sweep, its study and a ``scalelab fit`` of it."""

    ws: Workspace
    storage: str
    run_ids: list[str]
    fit_run_id: str


_SWEEP: list[Sweep] = []


def shared_sweep(factory: pytest.TempPathFactory) -> Sweep:
    """The session's one synthetic sweep (a new MLflow store costs seconds; tests reading it
    share it). Tests that log to it add fit runs or artifacts only for experiment 'syn'."""
    if not _SWEEP:
        root = factory.mktemp("sweep")
        ws = Workspace.resolve(root / "ws").ensure()
        ids = make_experiment(ws)
        storage = f"sqlite:///{root / 'optuna.db'}"
        make_study(storage)
        args = ["fit", "--experiment", "syn", "--law", "chinchilla", "--resamples", "8"]
        done = scalelab([*args, "--jobs", "1", "--json"], ws.root)
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
        _SWEEP.append(Sweep(ws, storage, ids, run_id))
    return _SWEEP[0]


@pytest.fixture
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return shared_sweep(tmp_path_factory)


def known_fit(tmp_path: Path, resamples: int = 8) -> Fit:
    table = read_csv_table(write_csv(tmp_path / "runs.csv"))
    return fit_table(table, experiment="syn", law="chinchilla", n_resamples=resamples, n_jobs=1)


# ---- tests -----------------------------------------------------------------------------------
def test_mlflow_table_has_final_losses_and_curves_but_not_the_parent(sweep: Sweep):
    ids = sweep.run_ids
    table = read_mlflow_table("syn", sweep.ws, curves=True)  # also skips the fit run
    assert sorted(table.runs["run_id"]) == sorted(ids)
    assert table.curves is not None and len(table.curves) == len(ids) * len(VAL_STEPS)
    # tokens_seen at the validation steps comes from the history logged at other steps.
    c = table.curves.merge(table.runs[["run_id", "tokens"]], on="run_id", suffixes=("", "_r"))
    np.testing.assert_allclose(c["tokens_seen"], c["tokens_r"] * c["step"] / STEPS, rtol=1e-9)


def test_runs_of_two_corpora_are_refused_unless_one_is_chosen(tmp_path: Path):
    runs = synthetic_runs().assign(corpus=["a"] * 10 + ["b"] * 5, tokenizer="byte")
    table = RunTable("test", runs)
    with pytest.raises(ValueError, match="mixes 2 corpus/tokenizer pairs"):
        table.select()
    assert len(table.select(corpus="b").runs) == 5
    with pytest.raises(ValueError, match="no run of test has corpus 'zzz'"):
        table.select(corpus="zzz")


def test_exclude_before_fits_late_checkpoints_only(sweep: Sweep):
    table = read_mlflow_table("syn", sweep.ws, curves=True)
    points = table.fit_points(0.5)
    assert len(points) == len(table.runs) * 3  # steps 6, 8 and 10 of 10
    assert (points["tokens"] == points["tokens_seen"]).all()
    with pytest.raises(ValueError, match="final losses only"):
        RunTable("x", table.runs).fit_points(0.5)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\)"):
        table.fit_points(1.5)


def test_csv_of_checkpoints_gives_final_losses_and_curves(tmp_path: Path):
    rows = [
        {"run_id": r, "n_params": n, "tokens": 1e6, "step": s, "loss": 5.0 - 0.1 * s - n / 1e6}
        for r, n in (("a", 1e4), ("b", 1e5))
        for s in (1, 2, 3)
    ]
    path = tmp_path / "curves.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_csv_table(path)
    assert table.runs.set_index("run_id")["loss"].to_dict() == pytest.approx(
        {"a": 5.0 - 0.3 - 0.01, "b": 5.0 - 0.3 - 0.1}
    )
    assert table.curves["tokens_seen"].max() == pytest.approx(1e6)
    assert "step" not in table.runs.columns


def test_fit_of_the_known_law_answers_with_its_values(tmp_path: Path):
    fit = known_fit(tmp_path)
    for name, value in KNOWN.params.items():
        assert fit.law.params[name] == pytest.approx(value, rel=1e-3), name
    answer = fit.answer(params=1e6, tokens=2e8)
    truth = KNOWN.predict(n_params=1e6, tokens=2e8)
    assert answer.outputs["loss"].value == pytest.approx(truth, rel=1e-4)
    assert answer.inputs["compute"] == pytest.approx(6 * 1e6 * 2e8)
    assert answer.warnings == []
    optimal = fit.answer(compute=1e15)
    n_opt, d_opt = KNOWN.optimal_allocation(1e15)
    assert optimal.outputs["n_params"].value == pytest.approx(float(n_opt), rel=1e-3)
    assert optimal.outputs["tokens"].value == pytest.approx(float(d_opt), rel=1e-3)
    needed = fit.answer(loss=3.0).outputs["compute"]
    assert needed.value == pytest.approx(KNOWN.compute_for_loss(3.0), rel=1e-3)
    far = fit.answer(compute=fit.data["max_compute"] * EXTRAPOLATION_WARN * 2)
    assert far.extrapolation == pytest.approx(2 * EXTRAPOLATION_WARN)
    assert "past the largest fitted compute" in far.warnings[0]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"params": 1e6}, "needs --params and --tokens"),
        ({"compute": 1e15, "params": 1e6}, "not both"),
        ({"loss": 2.0, "compute": 1e15}, "--loss cannot be combined"),
        ({"params": -1.0, "tokens": 1e6}, "--params must be positive"),
        ({}, "give --params and --tokens"),
    ],
)
def test_answer_rejects_incomplete_or_conflicting_queries(tmp_path, query, message):
    fit = known_fit(tmp_path, resamples=4)
    with pytest.raises(ValueError, match=message):
        fit.answer(**query)


def test_fit_record_round_trips_through_the_workspace_store(tmp_path: Path):
    fit = known_fit(tmp_path, resamples=4)
    ws = Workspace.resolve(tmp_path / "ws")
    store = FitStore(ws)
    assert store.latest("syn") is None
    store.save(fit)
    for loaded in (
        store.latest("syn"),
        store.latest("syn", "chinchilla"),
        store.for_data(fit.data["fingerprint"], "chinchilla", None),
    ):
        assert loaded is not None
        assert loaded.law.params == fit.law.params
        a, b = loaded.answer(compute=1e16), fit.answer(compute=1e16)
        assert a.outputs["loss"].lo == b.outputs["loss"].lo
    assert store.latest("syn", "kaplan") is None
    assert (store.path("syn").stat().st_mode & 0o777) == 0o644


def test_a_record_written_before_law_auto_still_reads(tmp_path: Path):
    fit = known_fit(tmp_path, resamples=4)
    payload = fit.to_dict()
    assert payload["requested"] == "chinchilla" and payload["choice"] is None
    for key in ("requested", "choice", "form_error"):  # the fields issue 12 added
        payload.pop(key)
    old = Fit.from_dict(payload)
    assert old.key == "chinchilla" and old.choice is None and old.form_error is None
    answer = old.answer(params=1e8, tokens=2e10)
    assert answer.calibration is None
    assert answer.outputs["loss"].value == fit.law.predict(n_params=1e8, tokens=2e10)


def test_auto_on_a_law_of_c_answers_n_and_d_at_their_compute_and_says_so(tmp_path: Path):
    # Every run saw the same D: no law of N and D can be fitted, so auto falls back to a law
    # of C, which still answers a planned N and D, as the frontier's loss at 6·N·D.
    n = np.geomspace(1e6, 1e8, 8)
    runs = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(8)],
            "n_params": n,
            "tokens": 1e9,
            "loss": 2 + 30 * n**-0.3,
        }
    )
    runs.to_csv(tmp_path / "runs.csv", index=False)
    table = read_csv_table(tmp_path / "runs.csv")
    auto = fit_table(table, experiment="same-d", law="auto", n_resamples=4, n_jobs=1)
    assert auto.choice is not None and auto.law.variables == ("compute",)
    answer = auto.answer(params=1e9, tokens=1e10)
    at_c = auto.answer(compute=6e19)
    assert answer.question == "compute_optimal"
    assert answer.outputs["loss"] == at_c.outputs["loss"]
    assert "a law of C" in answer.warnings[0] and "6·N·D = 6e+19" in answer.warnings[0]
    plain = fit_table(table, experiment="same-d", law="compute", n_resamples=4, n_jobs=1)
    with pytest.raises(ValueError, match="give --compute"):
        plain.answer(params=1e9, tokens=1e10)  # an explicit law of C is not second-guessed


def test_auto_fits_are_filed_under_auto_and_widen_by_the_benchmarks_form_error(tmp_path: Path):
    table = read_csv_table(write_csv(tmp_path / "runs.csv"))
    auto = fit_table(table, experiment="syn", law="auto", n_resamples=4, n_jobs=1)
    assert auto.key == "auto" and auto.choice is not None and auto.form_error is not None
    assert auto.law_key == auto.choice.form.name
    store = FitStore(Workspace.resolve(tmp_path / "ws"))
    store.save(auto)
    assert store.latest("syn", "auto").choice == auto.choice
    cached = store.for_data(auto.data["fingerprint"], "auto", None)
    assert cached is not None and cached.choice == auto.choice
    # A fit cached under an older rule is not reused: the benchmark refitted auto's rule.
    store.save(replace(auto, choice=replace(auto.choice, rule="always chinchilla")))
    assert store.for_data(auto.data["fingerprint"], "auto", None) is None
    far = 1e3 * auto.data["max_compute"]
    answer = auto.answer(compute=far)
    plain = auto.boot.predict(compute=far)
    k = auto.form_error.per_decade(3.0, plain.level)
    assert answer.calibration == pytest.approx({"per_decade": k, "decades": 3.0})
    got = answer.outputs["loss"]
    assert got.value == plain.value and got.lo < plain.lo and got.hi > plain.hi
    # --loss: the compute a loss needs is as uncertain as the loss at that compute.
    needs = auto.answer(loss=float(got.value))
    bare = auto.boot.compute_for_loss(float(got.value))
    widened = needs.outputs["compute"]
    assert widened.value == pytest.approx(far, rel=1e-6)
    assert widened.lo < bare.lo and widened.hi > bare.hi
    assert needs.calibration == pytest.approx({"per_decade": k, "decades": 3.0}, rel=1e-6)
    # The calibrated loss band at the interval's ends reaches the loss asked for.
    low = auto.answer(compute=float(widened.lo)).outputs["loss"]
    assert low.lo == pytest.approx(got.value, rel=0.01)
    if math.isfinite(widened.hi):
        high = auto.answer(compute=float(widened.hi)).outputs["loss"]
        assert high.hi == pytest.approx(got.value, rel=0.01)
    inside = auto.answer(loss=float(table.runs["loss"].median())).outputs["compute"]
    assert inside == auto.boot.compute_for_loss(float(table.runs["loss"].median()))


def test_a_stored_fit_answers_with_the_calibration_the_package_ships_now(tmp_path: Path):
    from scalelab.forecast.calibration import FormError, stored_form_error

    table = read_csv_table(write_csv(tmp_path / "runs.csv"))
    fit = fit_table(table, experiment="syn", law="compute", n_resamples=4, n_jobs=1)
    assert fit.form_error == stored_form_error("compute") is not None
    store = FitStore(Workspace.resolve(tmp_path / "ws"))
    # A record made before the benchmark was rerun: its own form-error model is older.
    store.save(replace(fit, form_error=FormError(sigma=1.0, gamma=1.0, nu=3.0)))
    again = store.latest("syn", "compute")
    assert again.form_error == stored_form_error("compute")
    far = 1e3 * fit.data["max_compute"]
    assert again.answer(compute=far).outputs["loss"] == fit.answer(compute=far).outputs["loss"]
