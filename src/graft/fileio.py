"""Small torch-free file helpers: atomic writes, JSON, and one line for a write a full or read-only disk refused."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from graft.exceptions import StorageError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "json_text",
    "write_json",
    "replace_dir",
    "atomic_dir",
    "make_folder",
    "storage_error",
    "storage_errors",
    "STORAGE_ERRNOS",
]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a temporary file in the same folder, then one atomic rename.

    The one way graft writes a file: a reader sees the old file or the new one, never half of it,
    and a failed write leaves no temporary behind. The temporary keeps ``path``'s suffix, so
    writers that choose a format by suffix (NumPy, pyarrow, ONNX) see the right one. A full,
    read-only or forbidden disk is one :class:`StorageError` naming the folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    with storage_errors(path.parent):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def json_text(data: Any) -> str:
    """Indented JSON with numpy values and paths converted."""
    return json.dumps(data, indent=2, default=_default)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json_text(data))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a fully written folder ``tmp`` into place at ``target``, replacing any old one.

    Where the system can, the two folders are swapped in one atomic step, so a process
    killed at any moment leaves either the old folder or the new one at ``target``, never
    neither. Elsewhere two renames are used (a kill between them leaves the old folder
    beside it as ``.NAME.old<pid>``).
    """
    tmp, target = Path(tmp), Path(target)
    if target.exists() and _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return target
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------- failed writes
#: What a write can meet that no code change fixes: a full disk or quota, a read-only mount, no permission.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
_REASONS = {
    errno.ENOSPC: ("the disk is full (no space left on device)", "free some space there"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space there"),
    errno.EFBIG: ("a file grew past what the file system or a limit (ulimit -f) allows", "raise the limit"),
    errno.EROFS: ("it is on a read-only file system", "use a writable folder"),
    errno.EACCES: ("permission denied", "use a folder you can write to"),
    errno.EPERM: ("permission denied", "use a folder you can write to"),
}


def storage_error(err: OSError, folder: str | os.PathLike | None = None, setting: str = "") -> StorageError:
    """One line for a write that failed on a full, read-only or forbidden disk: the folder, the cause, the fix.

    ``setting`` names what chose the folder (``--out``, ``GRAFT_HOME``), so the fix can say what to change.
    """
    where = Path(folder) if folder is not None else Path(err.filename or ".").parent
    cause, fix = _REASONS.get(err.errno or 0, (err.strerror or str(err), "use another folder"))
    if setting == "GRAFT_HOME":
        fix += ", or point GRAFT_HOME at another folder"
    elif setting:
        fix += f", or choose another {setting}"
    return StorageError(f"cannot write to {where}: {cause}; {fix}")


@contextmanager
def storage_errors(folder: str | os.PathLike, setting: str = "") -> Iterator[None]:
    """Turn an OSError of :data:`STORAGE_ERRNOS` raised inside into a :func:`storage_error` naming ``folder``."""
    try:
        yield
    except OSError as e:
        if isinstance(e, StorageError) or e.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(e, folder, setting) from None


def make_folder(folder: str | os.PathLike, setting: str = "") -> Path:
    """``mkdir -p folder`` with one line where it cannot be made: a file in the way, or a full,
    read-only or forbidden disk (:class:`StorageError` naming the folder and ``setting``)."""
    folder = Path(folder)
    with storage_errors(folder, setting):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            fix = f"choose another {setting}" if setting else "use another folder"
            raise StorageError(f"cannot write to {folder}: a file is in the way of that folder; {fix}") from None
    return folder


@contextmanager
def atomic_dir(target: str | os.PathLike, setting: str = "") -> Iterator[Path]:
    """``with atomic_dir(folder) as tmp:`` fill ``tmp``; on success it replaces ``folder`` in one step.

    On any failure the temporary folder is removed (a full disk leaves nothing behind) and
    a full, read-only or forbidden disk becomes one :class:`StorageError` naming the folder.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    with storage_errors(target.parent, setting):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            yield tmp
            replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
