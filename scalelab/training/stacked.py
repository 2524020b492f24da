"""``StackedGPT``: K GPTs of one shape as one batched model, each with its own weights.

A ladder's smallest models run at a few per cent of the machine's FLOP/s when trained one at a
time: per-op overhead, not arithmetic, sets the pace. Stacking K same-shape models turns every
op into one op on K times the data (``baddbmm`` for the linears, one SDPA call over K·B
sequences), so the op count of a step stays that of one model.

The forward pass is ``scalelab.model.GPT``'s, written on stacked weights (a leading member
dimension on every tensor of ``GPT.state_dict()``): the same variants, LayerNorm placement,
tied unembedding and band mask. ``torch.vmap`` over ``functional_call`` would reuse the module,
but CPU SDPA has no batching rule (vmap falls back to a per-member loop) and the result cannot
be masked per member; tests keep this forward equal to ``GPT``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from scalelab.model import GPT, GPTConfig, band_mask

STACKED_VARIANTS = ("gpt1", "gpt2", "gpt3")  # the forward passes written here


def same_shape(a: GPTConfig, b: GPTConfig) -> bool:
    """Whether two configs stack: equal in every field (so equal in every tensor shape)."""
    return a == b


class StackedGPT:
    """The weights of ``len(models)`` GPTs of one config, stacked, and their batched forward.

    ``params`` maps each distinct parameter name of ``GPT.named_parameters()`` (a tied
    ``lm_head`` is ``transformer.wte.weight``) to a leaf tensor of shape (K, *shape).
    """

    def __init__(self, config: GPTConfig, params: dict[str, torch.Tensor]) -> None:
        if config.dropout:
            raise ValueError("stacked models train without dropout (dropout must be 0)")
        if config.variant not in STACKED_VARIANTS:
            raise ValueError(f"no stacked forward for variant {config.variant!r}")
        self.config = config
        self.params = params
        self._masks = {
            layer: band_mask(config.context, config.band_window)
            for layer in range(config.n_layer)
            if config.is_banded(layer)
        }

    @classmethod
    def from_models(cls, models: Sequence[GPT]) -> StackedGPT:
        config = models[0].config
        if any(not same_shape(m.config, config) for m in models):
            raise ValueError("stacked models must share one GPTConfig")
        names = [name for name, _ in models[0].named_parameters()]
        params = {
            name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
            .clone()
            .requires_grad_(True)
            for name in names
        }
        return cls(config, params)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s weights as a ``GPT`` state dict (loadable with ``strict``)."""
        out = {name: p[member].detach().clone() for name, p in self.params.items()}
        if self.config.tie_embeddings:
            out["lm_head.weight"] = out["transformer.wte.weight"]
        return out

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        weight = self.params[f"{name}.weight"]  # (K, out, in), as nn.Linear stores it
        bias = self.params.get(f"{name}.bias")
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        d = self.config.d_model
        y = F.layer_norm(x, (d,))  # the affine part differs per member: applied below
        y = y * self.params[f"{name}.weight"].unsqueeze(1)
        bias = self.params.get(f"{name}.bias")
        return y if bias is None else y + bias.unsqueeze(1)

    def _attention(self, x: torch.Tensor, layer: int, batch: int) -> torch.Tensor:
        cfg = self.config
        K, rows, C = x.shape
        T, H = rows // batch, cfg.n_head
        qkv = self._linear(x, f"transformer.h.{layer}.attn.c_attn")
        q, k, v = (t.reshape(K * batch, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
        mask = self._masks.get(layer)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:T, :T])
        y = y.transpose(1, 2).reshape(K, rows, C)
        return self._linear(y, f"transformer.h.{layer}.attn.c_proj")

    def _mlp(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        approximate = "tanh" if self.config.gelu == "tanh" else "none"
        h = F.gelu(self._linear(x, f"transformer.h.{layer}.mlp.c_fc"), approximate=approximate)
        return self._linear(h, f"transformer.h.{layer}.mlp.c_proj")

    def losses(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy (K,) on its own batch: ``idx`` and ``targets``
        are (K, B, T) token ids."""
        cfg = self.config
        K, B, T = idx.shape  # noqa: N806 - members, batch, length, as GPT names B, T
        if idx.shape[2] > cfg.context:
            raise ValueError(f"sequence length {T} exceeds context={cfg.context}")
        wte = self.params["transformer.wte.weight"]  # (K, V, C)
        rows = (idx + torch.arange(K).view(K, 1, 1) * cfg.vocab_size).reshape(K, B * T)
        x = wte.reshape(K * cfg.vocab_size, -1)[rows]  # one gather for every member
        x = (x.view(K, B, T, -1) + self.params["transformer.wpe.weight"][:, None, :T]).view(
            K, B * T, -1
        )
        for layer in range(cfg.n_layer):
            ln_1, ln_2 = f"transformer.h.{layer}.ln_1", f"transformer.h.{layer}.ln_2"
            if cfg.variant == "gpt1":  # post-LayerNorm, as GPT.Block
                x = self._norm(x + self._attention(x, layer, B), ln_1)
                x = self._norm(x + self._mlp(x, layer), ln_2)
            else:
                x = x + self._attention(self._norm(x, ln_1), layer, B)
                x = x + self._mlp(self._norm(x, ln_2), layer)
        if cfg.variant != "gpt1":
            x = self._norm(x, "transformer.ln_f")
        head = wte if cfg.tie_embeddings else self.params["lm_head.weight"]
        logits = torch.bmm(x, head.transpose(1, 2))  # (K, B·T, V)
        per_token = F.cross_entropy(
            logits.reshape(K * B * T, -1), targets.reshape(-1), reduction="none"
        )
        return per_token.view(K, B * T).mean(dim=1)
