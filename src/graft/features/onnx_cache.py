"""The one ONNX cache: exported graphs kept under ``$GRAFT_HOME/runtime/onnx``, keyed by their inputs.

Backbone exports for the embedding engine and whole-model exports for serving a
model folder live here alike, so a size limit and clean-up apply to all of them.
Files are written atomically; the least recently used beyond :data:`KEEP` are removed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable

from graft.config import graft_home
from graft.fileio import atomic_write_bytes

__all__ = ["KEEP", "cache_dir", "discard", "get_or_build", "lookup", "store_bytes"]

log = logging.getLogger("graft")

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


def store_bytes(key: str, data: bytes) -> Path | None:
    """Keep ``data`` under ``key``; None where the cache cannot be written (it only costs a re-export)."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        _trim()
    except OSError as e:
        log.debug("could not cache the ONNX export at %s: %s", path, e)
        return None
    return path


def get_or_build(key: str, build: Callable[[Path], None]) -> Path:
    """The cached file for ``key``, building it first with ``build(tmp_path)`` on a miss."""
    hit = lookup(key)
    if hit is not None:
        return hit
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.onnx")
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _trim()
    return path


def discard(key: str) -> None:
    """Forget a cached file (it did not match PyTorch)."""
    _path(key).unlink(missing_ok=True)
