"""μP learning-rate transfer on the real corpus, at a cost a test can pay.

The full grid (4 widths x 6 learning rates, with and without μP) is
``analysis/mup_transfer.py``; measured there with these settings, the best learning rate moved
0 grid steps from width 32 to 256 under μP and 3 (a factor 8, to the grid's edge) without.
Here two widths and the two learning rates that matter: the best of width 32, and a quarter
of it, the best of width 128 in the standard parametrisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from scalelab.data import prepare
from scalelab.studies import mup_transfer
from scalelab.studies.mup_transfer import PARAMETRISATIONS, GridSettings, lr_grid, tracked_grids
from scalelab.workspace import Workspace

BASE_BEST, QUARTER = 2**-7, 2**-9  # 7.8e-3 and 2.0e-3


@pytest.mark.slow  # six 50-step runs: about 25 s on two idle cores
def test_the_base_widths_learning_rate_stays_best_at_4x_width_only_under_mup(
    token_cache: Path,
) -> None:
    data = prepare("stdlib", "byte", cache_dir=token_cache)
    settings = GridSettings(val_tokens=4096)  # the analysis settings, a smaller validation
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grid = {
            name: lr_grid(
                data.train, data.val, data.vocab_size, widths, (QUARTER, BASE_BEST), base, settings
            )
            for name, widths, base in (
                ("base", (32,), None),
                ("standard", (128,), None),
                ("mup", (128,), 32),
            )
        }
    finally:
        torch.set_num_threads(threads)
    # Losses [QUARTER, BASE_BEST]; measured 3.48 > 2.77 at width 32, then at width 128
    # 2.68 < 2.75 in the standard parametrisation and 3.50 > 2.74 under μP.
    assert grid["base"].best == (1,), grid["base"]
    assert grid["standard"].best == (0,), grid["standard"]  # moved down a factor 4
    assert grid["mup"].best == (1,), grid["mup"]  # stayed


@pytest.mark.slow  # eight 3-step runs and their MLflow records
def test_every_grid_point_is_an_mlflow_run_and_a_recorded_point_is_not_retrained(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    data = prepare("stdlib", "byte", cache_dir=workspace.cache_dir)
    settings = GridSettings(n_head=2, context=16, batch_size=4, steps=3, val_tokens=512)
    widths, lrs = (16, 32), (1e-3, 1e-2)
    grids, run_ids = tracked_grids(data, widths, lrs, settings, workspace)
    direct = lr_grid(data.train, data.val, data.vocab_size, widths, lrs, 16, settings)
    for tracked, alone in zip(grids["mup"].losses, direct.losses, strict=True):
        assert tracked == pytest.approx(alone, rel=1e-6)
    assert len(run_ids) == len(PARAMETRISATIONS) * len(widths) * len(lrs)

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    run = client.get_run(run_ids[("mup", 32, 1e-2)])
    assert run.info.status == "FINISHED" and run.data.params["mup_base_width"] == "16"
    assert run.data.metrics["loss"] == pytest.approx(grids["mup"].losses[1][1])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == settings.steps

    def no_training(*args: object, **kwargs: object) -> float:
        raise AssertionError("a recorded point was trained again")

    monkeypatch.setattr(mup_transfer, "final_loss", no_training)
    again, ids = tracked_grids(data, widths, lrs, settings, workspace)
    assert again == grids and ids == run_ids
    # Other settings are other points: they train.
    with pytest.raises(AssertionError, match="trained again"):
        tracked_grids(data, widths, lrs, replace(settings, steps=4), workspace)
