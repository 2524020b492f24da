"""Tests of scalelab.data: corpora, split, hashes, caches, tokenizers, batches, n-gram baselines."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from scalelab.data import (
    BPETokenizer,
    ByteTokenizer,
    CorpusMismatchError,
    EpochWindows,
    RandomWindows,
    TokenData,
    bigram_loss,
    ngram,
    prepare,
    unigram_loss,
    val_windows,
)
from scalelab.data.corpus import (
    VAL_FRACTION,
    TextCorpus,
    is_val_path,
    resolve_corpus,
    stdlib_files,
    stdlib_root,
)


@pytest.fixture(scope="session")
def stdlib_bytes(token_cache: Path) -> TokenData:
    """The real stdlib corpus at byte level, built once into the shared session cache."""
    return prepare("stdlib", "byte", cache_dir=token_cache)


def _copy_head(src: Path, dst: Path, limit: int = 4000) -> None:
    """Copy the first ``limit`` bytes of ``src`` to ``dst``, cut at a line break."""
    data = src.read_bytes()
    if len(data) > limit:
        data = data[: data.rfind(b"\n", 0, limit) + 1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    """About 30 real text files (heads of the stdlib's json and email packages)."""
    root = tmp_path / "corpus"
    for package in ("json", "email"):
        for src in sorted((stdlib_root() / package).glob("*.py")):
            _copy_head(src, root / package / src.name)
    return root


# --- corpus collection and split ------------------------------------------------------------


def test_stdlib_collection_is_sorted_deterministic_and_excludes_site_packages() -> None:
    files = stdlib_files()
    rels = [f.rel for f in files]
    assert rels == sorted(rels)
    assert rels == [f.rel for f in stdlib_files()]
    assert len(rels) > 500 and "json/decoder.py" in rels and "os.py" in rels
    assert all(r.endswith(".py") for r in rels)
    for rel in rels:
        parts = rel.split("/")
        assert "site-packages" not in parts and "__pycache__" not in parts
    bundled = stdlib_root() / "site-packages"  # e.g. pip, installed next to the stdlib
    assert not any(f.path.is_relative_to(bundled) for f in files)
    # stdlib-notests drops exactly the files inside test folders.
    notests = {f.rel for f in stdlib_files(include_tests=False)}
    assert notests < set(rels)
    assert all(not {"test", "tests", "idle_test"} & set(r.split("/")) for r in notests)
    assert "test/test_json/test_decode.py" in set(rels) - notests
    assert "idlelib/idle_test/test_run.py" in set(rels) - notests


def test_split_is_disjoint_by_file_stable_and_about_five_percent(stdlib_bytes: TokenData) -> None:
    rels = [f.rel for f in stdlib_files()]
    val = {r for r in rels if is_val_path(r)}
    # SHA-256 of the relative path: the same files are in validation on every machine.
    assert {"chunk.py", "copyreg.py", "email/__init__.py"} <= val
    assert not {"os.py", "abc.py", "json/decoder.py"} & val
    assert 0.03 < len(val) / len(rels) < 0.07
    # The rule itself is pinned: SHA-256 of the path, lowest 5 % of the range.
    synthetic = [i for i in range(2000) if is_val_path(f"doc{i:04d}.txt")]
    assert len(synthetic) == 98 and synthetic[:5] == [12, 70, 72, 93, 95]
    corpus = resolve_corpus("stdlib")
    assert isinstance(corpus, TextCorpus) and corpus.split_rule == "path-hash"
    split_of: dict[str, set[str]] = {}
    for doc in corpus.documents():
        split_of.setdefault(doc.rel, set()).add(doc.split)
    assert all(len(s) == 1 for s in split_of.values())  # no file in both splits
    assert {r for r, s in split_of.items() if s == {"val"}} == val - set(corpus.skipped)
    meta = stdlib_bytes.meta
    assert meta["train_docs"] + meta["val_docs"] + meta["skipped_files"] == len(rels)
    assert meta["val_docs"] == len(val - set(corpus.skipped))


def test_folder_skips_undecodable_files_with_a_count(text_folder: Path, tmp_path: Path) -> None:
    (text_folder / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    (text_folder / "nul.txt").write_bytes(b"a\x00b\n")
    (text_folder / "image.png").write_bytes(b"\x89PNG")  # not a text suffix: never read
    data = prepare(text_folder, "byte", cache_dir=tmp_path / "cache")
    assert data.meta["skipped_files"] == 2
    assert set(data.meta["skipped"]) == {"latin1.txt", "nul.txt"}
    assert data.meta["n_files"] == len(list(text_folder.rglob("*.py"))) + 2


def test_single_text_file_splits_its_tail_at_a_line(tmp_path: Path) -> None:
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400)]
    path = tmp_path / "book.txt"
    path.write_text("".join(lines))
    data = prepare(path, "byte", cache_dir=tmp_path / "cache")
    train = ByteTokenizer().decode(data.train[:-1])  # drop the trailing separator
    val = ByteTokenizer().decode(data.val[:-1])
    assert train + val == path.read_text()
    assert val.startswith("line ") and train.endswith("\n")
    assert abs(len(val) / (len(train) + len(val)) - VAL_FRACTION) < 0.01


# --- hashing, caching, pinning ---------------------------------------------------------------


def test_cache_is_reused_not_rebuilt(text_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = prepare(text_folder, "byte", cache_dir=cache)
    assert first.built
    assert first.path == cache / first.corpus_hash / "byte"
    stamps = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    second = prepare(text_folder, "byte", cache_dir=cache)
    assert not second.built
    assert {p.name: p.stat().st_mtime_ns for p in second.path.iterdir()} == stamps
    assert isinstance(second.train, np.memmap) and second.train.dtype == np.uint16
    np.testing.assert_array_equal(first.train, second.train)
    assert second.describe() == first.describe()


def test_corpus_hash_names_content_not_location_or_mtime(text_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    copy = tmp_path / "elsewhere"
    shutil.copytree(text_folder, copy)
    original = prepare(text_folder, "byte", cache_dir=cache)
    moved = prepare(copy, "byte", cache_dir=cache)
    assert moved.corpus_hash == original.corpus_hash and not moved.built
    os.utime(copy / "json" / "tool.py", ns=(1, 1))  # new mtime, same bytes
    assert prepare(copy, "byte", cache_dir=cache).corpus_hash == original.corpus_hash
    with (copy / "json" / "tool.py").open("a") as handle:
        handle.write("# one more line\n")
    changed = prepare(copy, "byte", cache_dir=cache)
    assert changed.corpus_hash != original.corpus_hash and changed.built
    assert len(original.corpus_hash) == 16 and int(original.corpus_hash, 16) >= 0


def test_pinned_hash_refuses_a_different_corpus(text_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = prepare(text_folder, "byte", cache_dir=cache)
    assert prepare(text_folder, cache_dir=cache, expect_hash=data.corpus_hash[:8]).built is False
    with pytest.raises(CorpusMismatchError, match=data.corpus_hash):
        prepare(text_folder, "byte", cache_dir=cache, expect_hash="0123456789abcdef")


def test_concurrent_builders_produce_one_cache(text_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: prepare(text_folder, "byte", cache_dir=cache), range(4)))
    assert sum(r.built for r in results) == 1
    assert len({r.corpus_hash for r in results}) == 1
    assert all(np.array_equal(r.train, results[0].train) for r in results)
    leftovers = [p for p in cache.rglob("*.tmp")]
    assert leftovers == []


# --- tokenizers ------------------------------------------------------------------------------


def test_byte_round_trip_and_document_separator(stdlib_bytes: TokenData) -> None:
    tok = ByteTokenizer()
    text = "naïve — ünïcode ✓ def f():\n    return 1\n"
    np.testing.assert_array_equal(tok.encode(text), np.frombuffer(text.encode(), np.uint8))
    assert tok.decode(tok.encode(text)) == text
    # The train split starts with the first training document, then the separator byte.
    first = next(d for d in resolve_corpus("stdlib").documents() if d.split == "train")
    head = np.asarray(stdlib_bytes.train[: len(first.data) + 1])
    assert head[-1] == tok.eot_id == 0
    assert tok.decode(head[:-1]) == first.data.decode()
    assert stdlib_bytes.vocab_size == 256 and stdlib_bytes.val_bytes_per_token == 1.0
    assert stdlib_bytes.tokenizer_id == "byte"


def test_bpe_trained_on_train_split_round_trips(text_folder: Path, tmp_path: Path) -> None:
    data = prepare(text_folder, "bpe300", cache_dir=tmp_path / "cache")
    tok = data.tokenizer
    assert isinstance(tok, BPETokenizer)
    assert data.tokenizer_id.startswith("bpe300-") and len(data.tokenizer_id) == len("bpe300-") + 8
    assert 257 < data.vocab_size <= 300 and int(data.train.max()) < data.vocab_size
    assert (data.path / "tokenizer.json").is_file()
    # Documents are separated by <|endoftext|>; each decodes back to its exact text.
    docs = [d for d in resolve_corpus(text_folder).documents() if d.split == "val"]
    ends = np.flatnonzero(np.asarray(data.val) == tok.eot_id)
    assert len(ends) == len(docs)
    assert tok.decode(data.val[: ends[0]]) == docs[0].data.decode()
    text = "class Décodeur:\n    '''JSON ✓'''\n"
    assert tok.decode(tok.encode(text)) == text
    val_bytes = sum(len(d.data) + 1 for d in docs)  # the separator counts as one byte
    assert data.val_bytes_per_token == pytest.approx(val_bytes / len(data.val))
    assert data.val_bytes_per_token > 1.2
    # Training is deterministic: another cache trains the same tokenizer (same id).
    again = prepare(text_folder, "bpe300", cache_dir=tmp_path / "other-cache")
    assert again.tokenizer_id == data.tokenizer_id
    np.testing.assert_array_equal(again.train, data.train)


def test_bpe_sees_only_the_training_split(text_folder: Path, tmp_path: Path) -> None:
    marker = "zqxjv"  # a word that appears only in one validation file, very often
    val_rel = "email/__init__.py"
    assert is_val_path(val_rel)
    (text_folder / val_rel).write_text(f"{marker} " * 20_000)

    def learned_marker(tok: BPETokenizer) -> bool:
        return any("zq" in tok.decode([i]) for i in range(tok.vocab_size))

    data = prepare(text_folder, "bpe300", cache_dir=tmp_path / "cache")
    assert isinstance(data.tokenizer, BPETokenizer) and not learned_marker(data.tokenizer)
    # Control: trained on every document, the same tokenizer does learn the marker.
    texts = [d.data.decode() for d in resolve_corpus(text_folder).documents()]
    assert learned_marker(BPETokenizer.train(texts, 300))


# --- pre-tokenized .bin corpora --------------------------------------------------------------


def test_bin_folder_and_single_bin_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 1000, size=5000, dtype=np.uint16)
    val = rng.integers(0, 1000, size=600, dtype=np.uint16)
    folder = tmp_path / "owt"
    folder.mkdir()
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    data = prepare(folder, "pretokenized", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_array_equal(data.val, val)
    assert data.vocab_size == int(max(train.max(), val.max())) + 1
    assert data.tokenizer_id == "pretokenized" and math.isnan(data.val_bytes_per_token)
    assert data.baselines["unigram"] == pytest.approx(unigram_loss(train, val, data.vocab_size))

    single = tmp_path / "all.bin"
    train.tofile(single)
    data = prepare(single, "pretokenized", cache_dir=tmp_path / "cache")
    n_val = math.ceil(len(train) * VAL_FRACTION)
    np.testing.assert_array_equal(data.val, train[-n_val:])
    np.testing.assert_array_equal(data.train, train[:-n_val])

    with pytest.raises(ValueError, match="pretokenized"):
        prepare(folder, "byte", cache_dir=tmp_path / "cache")  # ids above 255
    with pytest.raises(ValueError, match="already tokenized"):
        prepare(folder, "bpe512", cache_dir=tmp_path / "cache")


# --- batches ---------------------------------------------------------------------------------


def test_random_windows_are_seeded_and_y_is_x_shifted() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    stream = iter(RandomWindows(tokens, context=16, batch_size=8, seed=3))
    batches = [next(stream) for _ in range(5)]
    again = iter(RandomWindows(tokens, context=16, batch_size=8, seed=3))
    for x, y in batches:
        x2, y2 = next(again)
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(y, x + 1)  # tokens are 0, 1, 2, ...: a window is consecutive ids
        assert int(y.max()) < len(tokens)
    other = next(iter(RandomWindows(tokens, context=16, batch_size=8, seed=4)))
    assert not torch.equal(other[0], batches[0][0])
    resumed = next(iter(RandomWindows(tokens, context=16, batch_size=8, seed=3, start=3)))
    assert torch.equal(resumed[0], batches[3][0])


def test_random_windows_stream_does_not_depend_on_worker_count() -> None:
    tokens = np.arange(5_000, dtype=np.uint16)
    dataset = RandomWindows(tokens, context=8, batch_size=4, seed=11)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    it = iter(loader)
    with_workers = [next(it)[0] for _ in range(6)]
    del it
    for i, x in enumerate(with_workers):
        assert torch.equal(x, dataset.batch(i)[0])


def test_val_windows_are_fixed_spread_and_non_overlapping() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    windows = val_windows(tokens, context=64, max_tokens=2_000)
    assert windows.shape == (2_000 // 64, 65) and windows.dtype == torch.int64
    assert torch.equal(windows, val_windows(tokens, context=64, max_tokens=2_000))
    starts = windows[:, 0]
    assert torch.equal(windows, starts[:, None] + torch.arange(65))  # consecutive tokens
    assert int(starts[0]) == 0 and int(windows[-1, -1]) == len(tokens) - 1
    assert int(torch.diff(starts).min()) >= 65  # no token in two windows
    # Capped by the data when max_tokens asks for more than exists.
    assert val_windows(tokens, context=64, max_tokens=10**9).shape[0] == 10_000 // 65
    with pytest.raises(ValueError, match="no validation window"):
        val_windows(tokens[:10], context=64, max_tokens=1_000)


# --- n-gram baselines ------------------------------------------------------------------------


def test_ngram_baselines_on_real_text(stdlib_bytes: TokenData) -> None:
    base = stdlib_bytes.baselines
    assert base["bigram"] < base["unigram"] < math.log(256)
    assert 1.5 < base["bigram"] < 3.0 < base["unigram"] < 4.0  # bytes of Python source
    assert stdlib_bytes.describe()["baseline_bigram"] == base["bigram"]


def test_bigram_loss_equals_hand_computed_value(monkeypatch: pytest.MonkeyPatch) -> None:
    train = np.array([0, 1, 0, 1, 1], dtype=np.uint16)
    val = np.array([1, 0, 2], dtype=np.uint16)  # targets: 0 after 1, then 2 after 0
    # Add-one unigram over V = 3: counts (2, 3, 0) of 5 -> p = (3/8, 4/8, 1/8).
    assert unigram_loss(train, val, 3) == pytest.approx(-(math.log(3 / 8) + math.log(1 / 8)) / 2)
    # Train pairs (0,1) x2, (1,0), (1,1): c(0) = 2, c(1) = 2. With alpha = 1:
    # p(0|1) = (1 + 3/8) / (2 + 1) = 11/24 and p(2|0) = (0 + 1/8) / (2 + 1) = 1/24.
    expected = -(math.log(11 / 24) + math.log(1 / 24)) / 2
    assert bigram_loss(train, val, 3, alpha=1.0) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(ngram, "_DENSE_MAX", 0)  # the sparse table gives the same answer
    assert bigram_loss(train, val, 3, alpha=1.0) == pytest.approx(expected, rel=1e-12)


def test_sparse_and_dense_bigram_tables_agree(
    stdlib_bytes: TokenData, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = stdlib_bytes.train[:200_000], stdlib_bytes.val[:50_000]
    dense = bigram_loss(train, val, 256, alpha=3.0)
    monkeypatch.setattr(ngram, "_DENSE_MAX", 0)
    assert bigram_loss(train, val, 256, alpha=3.0) == pytest.approx(dense, rel=1e-12)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("corpus", "tokenizer", "message"),
    [
        ("shakespeare", "byte", r"'shakespeare'.*'stdlib', 'stdlib-notests', 'python-all'"),
        ("", "byte", r"corpus '' is not valid.*'stdlib'"),
        ("stdlib", "wordpiece", r"'wordpiece'.*'byte', 'bpeN'"),
        ("stdlib", "bpe100", r"'bpe100'.*from 257 to 65535"),
        ("stdlib", "bpe70000", r"'bpe70000'.*from 257 to 65535"),
        ("stdlib", "pretokenized", r"needs a \.bin corpus"),
    ],
)
def test_bad_input_raises_value_error_naming_it(
    corpus: str, tokenizer: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        prepare(corpus, tokenizer, cache_dir=tmp_path / "cache")


def test_folder_without_text_files_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match=r"'.*empty' holds no text files"):
        prepare(empty, "byte", cache_dir=tmp_path / "cache")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="odd size"):
        prepare(odd, "pretokenized", cache_dir=tmp_path / "cache")


def test_epoch_windows_see_every_token_once_per_epoch() -> None:
    tokens = np.arange(17 * 40 + 5, dtype=np.uint16)  # 40 windows of 17 tokens, 5 left over
    stream = EpochWindows(tokens, context=16, batch_size=8, seed=1)
    first_epoch = torch.cat([stream.batch(i)[0] for i in range(5)])
    starts = sorted(int(row[0]) for row in first_epoch)
    assert starts == [17 * k for k in range(40)]  # every window once, none twice
    x, y = stream.batch(0)
    assert torch.equal(y, x + 1)
    second = torch.cat([stream.batch(i)[0] for i in range(5, 10)])
    assert sorted(int(row[0]) for row in second) == starts  # reshuffled, still once each
    assert not torch.equal(second, first_epoch)
    # Two data-parallel ranks split one order: disjoint windows, together the whole epoch.
    ranks = [
        EpochWindows(tokens, context=16, batch_size=4, seed=1, rank=r, world=2) for r in (0, 1)
    ]
    seen = [int(row[0]) for i in range(5) for s in ranks for row in s.batch(i)[0]]
    assert sorted(seen) == starts


def test_a_budget_beyond_the_training_split_is_refused_unless_allowed() -> None:
    from scalelab.train import RepeatedDataError, TrainConfig, check_no_repeats

    cfg = TrainConfig(preset="n10k", corpus="stdlib")
    check_no_repeats(1_000, 1_000, cfg)  # exactly one epoch is fine
    with pytest.raises(RepeatedDataError, match=r"tokens: 2,500 training tokens are 2.50 passes"):
        check_no_repeats(2_500, 1_000, cfg)
    with pytest.warns(UserWarning, match="repeats data: 2.50 epochs"):
        check_no_repeats(2_500, 1_000, cfg.model_copy(update={"repeat_data": True}))
