"""Sweeps: Optuna studies that train the GPT family across sizes and budgets.

A sweep spec (``sweeps/*.yaml``, validated by ``spec.SweepSpec``) defines cells (size ×
budget × seed); each cell is one Optuna study whose trials are training runs, each a nested
MLflow run under the sweep's parent run.

Modules: ``spec`` (the YAML and its cells), ``storage`` (journal, SQLite or PostgreSQL, with
heartbeats), ``study`` (a sweep in storage: slots, resume, recovery, results), ``trial`` (one
trial: sampling, training, outcome), ``callbacks`` (pruning by tokens seen), ``worker`` (the
claim-and-train loop), ``coordinator`` (``open_sweep`` and ``run_sweep``: what ``scalelab sweep
run`` and studies call), ``report`` (tables and the end-of-sweep fit). The sweep's MLflow runs
are written by ``scalelab.results.sweep_runs``; the commands live in ``scalelab.cli.sweep``.

Importing this package imports nothing heavy: the CLI loads Optuna, MLflow and Lightning only
inside its commands.
"""
