"""Small torch-free file helpers: atomic writes and JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "write_json", "replace_dir"]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary file and an atomic rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (numpy values converted)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=_default))


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a fully written folder ``tmp`` into place at ``target``, replacing any old one.

    Renames only: a reader sees the old folder or the new one, never a half-written one.
    """
    tmp, target = Path(tmp), Path(target)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
