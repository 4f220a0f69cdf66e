"""On-disk feature cache: append-only, memory-mapped, invalidated per file, and checked before it is trusted.

Layout under ``$GRAFT_HOME/features/<embedder-key>/``::

    meta.json       what produced these features (backbone, weights hash, preprocessing)
    features.bin    raw float32 rows, appended
    index.jsonl     one {"k": file-key, "r": row, "c": crc32 of the row} per line, appended after its row

The embedder key hashes everything that changes features (architecture, weights
hash, preprocessing, precision, feature kind); the file key hashes the image's path,
size, mtime, inode and ctime plus the augmentation view. So a changed image, backbone, weights or
preprocessing re-embeds only what changed, and any head can reuse the rest.

Every index line must prove it belongs to its row before its features are used
(:meth:`FeatureCache.verify`): the row must exist (never a negative number or past the end
of ``features.bin``), its bytes must match the checksum written with the line, and its
values must be finite and not all zero. An older ``features.bin`` restored from a backup,
a disk hiccup that shortened it, or a torn write therefore re-embeds the images concerned
(with one warning) instead of handing another image's features to every later run. Rows
are written before their index line, so a crash mid-run loses at most the batch being
written. Caches of format 1 had no checksums: the format is part of the embedder key, so
they are left unread and rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from graft.fileio import atomic_write_text, storage_errors

__all__ = ["FeatureCache", "file_key", "embedder_key"]

CACHE_FORMAT = 2  # 2: a checksum per row (format-1 caches are not trusted: a new key, so rebuilt)
_VERIFY_CHUNK = 4096  # rows read at once while verifying
log = logging.getLogger("graft")
_warned: set[Path] = set()  # caches this process already warned about: say it once


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def embedder_key(spec: Mapping[str, Any]) -> str:
    """Stable key of everything that determines a feature vector."""
    return _sha1(json.dumps({"format": CACHE_FORMAT, **spec}, sort_keys=True, default=str))[:20]


def file_key(path: str | os.PathLike, view: int = 0, seed: int = 0) -> str:
    """Key of one image file as it is now, and one augmentation view.

    Path, size and mtime, plus the inode and the status-change time: a user (or a tool)
    can restore size and mtime after an edit (``touch -r``, ``cp -p``), but not ctime,
    which the kernel sets on every write; a replaced file also has a new inode.
    """
    p = Path(path).resolve()
    st = p.stat()
    return _sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}|{view}|{seed if view else 0}")


def _row_sum(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row, dtype=np.float32).tobytes())


def _entry(line: bytes) -> tuple[str, int, int] | None:
    """(key, row, checksum) of one index line; None for a line that is damaged or lacks a field."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict):
        return None
    k, r, c = item.get("k"), item.get("r"), item.get("c")
    if not isinstance(k, str) or type(r) is not int or type(c) is not int:
        return None
    return k, r, c


class FeatureCache:
    """Feature rows of one embedder, shared by every run that uses the same embedder.

    Args:
        root: the cache folder for this embedder (created if missing).
        dim: feature dimension.
        meta: JSON-ready description written to ``meta.json`` for people.
    """

    def __init__(self, root: str | os.PathLike, dim: int, meta: Mapping[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.dim = int(dim)
        self._bin = self.root / "features.bin"
        self._index_path = self.root / "index.jsonl"
        meta_path = self.root / "meta.json"
        with storage_errors(self.root, "GRAFT_HOME"):
            self.root.mkdir(parents=True, exist_ok=True)
            if meta is not None and not meta_path.exists():
                atomic_write_text(meta_path, json.dumps({"dim": self.dim, **meta}, indent=2, default=str))
        self._index: dict[str, tuple[int, int]] = {}  # key -> (row, checksum)
        self._verified: set[str] = set()
        self._index_size = 0
        self._reload_index()

    # ------------------------------------------------------------------ index
    def _n_rows_on_disk(self) -> int:
        return self._bin.stat().st_size // (4 * self.dim) if self._bin.exists() else 0

    def _reload_index(self) -> None:
        if not self._index_path.exists():
            return
        n_rows = self._n_rows_on_disk()
        with open(self._index_path, "rb") as f:
            f.seek(self._index_size)
            data = f.read()
        # Only consume complete lines; a partially written last line is re-read later.
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            entry = _entry(line)
            if entry is None or not 0 <= entry[1] < n_rows:  # damaged, or a line without its row
                continue
            k, r, c = entry
            if self._index.get(k) != (r, c):  # a later line for a key replaces the earlier one
                self._index[k] = (r, c)
                self._verified.discard(k)
        self._index_size += end

    def refresh(self) -> None:
        """Read index lines other processes appended since (the ranks of a sharded embedding)."""
        self._reload_index()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions in ``keys`` that have no cached row."""
        return [i for i, k in enumerate(keys) if k not in self._index]

    def verify(self, keys: Sequence[str | None]) -> int:
        """Check the rows of the cached ``keys`` against their entries; forget the ones that fail.

        A row fails when its bytes do not match the checksum written with its index line
        (it now holds another image's features, or was damaged), or when it holds a
        non-finite value or only zeros. The keys that fail read as missing, so they are
        embedded again; the first time a cache fails in a process, one warning says so.

        Returns:
            How many entries failed.
        """
        wanted = {k for k in keys if k is not None and k in self._index and k not in self._verified}
        todo = sorted(wanted, key=lambda k: self._index[k][0])  # in file order: sequential reads
        if not todo:
            return 0
        n_rows = self._n_rows_on_disk()  # the file may have shrunk since the index was read
        bad = [k for k in todo if self._index[k][0] >= n_rows]
        todo = [k for k in todo if self._index[k][0] < n_rows]
        if todo:
            bad += self._check_rows(todo, np.memmap(self._bin, dtype=np.float32, mode="r", shape=(n_rows, self.dim)))
        for k in bad:
            del self._index[k]
        if bad and self.root not in _warned:
            _warned.add(self.root)
            log.warning(
                "feature cache %s: cached feature rows did not match their index entries (features.bin was "
                "shortened, restored from an older copy or damaged) or held NaN, infinite or all-zero values; "
                "re-embedding the images concerned",
                self.root,
            )
        return len(bad)

    def _check_rows(self, keys: list[str], mm: np.ndarray) -> list[str]:
        """The ``keys`` whose rows in ``mm`` fail their checksum or hold NaN, infinity or only zeros."""
        bad = []
        for start in range(0, len(keys), _VERIFY_CHUNK):
            chunk = keys[start : start + _VERIFY_CHUNK]
            rows = np.asarray(mm[np.fromiter((self._index[k][0] for k in chunk), np.int64, len(chunk))])
            sane = np.isfinite(rows).all(1) & (rows != 0).any(1)
            for k, row, ok in zip(chunk, rows, sane):
                if ok and _row_sum(row) == self._index[k][1]:
                    self._verified.add(k)
                else:
                    bad.append(k)
        return bad

    # ------------------------------------------------------------------ write
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, keys: Sequence[str], rows: np.ndarray) -> None:
        """Append rows (float32, shape (len(keys), dim)); safe across processes."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape != (len(keys), self.dim):
            raise ValueError(f"expected rows of shape ({len(keys)}, {self.dim}), got {rows.shape}")
        if not len(keys):
            return
        sums = [_row_sum(row) for row in rows]
        with storage_errors(self.root, "GRAFT_HOME"), self._locked():
            self._reload_index()  # another process may have appended meanwhile
            start = self._n_rows_on_disk()
            index_size = self._index_path.stat().st_size if self._index_path.exists() else 0
            lines = "".join(
                json.dumps({"k": k, "r": start + i, "c": c}) + "\n" for i, (k, c) in enumerate(zip(keys, sums))
            )
            if index_size and not self._ends_with_newline():
                lines = "\n" + lines  # a writer killed mid-line: keep its torn line apart from ours
            try:
                with open(self._bin, "ab") as f:
                    f.truncate(start * 4 * self.dim)  # drop a torn partial row, if any
                    f.write(rows.tobytes())
                    f.flush()
                    os.fsync(f.fileno())
                with open(self._index_path, "a") as f:
                    f.write(lines)
            except OSError:  # a full disk: leave both files as they were, never a torn line
                self._truncate(start, index_size)
                raise
            for i, (k, c) in enumerate(zip(keys, sums)):
                self._index[k] = (start + i, c)
                self._verified.add(k)

    def _ends_with_newline(self) -> bool:
        with open(self._index_path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _truncate(self, n_rows: int, index_size: int) -> None:
        for path, size in ((self._bin, n_rows * 4 * self.dim), (self._index_path, index_size)):
            try:
                if path.exists() and path.stat().st_size > size:
                    os.truncate(path, size)
            except OSError:
                pass  # the next add drops a torn row; a torn index line is ignored

    # ------------------------------------------------------------------ read
    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Rows for ``keys`` (all must be present) as a new float32 array."""
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        mm = np.memmap(self._bin, dtype=np.float32, mode="r").reshape(-1, self.dim)
        rows = np.fromiter((self._index[k][0] for k in keys), dtype=np.int64, count=len(keys))
        return np.asarray(mm[rows])
