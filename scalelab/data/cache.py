"""Token caches: ``prepare`` turns a corpus and a tokenizer into memory-mapped token arrays.

Layout under ``cache_dir`` (every file written atomically, so workers building the same cache
at once never see a partial file; a lock per entry keeps them from duplicating the work)::

    index/<fast key>.json                      content hash of a file list seen before
    <corpus hash>/tokenizers/bpe<N>.json       BPE trained on that corpus's training split
    <corpus hash>/<tokenizer id>/train.bin     uint16 token ids, documents + separators
    <corpus hash>/<tokenizer id>/val.bin
    <corpus hash>/<tokenizer id>/meta.json     sizes, bytes per token, n-gram baselines

``meta.json`` is written last and marks a complete entry. Pre-tokenized ``.bin`` corpora are
mapped in place; their entry holds only ``meta.json``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.data.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_writer,
    file_lock,
    read_json,
)
from scalelab.data.corpus import BinCorpus, ContentHasher, Document, TextCorpus, resolve_corpus
from scalelab.data.ngram import ngram_baselines
from scalelab.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, parse_spec

CACHE_FORMAT = 1
_ENCODE_BATCH_BYTES = 1 << 22  # documents are encoded (and written) about 4 MB at a time


class CorpusMismatchError(ValueError):
    """The corpus's content hash differs from the one a sweep pinned."""


@dataclass(frozen=True, eq=False)
class TokenData:
    """Token ids of a corpus's train and validation splits, with what describes them."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    corpus_hash: str
    tokenizer_id: str
    val_bytes_per_token: float
    baselines: dict[str, float]
    corpus_name: str
    path: Path
    tokenizer: Tokenizer | None = None
    built: bool = False  # whether this call built the cache entry (False: reused)
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, str | int | float]:
        """The scalars to log as run params (shared vocabulary: ``corpus``, ``tokenizer``)."""
        return {
            "corpus": self.corpus_hash,
            "corpus_name": self.corpus_name,
            "tokenizer": self.tokenizer_id,
            "vocab_size": self.vocab_size,
            "train_tokens": int(len(self.train)),
            "val_tokens": int(len(self.val)),
            "val_bytes_per_token": self.val_bytes_per_token,
            "baseline_unigram": self.baselines["unigram"],
            "baseline_bigram": self.baselines["bigram"],
        }


def prepare(
    corpus: str | os.PathLike[str] = "stdlib",
    tokenizer: str = "byte",
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    expect_hash: str | None = None,
) -> TokenData:
    """Tokenize ``corpus`` with ``tokenizer`` into ``cache_dir`` (reused when present).

    ``corpus``: ``"stdlib"``, ``"stdlib-notests"``, ``"python-all"``, a text file or folder,
    a folder with ``train.bin`` + ``val.bin`` or a ``.bin`` file (see ``scalelab.data.corpus``).
    ``tokenizer``: ``"byte"``, ``"bpeN"`` or, for ``.bin`` corpora, ``"pretokenized"`` (the
    files' own ids; ``"byte"`` also works when every id is below 256).
    ``cache_dir``: None uses the workspace's (``Workspace.resolve().cache_dir``).
    ``expect_hash``: pin the corpus: raise ``CorpusMismatchError`` unless its content hash
    starts with this (at least 8 hex characters).
    Bad input raises ``ValueError`` naming the value and what is allowed.
    """
    kind, size = parse_spec(tokenizer)
    if expect_hash is not None and len(expect_hash) < 8:
        raise ValueError(f"expect_hash {expect_hash!r} is too short: give at least 8 hex chars")
    if cache_dir is None:
        from scalelab.workspace import Workspace

        cache_dir = Workspace.resolve().cache_dir
    cache = Path(cache_dir)
    source = resolve_corpus(corpus)
    if isinstance(source, BinCorpus) and kind == "bpe":
        raise ValueError(
            f"tokenizer {tokenizer!r} cannot apply to {source.name!r}: .bin corpora are "
            "already tokenized; use 'pretokenized'"
        )
    if isinstance(source, TextCorpus) and kind == "pretokenized":
        raise ValueError(
            f"tokenizer 'pretokenized' needs a .bin corpus, and {source.name!r} is text: "
            "use 'byte' or 'bpeN'"
        )
    corpus_hash = corpus_content_hash(source, cache)
    if expect_hash is not None and not corpus_hash.startswith(expect_hash.lower()):
        raise CorpusMismatchError(
            f"corpus {source.name!r} has content hash {corpus_hash}, not the pinned "
            f"{expect_hash}: its files changed, so runs on it are not comparable"
        )
    if isinstance(source, BinCorpus):
        return _prepare_bin(source, corpus_hash, kind, cache)
    tok: Tokenizer = ByteTokenizer() if kind == "byte" else _bpe(source, corpus_hash, size, cache)
    entry = cache / corpus_hash / tok.id
    meta, built = _load_meta(entry), False
    if meta is None:
        with file_lock(cache / corpus_hash / f".{tok.id}.lock"):
            meta = _load_meta(entry)  # another process may have finished it meanwhile
            if meta is None:
                meta, built = _build(source, tok, entry, corpus_hash), True
    return TokenData(
        train=_map(entry / "train.bin"),
        val=_map(entry / "val.bin"),
        vocab_size=int(meta["vocab_size"]),
        corpus_hash=corpus_hash,
        tokenizer_id=tok.id,
        val_bytes_per_token=float(meta["val_bytes_per_token"]),
        baselines={k: float(meta["baselines"][k]) for k in ("unigram", "bigram")},
        corpus_name=source.name,
        path=entry,
        tokenizer=tok,
        built=built,
        meta=meta,
    )


def corpus_content_hash(source: TextCorpus | BinCorpus, cache_dir: Path) -> str:
    """The content hash of ``source``, read from the index when its files are unchanged."""
    index = cache_dir / "index" / f"{source.fast_key()}.json"
    known = read_json(index)
    if known is not None and isinstance(known.get("corpus_hash"), str):
        return known["corpus_hash"]
    corpus_hash = source.content_hash()
    atomic_write_json(index, {"corpus_hash": corpus_hash, "corpus_name": source.name})
    return corpus_hash


def _map(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")


def _load_meta(entry: Path) -> dict[str, Any] | None:
    """The entry's meta if it is complete (its arrays have the recorded sizes), else None."""
    meta = read_json(entry / "meta.json")
    if meta is None or meta.get("format") != CACHE_FORMAT:
        return None
    for split in ("train", "val"):
        path = entry / f"{split}.bin"
        if not path.is_file() or path.stat().st_size != 2 * meta.get(f"{split}_tokens", -1):
            return None
    return meta


def _bpe(source: TextCorpus, corpus_hash: str, size: int | None, cache: Path) -> BPETokenizer:
    """The BPE tokenizer of ``size`` trained on this corpus's training split (cached)."""
    assert size is not None
    path = cache / corpus_hash / "tokenizers" / f"bpe{size}.json"
    if not path.is_file():
        with file_lock(path.parent / f".{path.stem}.lock"):
            if not path.is_file():
                texts = (d.data.decode("utf-8") for d in source.documents() if d.split == "train")
                tok = BPETokenizer.train(texts, size)
                atomic_write_bytes(path, tok.json.encode("utf-8"))
                return tok
    return BPETokenizer.from_file(path, size)


def _batches(docs: Iterator[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    n_bytes = 0
    for doc in docs:
        batch.append(doc)
        n_bytes += len(doc.data)
        if n_bytes >= _ENCODE_BATCH_BYTES:
            yield batch
            batch, n_bytes = [], 0
    if batch:
        yield batch


def _build(source: TextCorpus, tok: Tokenizer, entry: Path, corpus_hash: str) -> dict[str, Any]:
    """Tokenize every document into ``entry``; returns the meta it wrote."""
    t0 = time.perf_counter()
    sep = np.array([tok.eot_id], dtype=np.uint16)
    tokens = {"train": 0, "val": 0}
    docs = {"train": 0, "val": 0}
    n_bytes = {"train": 0, "val": 0}
    hasher = ContentHasher(source.split_rule)
    with (
        atomic_writer(entry / "train.bin") as train_out,
        atomic_writer(entry / "val.bin") as val_out,
    ):
        out = {"train": train_out, "val": val_out}
        for batch in _batches(source.documents()):
            for doc, ids in zip(batch, tok.encode_batch([d.data for d in batch]), strict=True):
                hasher.update(doc)
                out[doc.split].write(ids.tobytes())
                out[doc.split].write(sep.tobytes())
                tokens[doc.split] += len(ids) + 1
                docs[doc.split] += 1
                n_bytes[doc.split] += len(doc.data) + 1  # the separator counts as one byte
        # The files were read again: make sure they are still the ones the hash names.
        if hasher.hexdigest() != corpus_hash:
            raise RuntimeError(
                f"corpus {source.name!r} changed while it was being tokenized; run again"
            )
        for split in ("train", "val"):
            if docs[split] == 0:
                raise ValueError(
                    f"corpus {source.name!r} has no {split} documents "
                    f"({len(source.files)} files, {len(source.skipped)} skipped as not text)"
                )
    t_tokenize = time.perf_counter() - t0
    train, val = _map(entry / "train.bin"), _map(entry / "val.bin")
    baselines = ngram_baselines(train, val, tok.vocab_size)
    if isinstance(tok, BPETokenizer):
        atomic_write_bytes(entry / "tokenizer.json", tok.json.encode("utf-8"))
    meta = {
        "format": CACHE_FORMAT,
        "corpus_hash": corpus_hash,
        "corpus_name": source.name,
        "tokenizer_id": tok.id,
        "vocab_size": tok.vocab_size,
        "separator_id": tok.eot_id,
        "split_rule": source.split_rule,
        "n_files": len(source.files),
        "skipped_files": len(source.skipped),
        "skipped": source.skipped[:100],
        "train_docs": docs["train"],
        "val_docs": docs["val"],
        "train_tokens": tokens["train"],
        "val_tokens": tokens["val"],
        "train_bytes": n_bytes["train"],
        "val_bytes": n_bytes["val"],
        "val_bytes_per_token": n_bytes["val"] / tokens["val"],
        "baselines": {"unigram": baselines["unigram"], "bigram": baselines["bigram"]},
        "bigram_alpha": baselines["bigram_alpha"],
        "seconds_tokenize": round(t_tokenize, 3),
        "seconds_baselines": round(time.perf_counter() - t0 - t_tokenize, 3),
    }
    atomic_write_json(entry / "meta.json", meta)
    return meta


def _prepare_bin(source: BinCorpus, corpus_hash: str, kind: str, cache: Path) -> TokenData:
    """A ``.bin`` corpus: arrays mapped in place; largest id and baselines cached."""
    train, val = source.arrays()
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"corpus {source.name!r}: each split needs at least 2 tokens")
    info_path = cache / corpus_hash / "bin.json"
    info = read_json(info_path)
    if info is None:
        info = {"max_token_id": max(int(train.max()), int(val.max()))}
        atomic_write_json(info_path, info)
    max_id = int(info["max_token_id"])
    if kind == "byte":
        if max_id >= 256:
            raise ValueError(
                f"tokenizer 'byte' does not fit {source.name!r}: it holds token id {max_id}; "
                "use 'pretokenized'"
            )
        tokenizer_id, vocab_size, bytes_per_token = "byte", 256, 1.0
        tokenizer: Tokenizer | None = ByteTokenizer()
    else:
        # The files carry no tokenizer: the vocabulary is the ids they use, bytes are unknown.
        tokenizer_id, vocab_size, bytes_per_token = "pretokenized", max_id + 1, math.nan
        tokenizer = None
    entry = cache / corpus_hash / tokenizer_id
    meta, built = read_json(entry / "meta.json"), False
    if meta is None or meta.get("format") != CACHE_FORMAT:
        with file_lock(cache / corpus_hash / f".{tokenizer_id}.lock"):
            meta = read_json(entry / "meta.json")
            if meta is None or meta.get("format") != CACHE_FORMAT:
                baselines = ngram_baselines(train, val, vocab_size)
                meta = {
                    "format": CACHE_FORMAT,
                    "corpus_hash": corpus_hash,
                    "corpus_name": source.name,
                    "tokenizer_id": tokenizer_id,
                    "vocab_size": vocab_size,
                    "train_tokens": int(len(train)),
                    "val_tokens": int(len(val)),
                    "baselines": {k: baselines[k] for k in ("unigram", "bigram")},
                    "bigram_alpha": baselines["bigram_alpha"],
                }
                atomic_write_json(entry / "meta.json", meta)
                built = True
    return TokenData(
        train=train,
        val=val,
        vocab_size=vocab_size,
        corpus_hash=corpus_hash,
        tokenizer_id=tokenizer_id,
        val_bytes_per_token=bytes_per_token,
        baselines={k: float(meta["baselines"][k]) for k in ("unigram", "bigram")},
        corpus_name=source.name,
        path=entry,
        tokenizer=tokenizer,
        built=built,
        meta=meta,
    )
