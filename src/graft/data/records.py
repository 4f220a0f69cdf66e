"""Plain result types of dataset scanning: records, skips and splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ImageRecord", "SkippedFile", "DatasetSplits"]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: the image file.
        label: index into the dataset's class list; -1 when unlabelled or multi-label.
        width: displayed width from the header probe (0 if unknown).
        height: displayed height from the header probe (0 if unknown).
        labels: a multi-label image's label indices (sorted); empty for single-label data.
    """

    path: Path
    label: int
    width: int = 0
    height: int = 0
    labels: tuple[int, ...] = ()

    @property
    def label_set(self) -> tuple[int, ...]:
        """Every label of the image: ``labels`` for multi-label data, else ``(label,)``."""
        return self.labels if self.labels else ((self.label,) if self.label >= 0 else ())


@dataclass(frozen=True)
class SkippedFile:
    """A file that was left out, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"path": self.path, "reason": self.reason}


@dataclass
class DatasetSplits:
    """Result of :func:`scan_dataset`.

    Attributes:
        root: the dataset folder.
        classes: class names; a record's ``label`` indexes this list.
        splits: ``"train"``, ``"val"`` and optionally ``"test"`` -> records.
        skipped: image files that could not be used.
        ignored: non-image files found (README, LICENSE, .DS_Store, ...).
        layout: ``"split-folders"`` or ``"auto-split"``.
        split_dirs: canonical split -> actual folder name, for splits read from a folder (or a
            manifest's split column); splits absent here were carved out of train (or the root) automatically.
        multi_label: records carry ``labels`` (several per image) instead of one ``label``.
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[ImageRecord]]
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    layout: str = "auto-split"
    split_dirs: dict[str, str] = field(default_factory=dict)
    multi_label: bool = False

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class (every class listed, zeros included) in ``split``."""
        counts = dict.fromkeys(self.classes, 0)
        for rec in self.splits.get(split, []):
            for label in rec.label_set:
                counts[self.classes[label]] += 1
        return counts

    def imbalance_ratio(self, split: str = "train") -> float:
        """Largest over smallest class count (``inf`` if a class has no image)."""
        counts = list(self.class_counts(split).values())
        if not counts:
            return float("nan")
        smallest = min(counts)
        return float("inf") if smallest == 0 else max(counts) / smallest

    def summary(self) -> dict[str, Any]:
        """JSON-ready overview: counts per split and class, skips, layout."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": list(self.classes),
            "split_dirs": dict(self.split_dirs),
            "counts": {name: self.class_counts(name) for name in self.splits},
            "totals": {name: len(recs) for name, recs in self.splits.items()},
            "n_skipped": len(self.skipped),
            "n_ignored": len(self.ignored),
            "imbalance_ratio": self.imbalance_ratio("train"),
        }

    def fingerprint(self) -> str:
        """A hash of every image's split, class (a multi-label image: its labels) and path inside :attr:`root`.

        Equal for the same folder split the same way, and for nothing else: ``evaluate``
        compares it with the one a model recorded before it trusts a re-made split.
        """
        h = hashlib.sha256()
        for split in sorted(self.splits):
            rows = sorted(
                (_inside(r.path, self.root), "|".join(self.classes[i] for i in r.label_set)) for r in self.splits[split]
            )
            for rel, names in rows:
                h.update(f"{split}\0{names}\0{rel}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:32]

    def split_record(self, seed: int, val_fraction: float, test_fraction: float) -> dict[str, Any]:
        """What a model records of the split it was trained on (``ArtifactSpec.split``)."""
        return {
            "layout": self.layout,
            "carved": sorted(set(self.splits) - set(self.split_dirs) - {"train"}),  # split off by graft, seeded
            "seed": int(seed),
            "val_fraction": float(val_fraction),
            "test_fraction": float(test_fraction),
            "n_images": sum(len(recs) for recs in self.splits.values()),
            "fingerprint": self.fingerprint(),
        }


def _inside(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
