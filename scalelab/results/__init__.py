"""The results layer: the only code that reads or writes runs, fits and forecasts.

- ``tracking``: MLflow clients, experiments, loggers for training runs, JSON artifacts;
- ``runs``: training runs as tables (final losses, validation curves, best trial per cell),
  from MLflow or CSV;
- ``fits``: fit records (one schema) in MLflow and the workspace cache, and the queries they
  answer;
- ``forecasts``: pre-registered forecast runs of a study and their outcomes.

Everything above it (sweeps, studies, the CLI, dashboards) asks through plain functions that
return DataFrames or dataclasses; ``scalelab.forecast`` below it never sees MLflow.
"""
