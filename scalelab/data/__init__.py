"""Data: corpora, tokenizers, memory-mapped token caches, batches and n-gram baselines.

``prepare(corpus, tokenizer)`` returns a ``TokenData`` (train/val token ids, vocabulary, the
corpus's content hash, the tokenizer id, bytes per token and n-gram baselines);
``RandomWindows`` streams training batches from it and ``val_windows`` fixes the validation set.
"""

from scalelab.data.batches import EpochWindows, RandomWindows, val_windows
from scalelab.data.cache import CorpusMismatchError, TokenData, corpus_content_hash, prepare
from scalelab.data.corpus import BUILTIN_CORPORA, BinCorpus, TextCorpus, resolve_corpus
from scalelab.data.ngram import bigram_loss, ngram_baselines, unigram_loss
from scalelab.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer

__all__ = [
    "BUILTIN_CORPORA",
    "BPETokenizer",
    "BinCorpus",
    "ByteTokenizer",
    "CorpusMismatchError",
    "EpochWindows",
    "RandomWindows",
    "TextCorpus",
    "TokenData",
    "Tokenizer",
    "bigram_loss",
    "corpus_content_hash",
    "ngram_baselines",
    "prepare",
    "resolve_corpus",
    "unigram_loss",
    "val_windows",
]
