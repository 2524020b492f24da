"""Capability evaluations: programmatic suites checked by code, run at a trial's end.

``suites`` holds the held-out problem sets (seeded, never in the training split), ``sandbox``
runs generated programs in a locked-down child interpreter, ``decode`` completes prompts with
a model (greedy, and n samples for pass@k) and ``run`` evaluates a model on named suites.
"""
