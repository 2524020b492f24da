"""Corpora: where the text comes from, how it splits into train and validation, its hash.

Sources (``resolve_corpus`` turns a user string into one of them):

- ``"stdlib"``: every ``.py`` file of the running interpreter's standard library (found with
  ``sysconfig.get_paths()["stdlib"]``), about 30 MB of code and English docstrings that exist on
  every machine without a download. ``site-packages``, ``dist-packages`` and ``__pycache__``
  are excluded.
- ``"stdlib-notests"``: the same without test folders (``test/``, ``tests/``,
  ``idlelib/idle_test/``...), about 12 MB.
- ``"python-all"``: the standard library plus every ``.py`` file under the interpreter's
  site-packages. Its content depends on what is installed, so only its hash identifies it.
- a text file, or a folder of text files (recursive; files with a text-like suffix; hidden
  entries and ``__pycache__`` skipped).
- a folder with ``train.bin`` and ``val.bin`` (``uint16`` token ids, nanoGPT's layout), or a
  single ``.bin`` file whose last 5 % becomes the validation split.

Every text file is one document. Files that are not UTF-8, or contain a NUL byte (the byte-level
document separator), are skipped and counted. Paths are walked in sorted order, so the
document order, the split and the hash are the same on every machine with the same files.

Split: a document is in validation when the SHA-256 of its relative path falls in the lowest
``VAL_FRACTION`` of the hash range (about 5 % of files, the same files everywhere). A single
file, or a folder whose hash split would leave one side empty, is split by position instead:
the last ~5 % of its bytes (cut at a line break) is validation.

Hash: ``content_hash`` is SHA-256 over (split, relative path, length, bytes) of every
document, so it names the content, not where it lives. Reading 30 MB for it on every call would
be wasteful, so ``fast_key`` (a hash of paths, sizes and modification times) finds a hash
already computed on this machine.
"""

from __future__ import annotations

import hashlib
import math
import os
import site
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

VAL_FRACTION = 0.05
BUILTIN_CORPORA = ("stdlib", "stdlib-notests", "python-all")
# Folder names of the standard library's own test suites ("stdlib-notests" prunes them).
TEST_DIRS = frozenset({"test", "tests", "idle_test"})
# Never part of the standard library corpus, at any depth.
STDLIB_PRUNE = frozenset({"site-packages", "dist-packages", "__pycache__"})
TEXT_SUFFIXES = frozenset(
    {
        ".txt", ".md", ".rst", ".tex", ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp",
        ".rs", ".go", ".java", ".js", ".ts", ".sh", ".html", ".css", ".xml", ".json",
        ".jsonl", ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg",
    }
)  # fmt: skip
HASH_VERSION = "scalelab-corpus-v1"
Split = Literal["train", "val"]

ALLOWED = (
    "'stdlib', 'stdlib-notests', 'python-all', a text file, a folder of text files, "
    "a folder holding train.bin and val.bin, or a .bin file"
)


@dataclass(frozen=True)
class SourceFile:
    """One file of a corpus; ``rel`` (a POSIX relative path) is its identity everywhere."""

    rel: str
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Document:
    """The bytes of one document (valid UTF-8, no NUL) and the split it belongs to."""

    rel: str
    data: bytes
    split: Split


def is_val_path(rel: str, fraction: float = VAL_FRACTION) -> bool:
    """Whether the file at relative path ``rel`` belongs to the validation split."""
    digest = hashlib.sha256(rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _tail_cut(data: bytes, pos: int) -> int:
    """A cut near ``pos`` that starts a line (or, without line breaks, a UTF-8 character)."""
    after = data.find(b"\n", pos)
    if 0 <= after < len(data) - 1:
        return after + 1
    before = data.rfind(b"\n", 0, pos)
    if before >= 0:
        return before + 1
    while 0 < pos < len(data) and data[pos] & 0xC0 == 0x80:  # skip continuation bytes
        pos += 1
    return pos


class TextCorpus:
    """A sorted list of text files and the rule that splits them into train and validation."""

    kind = "text"

    def __init__(
        self, name: str, files: list[SourceFile], split: Literal["path-hash", "tail"]
    ) -> None:
        self.name = name
        self.files = tuple(files)
        self.split_rule = split
        self.skipped: list[str] = []  # filled by ``documents``: files that are not text

    def fast_key(self) -> str:
        """Cheap key of the file list (paths, sizes, mtimes) for finding a known hash."""
        h = hashlib.sha256(f"{HASH_VERSION}\0{self.name}\0{self.split_rule}".encode())
        for f in self.files:
            h.update(f"\0{f.path}\0{f.size}\0{f.mtime_ns}".encode())
        return h.hexdigest()[:32]

    def documents(self) -> Iterator[Document]:
        """Read the documents in order; non-text files are skipped and listed in ``skipped``."""
        self.skipped = []
        cut_at = int(sum(f.size for f in self.files) * (1 - VAL_FRACTION))
        offset, in_val = 0, False
        for f in self.files:
            data = f.path.read_bytes()
            start, offset = offset, offset + f.size
            if not _is_text(data):
                self.skipped.append(f.rel)
                in_val = in_val or (self.split_rule == "tail" and offset > cut_at)
                continue
            if self.split_rule == "path-hash":
                yield Document(f.rel, data, "val" if is_val_path(f.rel) else "train")
            elif in_val:
                yield Document(f.rel, data, "val")
            elif offset > cut_at:
                cut = _tail_cut(data, max(0, cut_at - start))
                in_val = True
                if cut > 0:
                    yield Document(f.rel, data[:cut], "train")
                if cut < len(data):
                    yield Document(f.rel, data[cut:], "val")
            else:
                yield Document(f.rel, data, "train")

    def content_hash(self) -> str:
        """SHA-256 (16 hex) of every document's split, relative path and bytes."""
        hasher = ContentHasher(self.split_rule)
        for doc in self.documents():
            hasher.update(doc)
        return hasher.hexdigest()

    def __repr__(self) -> str:
        return f"TextCorpus({self.name!r}, files={len(self.files)}, split={self.split_rule!r})"


class ContentHasher:
    """Incremental content hash of a document stream (see ``TextCorpus.content_hash``)."""

    def __init__(self, split_rule: str) -> None:
        self._h = hashlib.sha256(f"{HASH_VERSION}\0{split_rule}".encode())

    def update(self, doc: Document) -> None:
        self._h.update(f"\0{doc.split}\0{doc.rel}\0{len(doc.data)}\0".encode())
        self._h.update(doc.data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]


class BinCorpus:
    """Pre-tokenized ``uint16`` files: ``train.bin`` + ``val.bin``, or one file split by tail."""

    kind = "bin"

    def __init__(self, name: str, train_path: Path, val_path: Path | None = None) -> None:
        self.name = name
        self.train_path = train_path
        self.val_path = val_path
        for path in self.paths:
            if path.stat().st_size % 2:
                raise ValueError(f"corpus {name!r}: {path} has an odd size, so it is not uint16")

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.train_path,) if self.val_path is None else (self.train_path, self.val_path)

    def fast_key(self) -> str:
        """Cheap key of the files (paths, sizes, mtimes) for finding a known hash."""
        h = hashlib.sha256(f"{HASH_VERSION}-bin".encode())
        for path in self.paths:
            st = path.stat()
            h.update(f"\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return h.hexdigest()[:32]

    def content_hash(self) -> str:
        """SHA-256 (16 hex) of the files' roles and bytes (streamed, so any size works)."""
        h = hashlib.sha256(f"{HASH_VERSION}-bin".encode())
        roles = ("all",) if self.val_path is None else ("train", "val")
        for role, path in zip(roles, self.paths, strict=True):
            h.update(f"\0{role}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 24):
                    h.update(chunk)
        return h.hexdigest()[:16]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped train and validation token ids (no copy)."""
        train = _memmap(self.train_path)
        if self.val_path is not None:
            return train, _memmap(self.val_path)
        n_val = math.ceil(len(train) * VAL_FRACTION)
        if n_val < 2 or len(train) - n_val < 2:
            raise ValueError(f"corpus {self.name!r}: {len(train)} tokens are too few to split")
        return train[:-n_val], train[-n_val:]

    def __repr__(self) -> str:
        return f"BinCorpus({self.name!r})"


def _memmap(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint16)  # numpy cannot map an empty file
    return np.memmap(path, dtype=np.uint16, mode="r")


def _walk(
    root: Path, keep: Callable[[str], bool], prune: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of files under ``root`` that ``keep``, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in prune and d != "__pycache__" and not d.startswith(".")
        )
        base = Path(dirpath)
        for name in sorted(filenames):
            if not name.startswith(".") and keep(name):
                path = base / name
                yield path.relative_to(root).as_posix(), path


def _source_files(entries: Iterator[tuple[str, Path]]) -> list[SourceFile]:
    """Stat each entry; sorted by relative path (the walk sorts per folder only)."""
    files = []
    for rel, path in entries:
        st = path.stat()
        files.append(SourceFile(rel, path, st.st_size, st.st_mtime_ns))
    return sorted(files, key=lambda f: f.rel)


def stdlib_root() -> Path:
    """The running interpreter's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def site_packages_roots() -> list[Path]:
    """The interpreter's site-packages folders (resolved, without duplicates, in order)."""
    candidates = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    candidates.append(sysconfig.get_paths()["platlib"])
    roots: list[Path] = []
    for c in candidates:
        path = Path(c).resolve()
        if path.is_dir() and path not in roots:
            roots.append(path)
    return roots


def stdlib_files(include_tests: bool = True) -> list[SourceFile]:
    """The standard library's ``.py`` files, sorted, without site-packages or caches."""
    prune = STDLIB_PRUNE if include_tests else STDLIB_PRUNE | TEST_DIRS
    return _source_files(_walk(stdlib_root(), lambda n: n.endswith(".py"), prune))


def python_all_files() -> list[SourceFile]:
    """The standard library plus every ``.py`` file under the interpreter's site-packages."""
    files = stdlib_files()
    for i, root in enumerate(site_packages_roots()):
        prefix = "site-packages" if i == 0 else f"site-packages-{i}"
        entries = _walk(root, lambda n: n.endswith(".py"))
        files += _source_files((f"{prefix}/{rel}", path) for rel, path in entries)
    return sorted(files, key=lambda f: f.rel)


def resolve_corpus(corpus: str | os.PathLike[str]) -> TextCorpus | BinCorpus:
    """The corpus a user string names (see the module docstring); ValueError if none."""
    if not isinstance(corpus, os.PathLike):
        if not isinstance(corpus, str) or not corpus.strip():
            raise ValueError(f"corpus {corpus!r} is not valid: expected {ALLOWED}")
        if corpus == "stdlib":
            return TextCorpus("stdlib", stdlib_files(include_tests=True), "path-hash")
        if corpus == "stdlib-notests":
            return TextCorpus("stdlib-notests", stdlib_files(include_tests=False), "path-hash")
        if corpus == "python-all":
            return TextCorpus("python-all", python_all_files(), "path-hash")
    path = Path(corpus).expanduser()
    if not path.exists():
        raise ValueError(
            f"corpus {str(corpus)!r} is neither a built-in corpus nor an existing path: "
            f"expected {ALLOWED}"
        )
    path = path.resolve()
    if path.is_file():
        if path.suffix == ".bin":
            return BinCorpus(str(path), path)
        st = path.stat()
        return TextCorpus(
            str(path), [SourceFile(path.name, path, st.st_size, st.st_mtime_ns)], "tail"
        )
    if (path / "train.bin").is_file() and (path / "val.bin").is_file():
        return BinCorpus(str(path), path / "train.bin", path / "val.bin")
    files = _source_files(_walk(path, lambda n: Path(n).suffix.lower() in TEXT_SUFFIXES))
    if not files:
        raise ValueError(
            f"corpus folder {str(corpus)!r} holds no text files "
            f"(suffixes {', '.join(sorted(TEXT_SUFFIXES))}) and no train.bin + val.bin"
        )
    n_val = sum(is_val_path(f.rel) for f in files)
    rule: Literal["path-hash", "tail"] = "path-hash" if 0 < n_val < len(files) else "tail"
    return TextCorpus(str(path), files, rule)
