"""The fixed decoding rule of every evaluation: greedy, and sampling at ``TEMPERATURE``.

Prompts and completions are byte strings (latin-1 text: one character per byte id), as the
byte tokenizer and the RLHF task's role bytes have it. A prompt longer than the context leaves
for its completion keeps its last tokens.

A suite with one right continuation (``target``) needs no generation: greedy decoding writes
it exactly when every target token is the argmax given the ones before it, and a sample at
temperature T writes it with probability ∏ p_T(token), both read off one forward pass of
prompt + target. Suites whose answers are checked by running them generate (``complete``).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np
import torch

from scalelab.model import GPT
from scalelab.rlhf.heads import pad_batch

TEMPERATURE = 0.8  # of sampled completions (Chen et al. 2021 report pass@k near 0.8)
BATCH_SIZE = 256


def encode(text: str) -> list[int]:
    return list(text.encode("latin-1"))


def decode(ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids).decode("latin-1")


def _room(model: GPT, new_tokens: int) -> int:
    keep = model.config.context - new_tokens
    if keep < 1:
        raise ValueError(f"context {model.config.context} leaves no room for a prompt")
    return keep


@torch.no_grad()
def complete(
    model: GPT,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: str,
    *,
    greedy: bool = True,
    seed: int = 0,
) -> list[str]:
    """One completion per prompt: up to ``max_new_tokens`` tokens, ending at ``stop`` (kept);
    the argmax at each step, or a draw at ``TEMPERATURE`` seeded by ``seed``."""
    keep = _room(model, max_new_tokens)
    generator = torch.Generator().manual_seed(seed)
    stop_id = encode(stop)[0]
    was_training = model.training
    model.eval()
    out: list[str] = []
    for i in range(0, len(prompts), BATCH_SIZE):
        ids, length = pad_batch([encode(p)[-keep:] for p in prompts[i : i + BATCH_SIZE]])
        rows = torch.arange(ids.size(0))
        buf = torch.cat([ids, torch.zeros(ids.size(0), max_new_tokens, dtype=torch.long)], 1)
        pos, done = length.clone(), torch.zeros(ids.size(0), dtype=torch.bool)
        device = next(model.parameters()).device
        for _ in range(max_new_tokens):
            # Positions are absolute and attention causal: a row's padding never reaches it.
            hidden = model.hidden(buf[:, : int(pos.max())].to(device))
            logits = model.lm_head(hidden[rows, (pos - 1).to(device)]).float().cpu()
            if greedy:
                token = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / TEMPERATURE, -1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            active = ~done
            buf[rows[active], pos[active]] = token[active]
            pos = pos + active.long()
            done |= active & (token == stop_id)
            if bool(done.all()):
                break
        out += [decode(buf[b, length[b] : pos[b]].tolist()) for b in range(ids.size(0))]
    model.train(was_training)
    return out


@torch.no_grad()
def score_targets(
    model: GPT, prompts: Sequence[str], targets: Sequence[str], forbid_after: str = ""
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """For each prompt and its one right continuation ``target``: whether greedy decoding
    writes it (then a character outside ``forbid_after``), the probability that a sample at
    ``TEMPERATURE`` does, and the greedy choices along the target (teacher forced)."""
    keep = _room(model, max(len(encode(t)) for t in targets))
    forbid = torch.tensor(encode(forbid_after), dtype=torch.long)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    greedy, prob, chosen = [], [], []
    for i in range(0, len(prompts), BATCH_SIZE):
        heads = [encode(p)[-keep:] for p in prompts[i : i + BATCH_SIZE]]
        tails = [encode(t) for t in targets[i : i + BATCH_SIZE]]
        ids, _ = pad_batch([h + t for h, t in zip(heads, tails, strict=True)])
        logits = model(ids.to(device))[0].float().cpu()
        for b, (h, t) in enumerate(zip(heads, tails, strict=True)):
            at = logits[b, len(h) - 1 : len(h) + len(t) - 1]  # predicts each target token
            logp = torch.log_softmax(at / TEMPERATURE, -1)
            want = torch.tensor(t)
            best = at.argmax(-1)
            ok = bool((best == want).all())
            p = float(logp.gather(1, want[:, None]).sum().exp())
            if len(forbid):
                after = logits[b, len(h) + len(t) - 1]
                ok = ok and int(after.argmax()) not in forbid.tolist()
                p *= 1.0 - float(torch.softmax(after / TEMPERATURE, -1)[forbid].sum())
            greedy.append(ok)
            prob.append(max(p, 0.0))
            chosen.append(decode(best.tolist()))
    model.train(was_training)
    return np.array(greedy), np.array(prob), chosen


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` passing samples of ``n`` (Chen et al. 2021, eq. 1)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)
