"""On-disk feature cache: append-only, memory-mapped, invalidated per file.

Layout under ``$GRAFT_HOME/features/<embedder-key>/``::

    meta.json       what produced these features (backbone, weights hash, preprocessing)
    features.bin    raw float32 rows, appended
    index.jsonl     one {"k": file-key, "r": row} per line, appended after its row

The embedder key hashes everything that changes features (architecture, weights
hash, preprocessing, precision, feature kind); the file key hashes the image's path,
size, mtime, inode and ctime plus the augmentation view. So a changed image, backbone, weights or
preprocessing re-embeds only what changed, and any head can reuse the rest.
Rows are written before their index line, so a crash mid-run loses at most the row
being written; index lines pointing past the end of ``features.bin`` are ignored.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["FeatureCache", "file_key", "embedder_key"]

CACHE_FORMAT = 1


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
        self.root.mkdir(parents=True, exist_ok=True)
        self._bin = self.root / "features.bin"
        self._index_path = self.root / "index.jsonl"
        meta_path = self.root / "meta.json"
        if meta is not None and not meta_path.exists():
            meta_path.write_text(json.dumps({"dim": self.dim, **meta}, indent=2, default=str))
        self._index: dict[str, int] = {}
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
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if int(item["r"]) < n_rows:
                self._index[item["k"]] = int(item["r"])
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
        with self._locked():
            self._reload_index()  # another process may have appended meanwhile
            start = self._n_rows_on_disk()
            with open(self._bin, "ab") as f:
                f.truncate(start * 4 * self.dim)  # drop a torn partial row, if any
                f.write(rows.tobytes())
                f.flush()
                os.fsync(f.fileno())
            lines = "".join(json.dumps({"k": k, "r": start + i}) + "\n" for i, k in enumerate(keys))
            with open(self._index_path, "a") as f:
                f.write(lines)
            for i, k in enumerate(keys):
                self._index[k] = start + i

    # ------------------------------------------------------------------ read
    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Rows for ``keys`` (all must be present) as a new float32 array."""
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        mm = np.memmap(self._bin, dtype=np.float32, mode="r").reshape(-1, self.dim)
        rows = np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        return np.asarray(mm[rows])
