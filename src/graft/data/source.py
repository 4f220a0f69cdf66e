"""One entry for labelled data: a folder of class folders, or a manifest (a file, or the one in a folder)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from graft.data.decode import DEFAULT_MAX_PIXELS
from graft.data.files import list_subdirs
from graft.data.manifest import MANIFEST_SUFFIXES, find_manifest, read_manifest
from graft.data.manifest_splits import manifest_splits
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.records import DatasetSplits
from graft.data.scan import SPLIT_ALIASES, scan_dataset

__all__ = ["manifest_of", "scan_labelled"]

logger = logging.getLogger("graft")
_SPLIT_NAMES = {alias for aliases in SPLIT_ALIASES.values() for alias in aliases}


def _has_class_folders(root: Path) -> bool:
    """A folder graft reads as class folders: two or more of them, or split folders holding them."""
    subdirs = list_subdirs(root)
    plain = [d for d in subdirs if d.name.lower() not in _SPLIT_NAMES]
    splits = [d for d in subdirs if d.name.lower() in _SPLIT_NAMES]
    return len(plain) >= 2 or any(list_subdirs(d) for d in splits)


def manifest_of(data: str | os.PathLike, warn: Callable[[str], None] | None = None) -> Path | None:
    """The manifest that ``data`` means, or None for a folder of class folders.

    A manifest file is itself; a folder holding exactly one manifest (``.csv``, ``.tsv``,
    ``.jsonl``, ``.parquet``) means it, unless the folder also holds class folders: then the
    folders are read as always and the manifest is named in a warning.
    """
    path = Path(data).expanduser()
    if not path.is_dir() or not _has_class_folders(path):
        return find_manifest(path)
    stray = sorted(f.name for f in path.iterdir() if f.is_file() and f.suffix.lower() in MANIFEST_SUFFIXES)
    if stray:
        say = warn or logger.warning
        say(f"reading the class folders of {path}; to read labels from {stray[0]} instead, pass it: {path / stray[0]}")
    return None


def scan_labelled(
    data: str | os.PathLike,
    split: SplitOptions | None = None,
    manifest: ManifestOptions | None = None,
    *,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> DatasetSplits:
    """Checked, seeded splits of labelled images from a folder of class folders or a manifest."""
    split = split or SplitOptions()
    found = manifest_of(data, warn)
    if found is None:
        return scan_dataset(
            data,
            val_fraction=split.val_fraction,
            test_fraction=split.test_fraction,
            seed=split.seed,
            strict=strict,
            max_pixels=max_pixels,
            progress=progress,
            warn=warn,
        )
    table = read_manifest(found, manifest)
    return manifest_splits(table, split, strict=strict, max_pixels=max_pixels, progress=progress, warn=warn)
