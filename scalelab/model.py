"""The GPT family in one file: GPT-1/2/3 and LLaMA-style blocks, μP, exact counts, FLOPs, presets.

Four published designs share one implementation and differ by ``GPTConfig.variant``:

- ``gpt1`` (Radford et al. 2018): post-LayerNorm blocks, ``x = LN(x + sublayer(x))`` as in the
  original Transformer, learned positions, no final LayerNorm, plain N(0, 0.02) init.
- ``gpt2`` (Radford et al. 2019, §2.3): pre-LayerNorm blocks, ``x = x + sublayer(LN(x))``, a final
  LayerNorm ``ln_f``, residual projections initialised with std 0.02/sqrt(2·n_layer).
- ``gpt3`` (Brown et al. 2020, §2.1): GPT-2 blocks whose attention alternates layer by layer
  between dense causal (even layers 0, 2, ...) and locally banded causal (odd layers), "similar to
  the Sparse Transformer". In a banded layer position i attends to itself and the
  ``band_window`` previous positions: i - band_window <= j <= i.
- ``llama`` (Touvron et al. 2023, §2.2): pre-normalisation with RMSNorm (Zhang & Sennrich 2019)
  instead of LayerNorm, a SwiGLU MLP (Shazeer 2020) of hidden width 8/3·d_model rounded to a
  multiple of 8, rotary position embeddings (Su et al. 2021) instead of ``wpe``, no biases, and
  an untied unembedding by default (``tie_embeddings`` switches it).

Three ablations of ``gpt2``, each removing one part popular accounts call indispensable, so
that its cost can be measured as a scaling curve: ``gpt2-noresidual`` (each sub-block's output
replaces the stream instead of being added to it), ``gpt2-nonorm`` (no LayerNorm anywhere,
``ln_f`` included) and ``gpt2-attnonly`` (no MLP: blocks of attention alone). Everything else,
init included, is GPT-2's.

``mup_base_width`` switches on the maximal-update parametrisation (μP; Yang et al. 2022, "Tensor
Programs V", Table 8, Adam column), relative to a model of that width, so at the base width the
model is the standard one except for attention's 1/d_head: with the width multiplier
m = d_model / mup_base_width, hidden matrices (every matrix inside the blocks, both of whose
dimensions grow with width) start with std 0.02/√m and train at Adam learning rate lr/m
(``GPT.lr_scales``); embeddings, gains, biases and the unembedding keep their init and rate; the
logits are multiplied by 1/m (the readout multiplier); attention scores are scaled by 1/d_head
instead of 1/√d_head (keys and queries become correlated in training, so their dot product grows
as d_head, not √d_head). Then each layer's activations move by O(1) per step at any width and the
best learning rate found at the base width holds at others.

Parameter counts (exact, equal to the built model's ``sum(p.numel())``):

- ``n_params_total``: every distinct parameter; a tied ``lm_head`` shares ``wte`` and counts once.
- ``n_params_nonembedding`` (Kaplan et al. 2020, §2.1, the N of their laws and our ``n_params``):
  all parameters except the token embedding ``wte``, the position embedding ``wpe`` (gpt1-3) and
  the unembedding ``lm_head`` weight (which is ``wte`` when tied), so N does not depend on tying.
  LayerNorm gains and biases are included (Kaplan's 12·n_layer·d_model² approximation drops them).
  A llama block holds 4·d² + 3·d·hidden + 2·d (hidden ≈ 8/3·d, so ≈ 12·d²).
- ``n_params_chinchilla`` (Hoffmann et al. 2022): the total count, embeddings included; Hoffmann
  et al. fit their laws on total parameters, so it equals ``n_params_total``.

Size rule for presets and ``config_for_params``: depth is the size knob and width follows it with
``d_model ≈ 32·n_layer`` (aspect ratio 32: one layer at ~1e4 non-embedding parameters, twelve at
~2e7). Kaplan et al. 2020 (§3.1, Fig. 5) find that at fixed N the loss changes by only a few
percent across a wide range of aspect ratios, so the rule matters less than using the same one in
every sweep. Head dimension: 8 below d_model 64, 16 below 256, 32 above; widths are multiples of
it. A target N picks, among shapes within 10% of it, the one closest to aspect 32; only at the
smallest sizes, where width steps of 8 are coarse, does the shape stray far from the rule.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from scalelab.vocab import VARIANTS, Variant

MAX_VOCAB = 65535  # token ids are cached as uint16 by the data pipeline
INIT_STD = 0.02  # GPT-1 §4.1 and GPT-2: N(0, 0.02) for every weight matrix and embedding
RMS_NORM_EPS = 1e-5  # LLaMA's; torch's default (the dtype's epsilon) is 1e-7 in fp32
ROPE_BASE = 10_000.0  # rotary frequencies base^(-2i/head_dim), as in RoFormer and LLaMA
Gelu = Literal["tanh", "exact"]
GELU_FORMS: tuple[str, ...] = get_args(Gelu)


def swiglu_hidden(d_model: int) -> int:
    """SwiGLU's hidden width: 8/3·d_model rounded to a multiple of 8. Its three d×hidden matrices
    then hold about the 8·d² of GPT's two d×4d ones, so N stays comparable across variants
    (Shazeer 2020; LLaMA rounds to 256, too coarse at these widths)."""
    return 8 * max(1, round(d_model / 3))


def _norm_params(variant: str, d_model: int, bias: bool) -> int:
    """One norm: LayerNorm's d gains (+ d biases), RMSNorm's d gains, or none (gpt2-nonorm)."""
    if variant == "gpt2-nonorm":
        return 0
    return d_model * (2 if bias and variant != "llama" else 1)


def _block_params(variant: str, d_model: int, bias: bool) -> int:
    """Parameters of one block. Attention: c_attn 3d² and c_proj d² (+ 4·d biases). MLP: GPT's
    c_fc 4d² and c_proj 4d² (+ 5·d biases), or llama's SwiGLU 3·d·hidden (c_fc 2·d·hidden,
    c_proj hidden·d), or none (gpt2-attnonly). A norm before each sub-block."""
    norm = _norm_params(variant, d_model, bias)
    attention = 4 * d_model**2 + (4 * d_model if bias else 0) + norm
    if variant == "gpt2-attnonly":
        return attention
    if variant == "llama":
        return attention + 3 * d_model * swiglu_hidden(d_model) + norm
    return attention + 8 * d_model**2 + (5 * d_model if bias else 0) + norm


def _nonembedding_params(variant: str, n_layer: int, d_model: int, bias: bool) -> int:
    final_norm = 0 if variant == "gpt1" else _norm_params(variant, d_model, bias)  # GPT-1: no ln_f
    return n_layer * _block_params(variant, d_model, bias) + final_norm


@dataclass(frozen=True)
class GPTConfig:
    """Shape and design of one GPT; validated on construction, JSON-serialisable via ``to_dict``.

    ``context`` is the maximum sequence length (the size of ``wpe``, or of llama's rotary
    tables); ``band_window`` only affects the banded layers of ``gpt3``. The MLP width is
    4·d_model, as in GPT-1/2/3, and ``swiglu_hidden(d_model)`` for llama. ``bias`` and
    ``tie_embeddings`` left unset take the variant's design: biases and tying for gpt1-3, neither
    for llama (which refuses biases). ``mup_base_width`` set: μP relative to that width.
    """

    variant: Variant = "gpt2"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    context: int = 256
    vocab_size: int = 256
    dropout: float = 0.0
    bias: bool | None = None
    tie_embeddings: bool | None = None
    band_window: int = 64
    gelu: Gelu = "tanh"
    mup_base_width: int | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("n_layer", "n_head", "d_model", "context", "vocab_size", "band_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy/optuna ints -> int, for JSON
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model must be a multiple of n_head, got d_model={self.d_model}, "
                f"n_head={self.n_head}"
            )
        if self.vocab_size > MAX_VOCAB:
            raise ValueError(f"vocab_size must be in [1, {MAX_VOCAB}], got {self.vocab_size}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        object.__setattr__(self, "dropout", float(dropout))
        if self.gelu not in GELU_FORMS:
            raise ValueError(f"gelu must be one of {GELU_FORMS}, got {self.gelu!r}")
        llama = self.variant == "llama"
        for name in ("bias", "tie_embeddings"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, not llama)  # the variant's own design
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if llama and self.bias:
            raise ValueError("bias: the llama variant has no biases; leave bias unset or False")
        if llama and self.head_dim % 2:
            raise ValueError(
                f"d_model / n_head must be even for llama's rotary embeddings, got "
                f"head_dim={self.head_dim}"
            )
        base = self.mup_base_width
        if base is not None:
            if isinstance(base, bool) or not isinstance(base, numbers.Integral) or base < 1:
                raise ValueError(f"mup_base_width must be an integer >= 1, got {base!r}")
            object.__setattr__(self, "mup_base_width", int(base))

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """The preset ``name`` (see ``PRESETS``) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain fields, so that ``GPTConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg``."""
        return asdict(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def width_mult(self) -> float:
        """μP's width multiplier m = d_model / mup_base_width; 1 in the standard parametrisation."""
        return 1.0 if self.mup_base_width is None else self.d_model / self.mup_base_width

    def is_banded(self, layer: int) -> bool:
        """Whether block ``layer`` uses banded attention: odd layers of ``gpt3`` (GPT-3 §2.1)."""
        return self.variant == "gpt3" and layer % 2 == 1

    @property
    def n_params_nonembedding(self) -> int:
        """Kaplan's N: everything but ``wte``, ``wpe`` and the ``lm_head`` weight (exact)."""
        return _nonembedding_params(self.variant, self.n_layer, self.d_model, self.bias)

    @property
    def n_params(self) -> int:
        """The project's ``n_params``: the non-embedding count."""
        return self.n_params_nonembedding

    @property
    def n_params_total(self) -> int:
        """All distinct parameters; a tied ``lm_head`` is counted once, as ``wte``."""
        positions = 0 if self.variant == "llama" else self.context  # llama's are rotary
        embeddings = (self.vocab_size + positions) * self.d_model
        unembedding = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        return self.n_params_nonembedding + embeddings + unembedding

    @property
    def n_params_chinchilla(self) -> int:
        """Hoffmann et al. 2022 count total parameters, embeddings included: ``n_params_total``."""
        return self.n_params_total

    def flops_per_token(self, include_embedding: bool = False) -> float:
        """Training (forward + backward) FLOPs per token at full ``context``.

        ``6·N + 12·n_layer·d_model·context`` with N non-embedding (PaLM, Chowdhery et al. 2022,
        appendix B; Kaplan et al. 2020 Table 1 has the same 6N): 2 FLOPs per multiply-add in the
        forward pass and twice that in the backward pass. The attention term counts both the
        QKᵀ scores and the weights·V product over the full T×T square (2·2·T·d_model per token
        and layer forward, times 3). Kaplan's Table 1 writes half of it (2·n_layer·n_ctx·d_attn
        forward), as if only the causal half of the square were computed; SDPA computes the
        whole square, and the explicit band mask of ``gpt3`` skips nothing, so banded layers
        cost the same as dense ones here. For sequences shorter than ``context`` the attention
        term scales with their length.

        ``include_embedding=True`` adds the unembedding matmul, 6·d_model·vocab_size, which
        dominates at the smallest sizes. Embedding lookups, LayerNorm, RMSNorm, softmax, GELU,
        SwiGLU's gating product and the rotary rotation are not counted (they are not matmuls),
        so the formula is the same for every variant; llama's 6N counts its SwiGLU matrices.
        """
        flops = 6.0 * self.n_params_nonembedding + 12.0 * self.n_layer * self.d_model * self.context
        if include_embedding:
            flops += 6.0 * self.d_model * self.vocab_size
        return flops


def band_mask(context: int, window: int) -> torch.Tensor:
    """Boolean (context, context) mask, True where query i may attend key j: i-window <= j <= i."""
    offset = torch.arange(context)[:, None] - torch.arange(context)[None, :]  # i - j
    return (offset >= 0) & (offset <= window)


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021; LLaMA): channel pairs (i, i + head_dim/2) of
    queries and keys are rotated by position·base^(-2i/head_dim), so q·k depends on positions only
    through their difference. Pairing the two halves (GPT-NeoX's layout) rotates with contiguous
    slices, in real arithmetic that torch.compile fuses (it generates no code for complex
    products, LLaMA's own formulation); queries and keys are rotated in one call."""

    def __init__(self, head_dim: int, context: int) -> None:
        super().__init__()
        inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq).repeat(1, 2)
        # Non-persistent, as the band mask: a function of the config, not a learned weight.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, ..., head_dim) rotated by its positions 0..T-1 (dimension 1)."""
        T, middle = x.shape[1], [1] * (x.dim() - 3)  # broadcast over the dimensions between
        cos = self.cos[:T].view(T, *middle, -1).to(x.dtype)  # bf16 under autocast
        sin = self.sin[:T].view(T, *middle, -1).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, banded: bool) -> None:
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        # μP: 1/d_head; None is SDPA's 1/sqrt(d_head).
        self.scale = 1.0 / config.head_dim if config.mup_base_width is not None else None
        self.rotary = Rotary(config.head_dim, config.context) if config.variant == "llama" else None
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # Built once; non-persistent so checkpoints do not carry a context² tensor per layer.
        mask = band_mask(config.context, config.band_window) if banded else None
        self.register_buffer("band_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.unbind(2)
        if self.rotary is not None:  # queries and keys rotated in one product
            q, k = self.rotary(qkv[:, :, :2]).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        if self.band_mask is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=True, scale=self.scale
            )
        else:
            mask = self.band_mask[:T, :T]  # depends on i - j only, so a prefix is the same band
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        # "tanh": the approximation in OpenAI's GPT-1/2 code; "exact": the erf form (nanoGPT).
        # tanh stays the default: benchmarks/bench_gelu.py resolved no speed difference on CPU
        # (median training-step ratio tanh/exact 0.965 over 5 rounds, then 1.041 over 7 with
        # fused AdamW, at L=4 d=128 on 2 busy cores: noise either way), the forms differ by at
        # most 4.7e-4 and trained to the same loss to 4 decimals, and a new default would
        # change the model behind every stored run, checkpoint and sweep resumed after it.
        self.gelu = nn.GELU(approximate="tanh" if config.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class SwiGLU(nn.Module):
    """LLaMA's MLP: c_proj(silu(x·W_gate) ⊙ x·W_up) (Shazeer 2020), the gate and up projections
    as one ``c_fc`` matmul of 2·hidden outputs (one kernel call instead of two)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = swiglu_hidden(config.d_model)
        self.c_fc = nn.Linear(config.d_model, 2 * hidden, bias=False)
        self.c_proj = nn.Linear(hidden, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


def _norm(config: GPTConfig) -> nn.Module:
    """LayerNorm for GPT; torch's RMSNorm (gains only, no mean subtracted) for llama; an
    identity for gpt2-nonorm."""
    if config.variant == "gpt2-nonorm":
        return nn.Identity()
    if config.variant == "llama":
        return nn.RMSNorm(config.d_model, eps=RMS_NORM_EPS)
    return nn.LayerNorm(config.d_model, bias=config.bias)


class Readout(nn.Linear):
    """The unembedding, times μP's readout multiplier ``mult`` (1/m; 1 skips the product), so
    every caller of ``lm_head`` (pre-training, the RLHF heads, sampling) gets the same logits."""

    def __init__(self, d_model: int, vocab_size: int, mult: float) -> None:
        super().__init__(d_model, vocab_size, bias=False)
        self.mult = mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits if self.mult == 1.0 else logits * self.mult


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        self.pre_norm = config.variant != "gpt1"
        self.residual = config.variant != "gpt2-noresidual"
        self.ln_1 = _norm(config)
        self.attn = CausalSelfAttention(config, banded=config.is_banded(layer))
        self.ln_2: nn.Module | None = None
        self.mlp: nn.Module | None = None
        if config.variant != "gpt2-attnonly":
            self.ln_2 = _norm(config)
            self.mlp = SwiGLU(config) if config.variant == "llama" else MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:  # GPT-2 §2.3 (and llama): the norm moved to each sub-block's input
            x = self._add(x, self.attn(self.ln_1(x)))
            return x if self.mlp is None else self._add(x, self.mlp(self.ln_2(x)))
        x = self.ln_1(x + self.attn(x))  # GPT-1 / Vaswani et al.: LayerNorm after the residual add
        return self.ln_2(x + self.mlp(x))

    def _add(self, stream: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """The residual add, or (gpt2-noresidual) the sub-block's output alone."""
        return stream + update if self.residual else update


class GPT(nn.Module):
    """A decoder-only language model with GPT-2's module names (``transformer.wte``, ``h``...)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        layers: dict[str, nn.Module] = dict(wte=nn.Embedding(config.vocab_size, config.d_model))
        if config.variant != "llama":  # llama's positions are rotary, inside attention
            layers["wpe"] = nn.Embedding(config.context, config.d_model)
        self.transformer = nn.ModuleDict(
            dict(
                **layers,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                # GPT-2 adds a final LayerNorm after the last block; GPT-1's blocks already
                # end with one, so it gets an identity here (as gpt2-nonorm from _norm).
                ln_f=nn.Identity() if config.variant == "gpt1" else _norm(config),
            )
        )
        self.lm_head = Readout(config.d_model, config.vocab_size, 1.0 / config.width_mult)
        if config.tie_embeddings:  # Press & Wolf 2017, as in GPT-1/2
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        if config.variant != "gpt1":
            # GPT-2 §2.3: scale the residual-path projections by 1/sqrt(N) with N = 2·n_layer
            # residual adds, so the residual stream's variance does not grow with depth.
            std = INIT_STD / math.sqrt(2 * config.n_layer)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=std)
        if config.mup_base_width is not None:
            # μP: hidden matrices start with variance ∝ 1/fan_in, std/√m relative to the base.
            with torch.no_grad():
                for p in self.hidden_matrices():
                    p.div_(math.sqrt(config.width_mult))

    def hidden_matrices(self) -> list[nn.Parameter]:
        """μP's hidden weights: the matrices inside the blocks, both dimensions ∝ width."""
        return [p for p in self.transformer.h.parameters() if p.dim() == 2]

    def lr_scales(self) -> list[tuple[nn.Parameter, float]]:
        """Parameters whose Adam learning rate is ``lr`` times a factor other than 1: under μP
        the hidden matrices at 1/m (Table 8's Adam column); none in the standard parametrisation.
        """
        if self.config.mup_base_width is None:
            return []
        return [(p, 1.0 / self.config.width_mult) for p in self.hidden_matrices()]

    def compile_blocks(self, **options: Any) -> None:
        """Compile each transformer block in place with ``torch.compile`` (once; ``options`` go
        to it).

        Regional compilation (PyTorch's recipe for repeated blocks): the blocks share one
        ``forward``, so dynamo compiles it once (twice for gpt3, dense and banded) and every
        layer reuses the code, and compile time does not grow with depth as it does when the
        whole model is one graph. In place (``Module.compile``), so ``state_dict`` keys and
        checkpoints are those of the eager model. Embeddings, ``ln_f`` and the loss stay eager.
        """
        if getattr(self, "_blocks_compiled", False):
            return
        for block in self.transformer.h:
            block.compile(**options)
        self._blocks_compiled = True

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def num_params(self, non_embedding: bool = True) -> int:
        """``sum(p.numel())`` over distinct parameters; with ``non_embedding``, less ``wte``,
        ``wpe`` and an untied ``lm_head`` (as ``GPTConfig.n_params_nonembedding``)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if non_embedding:
            n -= sum(
                self.transformer[name].weight.numel()
                for name in ("wte", "wpe")
                if name in self.transformer
            )
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, d_model) of token ids ``idx`` (B, T): after ``ln_f`` for
        gpt2/gpt3/llama, after the last block's LayerNorm for gpt1."""
        seq_len = idx.shape[1]
        if seq_len > self.config.context:
            raise ValueError(f"sequence length {seq_len} exceeds context={self.config.context}")
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(seq_len, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab_size) and, given ``targets`` (B, T), the mean cross-entropy in
        nats per token over targets that are not -100."""
        logits = self.lm_head(self.hidden(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
        return logits, loss


# --- Size rule and presets ------------------------------------------------------------------

ASPECT_RATIO = 32  # d_model / n_layer on the rule
SHAPE_TOLERANCE = 0.10  # shapes within 10% of a target N compete on closeness to the rule
ASPECT_BAND = 10.0  # never farther than 10x from the rule's aspect ratio, either way


def rule_head_dim(d_model: int) -> int:
    """Head dimension of the size rule: 8 below d_model 64, 16 below 256, 32 from 256."""
    return 8 if d_model < 64 else 16 if d_model < 256 else 32


def _rule_width(i: int) -> int:
    """The ``i``-th width (from 0, ascending) that is a multiple of its ``rule_head_dim``: every
    multiple of 8 below 64, of 16 below 256, then of 32."""
    if i < 7:
        return 8 * (i + 1)
    if i < 19:
        return 64 + 16 * (i - 7)
    return 256 + 32 * (i - 19)


def _first(lo: int, hi: int, holds: Callable[[int], bool]) -> int:
    """The first index in [lo, hi) where ``holds``, false then true, is true (hi if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _depth_candidates(
    n_layer: int, lo: int, count: Callable[[int, int], int], n_params: float
) -> list[tuple[int, int]]:
    """The shapes of depth ``n_layer`` that ``config_for_params`` could choose, ascending.

    Its widths are ``_rule_width(i)`` for i from ``lo`` (the aspect band's narrowest) to the
    first whose N passes twice the target, or the band's widest. N grows with width, so the
    widths within tolerance are a run of them, the one closest to the rule's aspect ratio in
    that run is one of the two beside 32·n_layer, and the one closest to the target one of the
    two beside it: found by bisection, not by counting every width (minutes at 1e12).
    """
    widest = int(ASPECT_RATIO * ASPECT_BAND * n_layer)
    stop = _first(lo, 1 << 62, lambda i: _rule_width(i) > widest)
    end = min(stop, _first(lo, stop, lambda i: count(n_layer, _rule_width(i)) > 2 * n_params) + 1)

    def error(i: int) -> float:
        return math.log(count(n_layer, _rule_width(i)) / n_params)

    tolerance = math.log1p(SHAPE_TOLERANCE)
    close_lo = _first(lo, end, lambda i: error(i) >= -tolerance)
    close_end = _first(close_lo, end, lambda i: error(i) > tolerance)
    on_rule = _first(close_lo, close_end, lambda i: _rule_width(i) >= ASPECT_RATIO * n_layer)
    above = _first(lo, end, lambda i: error(i) >= 0)
    picks = {lo, end - 1, above - 1, above}
    if close_lo < close_end:
        picks |= {close_lo, close_end - 1, max(close_lo, on_rule - 1), min(close_end - 1, on_rule)}
    return [(n_layer, _rule_width(i)) for i in sorted(picks) if lo <= i < end]


def config_for_params(
    n_params: float, *, depth: int | None = None, heads: int | None = None, **overrides: Any
) -> GPTConfig:
    """The config on the size rule whose non-embedding count best matches ``n_params``.

    Candidates are every depth n_layer >= 1 and width d_model (a multiple of
    ``rule_head_dim(d_model)``) with an aspect ratio within ``ASPECT_BAND`` of 32. Among those
    whose exact N is within ``SHAPE_TOLERANCE`` of the target, the one with aspect ratio closest
    to 32 (in log space) wins, so nearby targets get similar shapes; if none is that close, the
    one closest to the target in log space. Over targets 1e4..2e7 the result is within 13.7% of
    the target (15.1% with bias=False), the worst cases just above 1e4 where the smallest shapes
    are far apart; above 5e4 it is within 10%. ``overrides`` sets the other fields (variant,
    context, vocab_size, bias...); the count depends on ``variant`` and ``bias``, so the search
    uses them.

    ``depth`` set: a fixed-depth family instead, every size ``depth`` layers deep and only the
    width chosen (the one whose N is closest to the target in log space), so a ladder of tiny
    models and a target 1000x larger share one shape family. Widths are multiples of
    2·``heads`` with ``heads`` heads, or of the rule's head dimension with ``heads`` unset.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, numbers.Real):
        raise ValueError(f"n_params must be a positive number, got {n_params!r}")
    if not (math.isfinite(n_params) and n_params > 0):
        raise ValueError(f"n_params must be a positive finite number, got {n_params!r}")
    shape_keys = sorted({"n_layer", "n_head", "d_model"} & overrides.keys())
    if shape_keys:
        raise ValueError(f"config_for_params chooses {shape_keys} itself; do not override them")
    base = GPTConfig(**overrides)
    if depth is not None or heads is not None:
        return _fixed_depth_config(base, n_params, depth, heads)

    def count(n_layer: int, d_model: int) -> int:
        return _nonembedding_params(base.variant, n_layer, d_model, base.bias)

    def log_error(shape: tuple[int, int]) -> float:
        return abs(math.log(count(*shape) / n_params))

    def log_aspect(shape: tuple[int, int]) -> float:
        return abs(math.log(shape[1] / shape[0] / ASPECT_RATIO))

    # Each depth's candidates are the widths on the rule's grid (``_rule_width``) from the
    # aspect band's narrowest up to the first whose N passes twice the target (or the band's
    # widest); stop once even the narrowest passes it. Only a few of them can win
    # (``_depth_candidates``), so those few are kept.
    shapes: list[tuple[int, int]] = []
    n_layer = 1
    while True:
        lo = _first(0, 1 << 62, lambda i: _rule_width(i) * ASPECT_BAND >= ASPECT_RATIO * n_layer)  # noqa: B023
        if shapes and count(n_layer, _rule_width(lo)) > 2 * n_params:
            break
        shapes += _depth_candidates(n_layer, lo, count, n_params)
        n_layer += 1
    close = [s for s in shapes if log_error(s) <= math.log1p(SHAPE_TOLERANCE)]
    if close:
        n_layer, d_model = min(close, key=lambda s: (log_aspect(s), log_error(s)))
    else:
        n_layer, d_model = min(shapes, key=log_error)
    return replace(base, n_layer=n_layer, d_model=d_model, n_head=d_model // rule_head_dim(d_model))


def _fixed_depth_config(
    base: GPTConfig, n_params: float, depth: int | None, heads: int | None
) -> GPTConfig:
    """The width of a ``depth``-layer model whose N is closest to ``n_params`` (see
    ``config_for_params``)."""
    if depth is None or depth < 1 or (heads is not None and heads < 1):
        raise ValueError(
            f"a fixed-depth family needs depth >= 1 (and heads >= 1 if given); got depth={depth}, "
            f"heads={heads}"
        )

    def width(i: int) -> int:
        return 2 * heads * (i + 1) if heads is not None else _rule_width(i)

    def count(i: int) -> int:
        return _nonembedding_params(base.variant, depth, width(i), base.bias)

    first = _first(0, 1 << 62, lambda i: width(i) >= 4)  # two dimensions a head at least
    above = _first(first, 1 << 62, lambda i: count(i) >= n_params)
    picks = [i for i in (above - 1, above) if i >= first]
    i = min(picks, key=lambda i: abs(math.log(count(i) / n_params)))
    d_model = width(i)
    n_head = heads if heads is not None else d_model // rule_head_dim(d_model)
    return replace(base, n_layer=depth, d_model=d_model, n_head=n_head)


# Named sizes, half a decade apart: each is ``config_for_params(nominal)`` (a test keeps them in
# step). N is the non-embedding count with bias=True for gpt2/gpt3 (gpt1 has 2·d_model fewer).
PRESETS: dict[str, dict[str, int]] = {
    # Smallest sizes: width steps of 8 are coarse, so depth does the fine-tuning.
    "n10k": dict(n_layer=3, n_head=2, d_model=16),  # N = 9,872; d/L = 5.3, the only shape near 1e4
    "n30k": dict(n_layer=1, n_head=6, d_model=48),  # N = 28,368; d/L = 48
    # From here on within a factor 1.6 of d_model = 32·n_layer.
    "n100k": dict(n_layer=2, n_head=4, d_model=64),  # N = 100,096; d/L = 32, on the rule
    "n300k": dict(n_layer=4, n_head=5, d_model=80),  # N = 311,520; d/L = 20
    "n1m": dict(n_layer=4, n_head=9, d_model=144),  # N = 1,003,104; d/L = 36
    "n3m": dict(n_layer=6, n_head=13, d_model=208),  # N = 3,131,648; d/L = 34.7
    "n10m": dict(n_layer=10, n_head=9, d_model=288),  # N = 9,991,296; d/L = 28.8
    "n20m": dict(n_layer=12, n_head=12, d_model=384),  # N = 21,294,336; d/L = 32, on the rule
}
