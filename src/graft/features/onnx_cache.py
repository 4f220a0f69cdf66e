"""The one ONNX cache: exported graphs kept under ``$GRAFT_HOME/runtime/onnx``, keyed by their inputs.

Backbone exports for the embedding engine and whole-model exports for serving a
model folder live here alike, so a size limit and clean-up apply to all of them.
Files are written atomically; the least recently used beyond :data:`KEEP` are removed.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from graft.config import graft_home
from graft.fileio import atomic_write

__all__ = ["KEEP", "cache_dir", "discard", "get_or_build", "load_or_build", "lookup"]

log = logging.getLogger("graft")
T = TypeVar("T")

KEEP = 8
"""Exported models kept on disk (most recently used first)."""
_KEY = re.compile(r"^[0-9a-f]{8,64}$")


def cache_dir() -> Path:
    return graft_home() / "runtime" / "onnx"


def _path(key: str) -> Path:
    if not _KEY.match(key):
        raise ValueError(f"ONNX cache keys are hex digests, got {key!r}")
    return cache_dir() / f"{key}.onnx"


def lookup(key: str) -> Path | None:
    """The cached file for ``key`` (marked as recently used), or None."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        os.utime(path)
    except OSError:
        pass
    return path


def _trim() -> None:
    files = sorted(cache_dir().glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in files[KEEP:]:
        p.unlink(missing_ok=True)


def get_or_build(key: str, build: Callable[[Path], None]) -> Path:
    """The cached file for ``key``, building it first with ``build(tmp_path)`` on a miss."""
    hit = lookup(key)
    if hit is not None:
        return hit
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, build)
    _trim()
    return path


def load_or_build(key: str, build: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    """``load(path)`` of the cached export for ``key``, exported by ``build(path)`` first on a miss.

    ``load`` opens and checks the file (ONNX Runtime loads it, its outputs match PyTorch) and
    raises where it is unusable. A cached file it rejects was damaged on disk (truncated,
    overwritten, a disk error): it is discarded and rebuilt, with one warning, rather than
    failing or falling back to a slower runtime on every later run. A fresh export it rejects
    is not kept. Where the cache cannot be written, the export is built in a temporary folder.
    """
    hit = lookup(key)
    if hit is not None:
        try:
            return load(hit)
        except Exception as e:  # noqa: BLE001 - whatever is wrong with a cached file, a fresh export replaces it
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.warning("the cached ONNX export %s is damaged (%s); rebuilding it", hit, why)
            discard(key)
    try:
        path = get_or_build(key, build)
    except OSError as e:
        log.debug("could not cache the ONNX export for %s: %s", key, e)
        with tempfile.TemporaryDirectory(prefix="graft-onnx-") as tmp:
            path = Path(tmp) / f"{key}.onnx"
            build(path)
            return load(path)  # the runtime has read the file before the folder goes
    try:
        return load(path)
    except BaseException:
        discard(key)
        raise


def discard(key: str) -> None:
    """Forget a cached file (it did not match PyTorch)."""
    _path(key).unlink(missing_ok=True)
