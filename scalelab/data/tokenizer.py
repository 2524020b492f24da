"""Tokenizers: byte level (the default) and byte-level BPE trained locally.

Documents are concatenated with a separator token after each one:

- byte level: token id = byte value (vocabulary 256); the separator is the NUL byte ``0x00``,
  which never occurs in a text document (corpora skip files that contain it).
- BPE: the ``tokenizers`` package's byte-level BPE (GPT-2's pre-tokenization), trained on the
  training split only; the separator is the special token ``<|endoftext|>`` (id 0).

Token ids are stored as ``uint16``, so a vocabulary holds at most 65535 entries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

EOT_TOKEN = "<|endoftext|>"
BYTE_SEPARATOR = 0
MAX_VOCAB = 65535
MIN_BPE_VOCAB = 257  # 256 byte tokens + the separator
_BPE_SPEC = re.compile(r"bpe(\d+)")
ALLOWED = "'byte', 'bpeN' (e.g. 'bpe4096', N from 257 to 65535) or 'pretokenized' (.bin corpora)"


class Tokenizer(Protocol):
    """What the token cache needs from a tokenizer."""

    id: str
    vocab_size: int
    eot_id: int

    def encode_batch(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        """``uint16`` ids of each document (UTF-8 bytes), without the separator."""
        ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (invalid UTF-8 becomes U+FFFD)."""
        ...


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``("byte", None)``, ``("bpe", size)`` or ``("pretokenized", None)``; else ValueError."""
    if spec in ("byte", "pretokenized"):
        return spec, None
    match = _BPE_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"tokenizer {spec!r} is not valid: expected {ALLOWED}")
    size = int(match.group(1))
    if not MIN_BPE_VOCAB <= size <= MAX_VOCAB:
        raise ValueError(
            f"tokenizer {spec!r}: BPE vocabulary must be from {MIN_BPE_VOCAB} to {MAX_VOCAB} "
            "(256 bytes plus the separator at least; ids are stored as uint16)"
        )
    return "bpe", size


class ByteTokenizer:
    """Token id = byte value; the separator is byte 0."""

    id = "byte"
    vocab_size = 256
    eot_id = BYTE_SEPARATOR

    def encode(self, text: str | bytes) -> np.ndarray:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def encode_batch(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        return [self.encode(d) for d in docs]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE tokenizer from the ``tokenizers`` package.

    ``id`` is ``bpe<requested size>-<first 8 hex of the SHA-256 of its JSON>``, so two
    tokenizers with the same id encode identically.
    """

    def __init__(self, tokenizer: object, requested_size: int) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        if not isinstance(tokenizer, HFTokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        eot = tokenizer.token_to_id(EOT_TOKEN)
        if eot is None:
            raise ValueError(f"the tokenizer has no {EOT_TOKEN} token")
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        if self.vocab_size > MAX_VOCAB:
            raise ValueError(f"vocabulary {self.vocab_size} does not fit uint16 ids")
        self.eot_id = eot
        self.requested_size = requested_size
        self.json = tokenizer.to_str()
        digest = hashlib.sha256(self.json.encode("utf-8")).hexdigest()[:8]
        self.id = f"bpe{requested_size}-{digest}"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train on ``texts``; a small corpus may end with fewer than ``vocab_size`` tokens."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        # GPT-2's byte-level scheme: every byte has a token, so any text round-trips exactly.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, vocab_size)

    @classmethod
    def from_file(cls, path: Path, requested_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)), requested_size)

    def encode(self, text: str | bytes) -> np.ndarray:
        return self.encode_batch([text.encode("utf-8") if isinstance(text, str) else text])[0]

    def encode_batch(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        texts = [d.decode("utf-8") for d in docs]
        encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint16) for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)
