"""Loaders, input validation, the shipped data and the import footprint of scalelab.forecast."""

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.forecast import load_epoch_chinchilla, load_runs_csv, prepare_runs

DATA = Path(__file__).resolve().parents[1] / "analysis" / "data"


def test_import_does_not_pull_in_torch_lightning_or_mlflow():
    code = (
        "import sys, scalelab.forecast\n"
        "heavy = ('torch', 'lightning', 'pytorch_lightning', 'mlflow')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_shipped_data_match_the_checksums_in_provenance():
    table = (DATA / "PROVENANCE.md").read_text()
    sums = dict(re.findall(r"\| `([\w.]+\.csv)` \|.*\| `([0-9a-f]{64})` \|", table))
    assert set(sums) == {p.name for p in DATA.glob("*.csv")}
    for name, digest in sums.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def test_load_runs_csv_renames_and_derives_compute(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": [1e8, 2e8], "D": [2e9, 4e9], "loss": [3.1, 2.9]}).to_csv(path, index=False)
    df = load_runs_csv(path, rename={"N": "n_params", "D": "tokens"})
    np.testing.assert_allclose(df["compute"], 6 * df["n_params"] * df["tokens"])


def test_load_runs_csv_names_missing_columns(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"n_params": [1e8], "tokens": [2e9]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no 'loss' column"):
        load_runs_csv(path)
    with pytest.raises(ValueError, match=r"no column\(s\) \['N'\] to rename"):
        load_runs_csv(path, rename={"N": "n_params"})


def test_load_epoch_chinchilla_drops_the_five_highest_losses():
    path = DATA / "epoch_chinchilla_svg_extracted_data.csv"
    full = load_epoch_chinchilla(path, drop_highest=0)
    kept = load_epoch_chinchilla(path)
    assert (len(full), len(kept)) == (245, 240)
    assert kept["loss"].max() < full["loss"].nlargest(5).min()
    assert kept["run_id"].is_unique
    np.testing.assert_allclose(kept.tokens * 6 * kept.n_params, kept.compute)


def test_prepare_runs_rejects_what_is_not_a_table_of_runs():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        prepare_runs([{"n_params": 1e8}], ("n_params",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no runs given"):
        prepare_runs(pd.DataFrame({"n_params": [], "loss": []}), ("n_params",))
