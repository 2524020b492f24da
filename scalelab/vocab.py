"""The shared vocabulary as code: one definition of every name the parts of scalelab exchange.

The same names are MLflow params, metrics and tags, CSV columns, DataFrame columns and CLI
words (the README's Vocabulary table). Every module that writes or reads them imports them
from here, so a second spelling cannot drift. Imports nothing heavy: the analysis package, the
CLI's ``--help`` and the configs read it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

# ---- run columns (MLflow params and metrics, CSV and DataFrame columns) ----------------------
N_PARAMS = "n_params"  # non-embedding parameters N (Kaplan et al. 2020)
N_PARAMS_TOTAL = "n_params_total"  # every parameter
TOKENS = "tokens"  # training tokens D
COMPUTE = "compute"  # training FLOPs C = 6·N·D
COMPUTE_FULL = "compute_full"  # the model's full FLOPs per token (attention, unembedding) × D
LOSS = "loss"  # final validation loss, nats/token
STEP = "step"
TOKENS_SEEN = "tokens_seen"  # position of an intermediate validation loss
VAL_LOSS = "val/loss"  # the metric holding a run's validation curve
RUN_ID = "run_id"
UNIGRAM = "unigram"  # the validation split's unigram entropy, nats/token (the plateau L0)

# Numeric parameters of a training run, read back as floats.
NUMERIC_PARAMS: tuple[str, ...] = (N_PARAMS, N_PARAMS_TOTAL, TOKENS, COMPUTE, COMPUTE_FULL)
# Where a run came from, and what its loss is comparable with: MLflow tags of a run.
RUN_TAGS: tuple[str, ...] = ("sweep", "cell", "trial", "corpus", "tokenizer")

# ---- a sweep cell's budget, logged as numbers on every trial ---------------------------------
BudgetKind = Literal["compute", "tokens", "tokens_per_param", "steps"]
BUDGET_KINDS: tuple[str, ...] = get_args(BudgetKind)
BUDGET = "budget"  # the cell's budget value, in the units of its kind
BUDGET_KIND = "budget_kind"

# ---- models -----------------------------------------------------------------------------------
# gpt2-noresidual, gpt2-nonorm, gpt2-attnonly: GPT-2 without one part (scalelab/model.py).
Variant = Literal[
    "gpt1", "gpt2", "gpt3", "llama", "gpt2-noresidual", "gpt2-nonorm", "gpt2-attnonly"
]
VARIANTS: tuple[str, ...] = get_args(Variant)

# ---- scaling laws -----------------------------------------------------------------------------
# The law ``fit``, ``predict``, ``backtest``, dashboards and sweeps use when none is named. The
# laws themselves (and the names users type) are registered in ``scalelab.forecast.laws``.
# ``auto`` picks the form from the runs by the rule the forecasting benchmark learned
# (``scalelab.forecast.chooser``, ``analysis/forecast-benchmark.md``).
AUTO_LAW = "auto"
DEFAULT_LAW = AUTO_LAW

# ---- capabilities -------------------------------------------------------------------------------
# Metrics of a run's evaluation suites (``scalelab.evals``): ``pass_rate.<suite>`` is the share
# of a suite's problems greedy decoding solves, ``pass_at_<k>.<suite>`` the mean pass@k.
PASS_RATE = "pass_rate"
EVAL_METRIC_PREFIXES = (f"{PASS_RATE}.", "pass_at_")
# The GPT-4 report's capability metric, −mean log pass rate over the problems the smallest
# runs solve: computed from the per-problem tables, never logged as a run metric.
MEAN_LOG_PASS = "mean_log_pass"

# ---- compute ------------------------------------------------------------------------------------
# Training FLOPs per parameter per token: 2 for the forward pass, 4 for the backward (Kaplan
# et al. 2020, Sec. 2.1). Attention and the unembedding are left out: ``COMPUTE_FULL`` has them.
FLOPS_PER_PARAM_TOKEN = 6.0


def compute_6nd(n_params: Any, tokens: Any) -> Any:
    """Training compute C = 6·N·D (floats, arrays or Series)."""
    return FLOPS_PER_PARAM_TOKEN * n_params * tokens


def tokens_for_compute(compute: Any, n_params: Any) -> Any:
    """Tokens D = C / (6·N): the inverse of :func:`compute_6nd`."""
    return compute / (FLOPS_PER_PARAM_TOKEN * n_params)
