"""Listing image files: folder walks for scanning and input expansion for predict."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from graft.data.decode import has_image_extension
from graft.data.records import SkippedFile
from graft.exceptions import DataError

__all__ = ["collect_image_paths", "is_hidden", "list_subdirs", "list_loose_files", "walk_folder", "walk_image_files"]


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


class _Walk:
    """The state of one walk: folders and files already read, images found, other files, links left out."""

    def __init__(self, folder: Path, warn: Callable[[str], None] | None) -> None:
        self.folder = self.top = folder
        self.say = warn or (lambda _m: None)
        st = os.stat(folder)
        self.seen_dirs = {(st.st_dev, st.st_ino)}
        self.seen_files: set[str] = set()
        self.images: list[tuple[str, Path]] = []
        self.others: list[str] = []

    def leave_out(self, full: str, why: str) -> None:
        self.say(f"ignored link {full}: {why}")
        self.others.append(full)

    def enter(self, full: str, root: str | None) -> bool:
        """Whether to read the sub-folder ``full``: a link must stay inside ``root`` (None: anywhere); each folder once."""
        if root is not None and os.path.islink(full) and not _inside(os.path.realpath(full), root):
            self.leave_out(full, f"it points outside {self.top}")
            return False
        if root is None and _inside(os.path.realpath(self.folder), os.path.realpath(full)):
            self.leave_out(full, f"it holds {self.folder} itself (a link cycle)")
            return False
        try:
            dst = os.stat(full)
        except OSError:
            self.leave_out(full, "it points nowhere")
            return False
        if (dst.st_dev, dst.st_ino) in self.seen_dirs:
            self.leave_out(full, "that folder is already included (a link cycle or a second link to it)")
            return False
        self.seen_dirs.add((dst.st_dev, dst.st_ino))
        return True

    def files(self, dirpath: str, filenames: list[str], root: str) -> None:
        # Real files before links, so a link, not the file it points to, is what gets left out.
        for fname in sorted(filenames, key=lambda f: (os.path.islink(os.path.join(dirpath, f)), f)):
            full = os.path.join(dirpath, fname)
            real = os.path.realpath(full)
            if os.path.islink(full) and not _inside(real, root):
                self.leave_out(full, f"it points outside {self.top}")
            elif real in self.seen_files:
                self.leave_out(full, "the same file is already included under another name")
            elif has_image_extension(fname) and not fname.startswith("."):
                self.seen_files.add(real)
                # Sort key is the relative posix path, identical on every OS.
                self.images.append((Path(os.path.relpath(full, self.folder)).as_posix(), Path(full)))
            else:
                self.others.append(full)

    def tree(self, top: Path) -> None:
        """Everything under ``top``; links inside it are followed while they stay inside it."""
        root, self.top = os.path.realpath(top), top
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=errors.append):
            dirnames[:] = [
                d for d in sorted(dirnames) if not is_hidden(d) and self.enter(os.path.join(dirpath, d), root)
            ]
            self.files(dirpath, filenames, root)
        for e in errors:
            if os.path.realpath(e.filename or "") == root:
                raise DataError(f"{top} cannot be read ({e.strerror or e}); check its permissions")
            self.say(f"skipped folder {e.filename}: {e.strerror or e}")

    def result(self) -> tuple[list[Path], list[str]]:
        self.images.sort(key=lambda t: t[0])
        return [p for _, p in self.images], sorted(self.others)


def walk_image_files(folder: Path, warn: Callable[[str], None] | None = None) -> tuple[list[Path], list[str]]:
    """Recursively list image candidates (sorted by relative path) and other files.

    Symbolic links are followed only while they stay inside ``folder``; each folder is
    visited once (by device and inode) and each file counted once (by its real path),
    so a link cycle (``cats/self -> .``) or a link to a sibling class (``cats/x -> ../dogs``)
    can neither hang the walk nor copy or mislabel images. Every link left out is
    reported through ``warn`` and listed with the other (non-image) files.
    """
    walk = _Walk(folder, warn)
    walk.tree(folder)
    return walk.result()


def walk_folder(folder: Path, warn: Callable[[str], None] | None = None) -> tuple[list[Path], list[str]]:
    """The images under ``folder`` read as the dataset scan reads a folder of class folders (predict, export).

    The files directly inside ``folder``, then each visible sub-folder, followed wherever it
    points as a class folder is (a link included), walked by :func:`walk_image_files`' rules
    (links inside it stay inside it). Each folder is read once and each file counted once, so
    ``graft predict MODEL DIR`` sees the images ``graft train DIR`` would, never a link twice.
    """
    walk = _Walk(folder, warn)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder} cannot be read ({err.strerror or err}); check its permissions") from None
    walk.files(str(folder), [e.name for e in entries if not e.is_dir()], os.path.realpath(folder))
    for entry in entries:
        if entry.is_dir() and not is_hidden(entry.name) and walk.enter(entry.path, None):
            walk.tree(Path(entry.path))
    return walk.result()


def collect_image_paths(
    inputs: Sequence[str | os.PathLike[str]], warn: Callable[[str], None] | None = None
) -> tuple[list[Path], list[SkippedFile]]:
    """Expand files, folders and glob patterns into a de-duplicated list of images.

    Args:
        inputs: file paths (taken as given, whatever their extension), folders
            (read by :func:`walk_folder`, as a dataset scan reads them) or glob patterns
            (``**`` allowed).
        warn: called with each link left out of a folder (default: the ``graft`` logger).

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
        images, _ = walk_folder(d, warn or logging.getLogger("graft").warning)
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
