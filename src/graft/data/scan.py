"""Find the images of a dataset folder, check them, and split them reproducibly.

Two layouts are understood: split folders (``train/``, ``val/``, optional ``test/``,
each holding one folder per class) and a plain folder of class folders, which is split
per class with a seeded shuffle. Every candidate image is header-probed so that broken
files are reported up front instead of crashing a training run halfway.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from pathlib import Path
from typing import Callable

from graft.data.decode import DEFAULT_MAX_PIXELS, probe_image
from graft.data.files import collect_image_paths, list_loose_files, list_subdirs, walk_image_files
from graft.data.records import DatasetSplits, ImageRecord, SkippedFile
from graft.data.splitting import split_class
from graft.exceptions import DataError, ImageDecodeError

__all__ = [
    "ImageRecord",
    "SkippedFile",
    "DatasetSplits",
    "SPLIT_ALIASES",
    "scan_dataset",
    "scan_split",
    "split_folders",
    "collect_image_paths",
]

logger = logging.getLogger("graft")

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}
"""Canonical split name -> accepted folder names (compared case-insensitively)."""

_ALIAS_TO_SPLIT = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}
_STRICT_LIST = 5  # how many bad files a --strict error names


# ---------------------------------------------------------------------------- layout
def _detect_splits(root: Path) -> tuple[dict[str, Path], list[Path]]:
    """Map canonical split names to folders; also return the other sub-folders."""
    found: dict[str, Path] = {}
    others: list[Path] = []
    for sub in list_subdirs(root):
        split = _ALIAS_TO_SPLIT.get(sub.name.lower())
        if split is None:
            others.append(sub)
        elif split in found:
            raise DataError(
                f"{root} has two {split} folders, {found[split].name!r} and {sub.name!r}; keep one (or merge them)"
            )
        else:
            found[split] = sub
    return found, others


def split_folders(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The split folders of a dataset folder, by canonical name (``train``, ``val``, ``test``); {} for class folders only."""
    return _detect_splits(Path(root).expanduser())[0]


class _Prober:
    """Probe files, collecting records and skips and reporting progress and warnings."""

    def __init__(
        self, max_pixels: int | None, progress: Callable[[int], None] | None, warn: Callable[[str], None] | None
    ) -> None:
        self.max_pixels = max_pixels
        self.progress = progress
        self.warn = warn or logger.warning
        self.skipped: list[SkippedFile] = []
        self.ignored: list[str] = []

    def folder(self, folder: Path, label: int) -> list[ImageRecord]:
        images, others = walk_image_files(folder, warn=self.warn)
        self.ignored.extend(others)
        records = []
        for path in images:
            try:
                w, h = probe_image(path, self.max_pixels)
            except ImageDecodeError as exc:
                self.skipped.append(SkippedFile(str(path), exc.reason))
                self.warn(f"skipped {path}: {exc.reason}")
            else:
                records.append(ImageRecord(path, label, w, h))
            if self.progress is not None:
                self.progress(1)
        if not records:
            what = f"{len(images)} image file(s), all unreadable" if images else "no image files"
            raise DataError(
                f"class folder {folder} has no usable images ({what}; {len(others)} other file(s)); "
                f"add images with one of the extensions .jpg .png .bmp .gif .webp .tif, or remove the folder"
            )
        return records

    def check_strict(self, strict: bool) -> None:
        if strict and self.skipped:
            listed = "; ".join(f"{s.path} ({s.reason})" for s in self.skipped[:_STRICT_LIST])
            more = f" and {len(self.skipped) - _STRICT_LIST} more" if len(self.skipped) > _STRICT_LIST else ""
            raise DataError(
                f"{len(self.skipped)} unusable image file(s): {listed}{more}. "
                "Remove or fix them, or drop --strict to skip them with a warning"
            )


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise DataError(f"{name} must be in [0, 1), got {value}")


# ---------------------------------------------------------------------------- public API
def scan_dataset(
    root: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> DatasetSplits:
    """Scan a dataset folder into labelled, checked train/val(/test) splits.

    Args:
        root: dataset folder: either ``train/`` + ``val/`` (+ ``test/``) folders of class
            folders (aliases in :data:`SPLIT_ALIASES`, any case), or class folders directly.
        val_fraction: share of each class held out for validation when there is no
            val folder.
        test_fraction: share of each class held out for test when there is no test folder
            (0: no test split).
        seed: seed of the per-class shuffle; the same seed gives the same split anywhere.
        strict: raise instead of skipping unreadable images.
        max_pixels: decompression-bomb limit passed to :func:`probe_image`.
        progress: called with the number of files just probed (an increment), as they are.
        warn: called with each warning (one per skipped file, plus layout oddities such
            as stray folders beside the split folders); defaults to the ``graft`` logger.

    Returns:
        The splits, class list and the skipped/ignored files.

    Raises:
        DataError: missing root, fewer than two classes, an empty class or split, a
            val/test folder whose classes do not match train, or skips with ``strict``.
    """
    root = Path(root).expanduser()
    _check_root(root, val_fraction, test_fraction)
    split_folders, other_dirs = _detect_splits(root)
    prober = _Prober(max_pixels, progress, warn)
    prober.ignored.extend(list_loose_files(root))
    layout, base = _layout(root, split_folders, other_dirs, prober)
    classes = _training_classes(base)
    per_class = _read_split_folders(root, base, split_folders, classes, prober)
    prober.check_strict(strict)
    splits = _assemble_splits(root, base, per_class, classes, val_fraction, test_fraction, seed)
    return DatasetSplits(
        root=root,
        classes=classes,
        splits=splits,
        skipped=prober.skipped,
        ignored=prober.ignored,
        layout=layout,
        split_dirs={split: folder.name for split, folder in split_folders.items()},
    )


def _layout(root: Path, split_folders: dict[str, Path], other_dirs: list[Path], prober: _Prober) -> tuple[str, Path]:
    """The layout (``split-folders`` or ``auto-split``) and the folder of the training classes."""
    if "train" not in split_folders and split_folders:
        names = ", ".join(p.name for p in split_folders.values())
        raise DataError(
            f"{root} has split folder(s) {names} but no train folder; add a 'train' folder "
            "(with one folder per class), or put the class folders directly in the dataset folder"
        )
    if not split_folders:
        return "auto-split", root
    for extra in other_dirs:
        prober.warn(f"ignoring folder {extra}: not a train/val/test split folder")
    return "split-folders", split_folders["train"]


def _training_classes(base: Path) -> list[str]:
    """The class folders of ``base``, in order; at least two."""
    classes = [p.name for p in list_subdirs(base)]
    _check_distinct(base, classes)
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(
            f"{base} must contain at least two class folders (one folder of images per class); found {found}"
        )
    return classes


def _check_distinct(base: Path, classes: list[str]) -> None:
    """Refuse class folders whose names differ only in case or Unicode form ("Cat" and "cat", "é" and "e + ́").

    They read as one class to people, on case-insensitive disks and in a model's label list.
    """
    seen: dict[str, str] = {}
    for name in classes:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            raise DataError(
                f"{base} has class folders {seen[key]!r} and {name!r}, which differ only in case or Unicode form; "
                "merge them into one folder or rename one"
            )
        seen[key] = name


def _check_root(root: Path, val_fraction: float, test_fraction: float) -> None:
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; pass a folder holding one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is a file, not a folder; pass a folder holding one sub-folder per class")


def _read_split_folders(
    root: Path, base: Path, split_folders: dict[str, Path], classes: list[str], prober: _Prober
) -> dict[str, dict[str, list[ImageRecord]]]:
    """Records of every class folder of the split folders that exist, in a fixed order."""
    per_class: dict[str, dict[str, list[ImageRecord]]] = {}
    folders = [(s, split_folders[s]) for s in SPLIT_ALIASES if s in split_folders] or [("train", root)]
    for split, folder in folders:
        if folder != root:
            prober.ignored.extend(list_loose_files(folder))
        dirs = {p.name: p for p in list_subdirs(folder)}
        unknown = sorted(set(dirs) - set(classes))
        if unknown:
            raise DataError(
                f"{folder} has class folder(s) {unknown} that are not in {base} (classes: {classes}); "
                "rename or remove them, or add them to the training folder"
            )
        missing = [c for c in classes if c not in dirs]
        if missing and split == "val":
            raise DataError(
                f"validation folder {folder} is missing class folder(s) {missing}; add images for them, "
                f"or delete {folder.name}/ to let graft split validation images off {base.name}/ automatically"
            )
        if missing and split == "test":
            prober.warn(f"test folder {folder} has no folder for class(es) {missing}")
        per_class[split] = {name: prober.folder(path, classes.index(name)) for name, path in dirs.items()}
    return per_class


def _assemble_splits(
    root: Path,
    base: Path,
    per_class: dict[str, dict[str, list[ImageRecord]]],
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, list[ImageRecord]]:
    """The final splits: folders as found, missing val/test carved out of train per class."""
    fractions: dict[str, float] = {}
    if "test" not in per_class and test_fraction > 0:
        fractions["test"] = test_fraction
    if "val" not in per_class:
        fractions["val"] = val_fraction
    split_names = ["train", "val"] + (["test"] if "test" in per_class or "test" in fractions else [])
    splits: dict[str, list[ImageRecord]] = {name: [] for name in split_names}
    for name in classes:
        train_recs = per_class["train"][name]
        parts = split_class(train_recs, name, fractions, seed, base) if fractions else {"train": train_recs}
        for split, recs in parts.items():
            splits[split].extend(recs)
    for split in ("val", "test"):
        if split in per_class:
            for name in classes:
                splits[split].extend(per_class[split].get(name, []))
    for split, recs in splits.items():
        if not recs:
            hint = "set a val fraction above 0" if split == "val" else "add images"
            raise DataError(f"the {split} split of {root} has no images; {hint}")
    return splits


def scan_split(
    root: str | os.PathLike[str],
    split: str | None = None,
    classes: list[str] | None = None,
    *,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[ImageRecord], list[str], list[SkippedFile]]:
    """Collect the labelled images of one split, for evaluating a trained model.

    Args:
        root: dataset folder (split folders or class folders).
        split: split to use, by canonical name (``val``) or folder name (``validation``),
            any case. ``None``: ``test`` if present, else the val split, else the whole
            root when it holds class folders only.
        classes: the model's classes; labels index this list. ``None``: sorted folder names.
        strict: raise instead of skipping unreadable images.
        max_pixels: decompression-bomb limit passed to :func:`probe_image`.
        progress: called with the number of files just probed.
        warn: called once per skipped file; defaults to the ``graft`` logger.

    Returns:
        ``(records, classes_used, skipped)``.

    Raises:
        DataError: missing root or split, a folder naming no model class, no images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"evaluation folder {root} does not exist or is not a folder")
    folder = _evaluation_folder(root, split)
    dirs, classes = _model_class_dirs(folder, classes)
    prober = _Prober(max_pixels, progress, warn)
    records: list[ImageRecord] = []
    for name in sorted(dirs):
        records.extend(prober.folder(dirs[name], classes.index(name)))
    prober.check_strict(strict)
    return records, list(classes), prober.skipped


def _evaluation_folder(root: Path, split: str | None) -> Path:
    """The folder :func:`scan_split` reads: the split asked for, else test, else val, else ``root``."""
    split_folders, _ = _detect_splits(root)
    if split is not None:
        wanted = split.lower()
        folder = next((f for s, f in split_folders.items() if wanted in (s, f.name.lower())), None)
        if folder is None:
            available = ", ".join(f.name for f in split_folders.values()) or "none (class folders only)"
            raise DataError(f"{root} has no {split!r} split folder; available split folders: {available}")
        return folder
    if "test" in split_folders:
        return split_folders["test"]
    if "val" in split_folders:
        return split_folders["val"]
    if split_folders:
        raise DataError(
            f"{root} has only a {split_folders['train'].name!r} folder and no test/val folder; "
            f"pass --split {split_folders['train'].name} to evaluate on the training images"
        )
    return root


def _model_class_dirs(folder: Path, classes: list[str] | None) -> tuple[dict[str, Path], list[str]]:
    """The class folders of ``folder`` by name, and the classes (default: those names, sorted)."""
    dirs = {p.name: p for p in list_subdirs(folder)}
    if not dirs:
        raise DataError(f"{folder} has no class folders; expected one folder of images per class")
    if classes is None:
        classes = sorted(dirs)
    unknown = sorted(set(dirs) - set(classes))
    if unknown:
        raise DataError(
            f"{folder} has folder(s) {unknown} that are not classes of the model; "
            f"the model's classes are {list(classes)}. Rename or remove those folders"
        )
    return dirs, classes
