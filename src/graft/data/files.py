"""Listing image files: folder walks for scanning and input expansion for predict."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable, Sequence

from graft.data.decode import has_image_extension
from graft.data.records import SkippedFile
from graft.exceptions import DataError

__all__ = ["collect_image_paths", "is_hidden", "list_subdirs", "list_loose_files", "walk_image_files"]


def is_hidden(name: str) -> bool:
    """Hidden or tool folders/files: ``.git``, ``.DS_Store``, ``__MACOSX``, ``__pycache__``."""
    return name.startswith(".") or name.startswith("__")


def list_subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted by name (case-sensitive)."""
    with os.scandir(folder) as it:
        dirs = [Path(e.path) for e in it if e.is_dir() and not is_hidden(e.name)]
    return sorted(dirs, key=lambda p: p.name)


def list_loose_files(folder: Path) -> list[str]:
    """Files (not folders) directly inside ``folder``, sorted."""
    with os.scandir(folder) as it:
        return sorted(e.path for e in it if e.is_file())


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def walk_image_files(folder: Path, warn: Callable[[str], None] | None = None) -> tuple[list[Path], list[str]]:
    """Recursively list image candidates (sorted by relative path) and other files.

    Symbolic links are followed only while they stay inside ``folder``; each folder is
    visited once (by device and inode) and each file counted once (by its real path),
    so a link cycle (``cats/self -> .``) or a link to a sibling class (``cats/x -> ../dogs``)
    can neither hang the walk nor copy or mislabel images. Every link left out is
    reported through ``warn`` and listed with the other (non-image) files.
    """
    root = os.path.realpath(folder)
    say = warn or (lambda _m: None)
    st = os.stat(folder)
    seen_dirs = {(st.st_dev, st.st_ino)}
    seen_files: set[str] = set()
    images: list[tuple[str, Path]] = []
    others: list[str] = []

    def leave_out(full: str, why: str) -> None:
        say(f"ignored link {full}: {why}")
        others.append(full)

    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=errors.append):
        keep = []
        for d in sorted(d for d in dirnames if not is_hidden(d)):
            full = os.path.join(dirpath, d)
            if os.path.islink(full) and not _inside(os.path.realpath(full), root):
                leave_out(full, f"it points outside {folder}")
                continue
            try:
                dst = os.stat(full)
            except OSError:
                leave_out(full, "it points nowhere")
                continue
            if (dst.st_dev, dst.st_ino) in seen_dirs:
                leave_out(full, "that folder is already included (a link cycle or a second link to it)")
                continue
            seen_dirs.add((dst.st_dev, dst.st_ino))
            keep.append(d)
        dirnames[:] = keep
        # Real files before links, so a link, not the file it points to, is what gets left out.
        for fname in sorted(filenames, key=lambda f: (os.path.islink(os.path.join(dirpath, f)), f)):
            full = os.path.join(dirpath, fname)
            real = os.path.realpath(full)
            if os.path.islink(full) and not _inside(real, root):
                leave_out(full, f"it points outside {folder}")
            elif real in seen_files:
                leave_out(full, "the same file is already included under another name")
            elif has_image_extension(fname) and not fname.startswith("."):
                seen_files.add(real)
                # Sort key is the relative posix path, identical on every OS.
                images.append((Path(os.path.relpath(full, folder)).as_posix(), Path(full)))
            else:
                others.append(full)
    for e in errors:
        if os.path.realpath(e.filename or "") == root:
            raise DataError(f"{folder} cannot be read ({e.strerror or e}); check its permissions")
        say(f"skipped folder {e.filename}: {e.strerror or e}")
    images.sort(key=lambda t: t[0])
    return [p for _, p in images], sorted(others)


def collect_image_paths(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[SkippedFile]]:
    """Expand files, folders and glob patterns into a de-duplicated list of images.

    Args:
        inputs: file paths (taken as given, whatever their extension), folders
            (searched recursively for image extensions, sorted) or glob patterns
            (``**`` allowed).

    Returns:
        ``(paths, skipped)``: paths in input order without duplicates, and one
        :class:`SkippedFile` per input that matched nothing.
    """
    paths: list[Path] = []
    seen: set[str] = set()
    skipped: list[SkippedFile] = []

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            paths.append(p)

    def add_dir(d: Path) -> int:
        images, _ = walk_image_files(d)
        for p in images:
            add(p)
        return len(images)

    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text).expanduser()
        found = 0
        if p.is_file():
            add(p)
            found = 1
        elif p.is_dir():
            found = add_dir(p)
        elif glob.has_magic(text):
            for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
                m = Path(match)
                if m.is_file() and has_image_extension(m):
                    add(m)
                    found += 1
                elif m.is_dir():
                    found += add_dir(m)
        if not found:
            skipped.append(SkippedFile(text, "no such file or no image matched"))
    return paths, skipped
