"""The forecasting benchmark: every form, average and rule scored leave-one-source-out on
published ladders (``scalelab benchmark forecasts``); it stores the default ``--law auto``
reads and writes ``analysis/forecast-benchmark.md``."""
