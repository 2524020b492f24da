"""A sweep uses Optuna's experimental heartbeat features without printing their warnings,
and without hiding the warnings of anything else."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna

from scalelab.sweep.spec import HeartbeatSpec
from scalelab.sweep.storage import open_storage
from scalelab.sweep.study import Sweep
from scalelab.sweep.worker import _unbounded_retry


def test_heartbeat_features_raise_no_experimental_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hb = HeartbeatSpec(interval=1, grace=2, max_retry=0)
        for url in (f"sqlite:///{tmp_path / 'o.db'}", f"journal:{tmp_path / 'j.log'}"):
            storage = open_storage(url, hb)
            study = optuna.create_study(study_name="hb", storage=storage)
            Sweep.fail_stale(SimpleNamespace(fail_dead_local_trials=lambda s: None), study)
            assert _unbounded_retry(storage.get_heartbeat_stale_trial_callback()) is not None
        optuna.storages.fail_stale_trials(study)  # outside scalelab's calls: still warned
    experimental = [w for w in caught if w.category is optuna.exceptions.ExperimentalWarning]
    assert len(experimental) == 1 and Path(experimental[0].filename) == Path(__file__)
