"""What one pretraining run trains and logs: its optimizer steps and tokens from the config,
and the parameters it logs in the shared vocabulary. Below ``scalelab.train`` (which runs it)
and the grouped trainer (which runs several at once), so neither imports the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalelab.training.config import TrainConfig
from scalelab.vocab import compute_6nd

if TYPE_CHECKING:
    from scalelab.data import TokenData
    from scalelab.model import GPTConfig


def run_params(cfg: TrainConfig, model_cfg: GPTConfig, data: TokenData, tokens: int) -> dict:
    """The parameters logged to MLflow, in the project's shared vocabulary."""
    n_params = model_cfg.n_params_nonembedding
    return {
        "variant": model_cfg.variant,
        "n_layer": model_cfg.n_layer,
        "n_head": model_cfg.n_head,
        "d_model": model_cfg.d_model,
        "context": model_cfg.context,
        "vocab_size": model_cfg.vocab_size,
        "n_params": n_params,
        "n_params_nonembedding": n_params,
        "n_params_total": model_cfg.n_params_total,
        "n_params_chinchilla": model_cfg.n_params_chinchilla,
        "tokens": tokens,
        "compute": round(compute_6nd(n_params, tokens)),  # logged as an integer, as always
        "compute_full": model_cfg.flops_per_token(include_embedding=True) * tokens,
        "corpus": data.corpus_hash,
        "corpus_source": cfg.corpus,
        "tokenizer": data.tokenizer_id,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "warmup": cfg.warmup,
        "schedule": cfg.schedule,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "preset": cfg.preset or "",
        "gelu": model_cfg.gelu,
        "compile": cfg.compile,
        "parametrization": "mup" if model_cfg.mup_base_width else "standard",
        "mup_base_width": model_cfg.mup_base_width or "",
    }


def budget(cfg: TrainConfig) -> tuple[int, int, int]:
    """Optimizer steps, the tokens they train on (``cfg.tokens`` in whole steps, at least
    one) and the steps between validations (``cfg.val_every`` tokens, or a tenth)."""
    tokens_per_step = cfg.batch_size * cfg.context
    steps = max(1, cfg.tokens // tokens_per_step)
    tokens = steps * tokens_per_step
    return steps, tokens, max(1, (cfg.val_every or tokens // 10) // tokens_per_step)
