"""μP sweeps: the spec's parametrization fields, and tuning at the base width only."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from scalelab.data import prepare
from scalelab.sweep.coordinator import run_sweep
from scalelab.sweep.spec import SpecError, parse_spec
from scalelab.sweep.study import Sweep
from scalelab.sweep.trial import run_fields
from scalelab.train import TrainConfig
from scalelab.workspace import Workspace

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)

# n100k is d_model 64 (the base), n300k d_model 80; both above the sizes trained in groups.
SPEC = {
    "name": "mup",
    "corpus": "stdlib-notests",
    "context": 64,
    "sizes": ["n100k", "n300k"],
    "budgets": {"tokens": [64 * 8 * 20]},
    "parametrization": "mup",
    "mup_base_width": 64,
    "search": {
        "sampler": "grid",
        "trials": 2,
        "lr": [3e-3, 3e-2],
        "batch_size": 8,
        "lr_tuning": "base_width",
    },
    "validations": 2,
    "train": {"val_tokens": 64 * 16},
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mup_base_width": None}, "mup_base_width: give it"),
        ({"parametrization": "standard"}, "mup_base_width: give it"),
        (
            {"parametrization": "standard", "mup_base_width": None},
            "lr_tuning: base_width reuses one learning rate",
        ),
        (
            {"mup_base_width": 96},
            r"sizes: lr_tuning: base_width searches at d_model 96.*\[64, 80\]",
        ),
        ({"train": {"parametrization": "mup"}}, "'parametrization' is set by the sweep itself"),
    ],
)
def test_mup_fields_are_validated_naming_the_field(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**SPEC, **changes})


def test_cells_off_the_base_width_reuse_its_cell_and_train_in_mup() -> None:
    spec = parse_spec(SPEC)
    base, wide = spec.cells()
    assert (base.d_model, base.tuned_at, spec.trials_of(base)) == (64, None, 2)
    assert (wide.d_model, wide.tuned_at, spec.trials_of(wide)) == (80, base.key, 1)
    cfg = TrainConfig(**run_fields(spec, wide, 0, {"lr": 3e-3, "warmup": 0.05, "batch_size": 8}))
    assert (cfg.parametrization, cfg.mup_base_width) == ("mup", 64)
    assert cfg.model_cfg(256).width_mult == 80 / 64
    # Standard specs keep the identity (and so the hash) they had before μP existed.
    standard = {**SPEC, "parametrization": "standard", "mup_base_width": None}
    standard["search"] = {k: v for k, v in SPEC["search"].items() if k != "lr_tuning"}
    identity = parse_spec(standard).identity()
    assert "parametrization" not in identity and "lr_tuning" not in identity["search"]
    assert parse_spec(SPEC).identity()["lr_tuning"] == "base_width"


@pytest.mark.slow  # three Lightning trials with their MLflow runs: 30 s idle, minutes when busy
def test_the_wider_cell_runs_once_with_the_base_widths_best_parameters(
    workspace: Workspace,
) -> None:
    spec = parse_spec(SPEC)
    corpus = prepare(spec.corpus, spec.tokenizer, cache_dir=workspace.cache_dir).corpus_hash
    sweep = Sweep(spec, f"journal:{workspace.root / 'optuna-journal.log'}", workspace)
    summary = run_sweep(sweep, corpus, echo=lambda _: None)
    assert summary.complete
    base, wide = (sweep.study(cell).get_trials() for cell in sweep.cells)
    assert [t.state for t in base] == [TrialState.COMPLETE] * 2
    assert {t.params["lr"] for t in base} == {3e-3, 3e-2}  # the base width searched the grid
    best = min(base, key=lambda t: t.value)
    assert len(wide) == 1 and wide[0].state == TrialState.COMPLETE
    assert wide[0].params == best.params
