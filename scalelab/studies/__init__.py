"""End-to-end studies built on the sweep coordinator, the results layer and the analysis:
``predictable`` trains a ladder, forecasts runs 10-1000x larger before training them, and
scores the forecasts."""
