"""A manifest's rows as checked, seeded train/val(/test) splits, like a folder's.

Rows that name their split keep it; the others are split per label with the same seeded,
per-class shuffle as a folder of class folders (so a CSV listing a folder's files gives that
folder's split exactly), or, for multi-label rows, by iterative stratification (Sechidis,
Tsoumakas and Vlahavas, 2011), which keeps every label's share in each part as far as the
counts allow: a random split of a rare label's few images can leave validation without it.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from graft.data.decode import DEFAULT_MAX_PIXELS, probe_image
from graft.data.manifest import Manifest, ManifestRow
from graft.data.options import SplitOptions
from graft.data.records import DatasetSplits, ImageRecord, SkippedFile
from graft.data.splitting import split_class
from graft.exceptions import DataError, ImageDecodeError

__all__ = ["iterative_split", "manifest_splits"]

logger = logging.getLogger("graft")
_SPLITS = ("train", "val", "test")


def manifest_splits(
    manifest: Manifest,
    split: SplitOptions,
    *,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> DatasetSplits:
    """Probe every listed image (unreadable ones skipped, or refused with ``strict``) and split the rows."""
    say = warn or logger.warning
    skipped = [SkippedFile(p, why) for p, why in manifest.missing]
    for s in skipped:
        say(f"skipped {s.path}: {s.reason}")
    if manifest.merged:
        say(f"{manifest.path}: {manifest.merged} duplicate row(s) with the same labels were merged")
    records: list[tuple[ManifestRow, ImageRecord]] = []
    for row in manifest.rows:
        try:
            w, h = probe_image(row.path, max_pixels)
        except ImageDecodeError as exc:
            skipped.append(SkippedFile(str(row.path), f"{exc.reason} (row {row.row})"))
            say(f"skipped {row.path}: {exc.reason} (row {row.row})")
        else:
            label = row.labels[0] if not manifest.multi_label else -1
            records.append((row, ImageRecord(row.path, label, w, h, row.labels if manifest.multi_label else ())))
        if progress is not None:
            progress(1)
    if strict and skipped:
        raise DataError(
            f"{len(skipped)} listed image(s) unusable, first {skipped[0].path} ({skipped[0].reason}); "
            "fix or remove those rows, or drop --strict to skip them"
        )
    splits, given = _assign(manifest, records, split)
    return DatasetSplits(
        root=manifest.path,
        classes=list(manifest.classes),
        splits=splits,
        skipped=skipped,
        layout="manifest",
        split_dirs={s: f"{manifest.path.name} split column" for s in given},
        multi_label=manifest.multi_label,
    )


def _assign(
    manifest: Manifest, records: list[tuple[ManifestRow, ImageRecord]], split: SplitOptions
) -> tuple[dict[str, list[ImageRecord]], set[str]]:
    """Rows with a split keep it; the rest (and a missing val/test) are carved out of train."""
    given = {row.split for row, _ in records if row.split is not None}
    parts: dict[str, list[ImageRecord]] = {s: [rec for row, rec in records if row.split == s] for s in given}
    pool = [rec for row, rec in records if row.split in (None, "train")]
    fractions = {}
    if "test" not in given and split.test_fraction > 0:
        fractions["test"] = split.test_fraction
    if "val" not in given:
        fractions["val"] = split.val_fraction
    carve = _carve_multi if manifest.multi_label else _carve_single
    carved = carve(pool, manifest, fractions, split.seed) if fractions else {"train": pool}
    out = {s: carved.get(s, []) + (parts.get(s, []) if s != "train" else []) for s in _SPLITS}
    out = {s: _ordered(recs) for s, recs in out.items() if recs or s in ("train", "val")}
    for name, recs in out.items():
        if not recs:
            raise DataError(
                f"the {name} split of {manifest.path} has no usable images; add rows, or set a val fraction above 0"
            )
    return out, given - {"train"}


def _ordered(records: list[ImageRecord]) -> list[ImageRecord]:
    """The folder scan's order: by class, then path (multi-label: by path)."""
    return sorted(records, key=lambda r: (r.label, r.path.as_posix()))


def _carve_single(
    pool: list[ImageRecord], manifest: Manifest, fractions: dict[str, float], seed: int
) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = {}
    for index, name in enumerate(manifest.classes):
        recs = [r for r in pool if r.label == index]
        if not recs:
            continue
        for part, taken in split_class(recs, name, fractions, seed, manifest.path).items():
            out.setdefault(part, []).extend(taken)
    return out


def _carve_multi(
    pool: list[ImageRecord], manifest: Manifest, fractions: dict[str, float], seed: int
) -> dict[str, list[ImageRecord]]:
    order = sorted(pool, key=lambda r: r.path.as_posix())  # the split must not depend on row order
    Y = np.zeros((len(order), len(manifest.classes)), dtype=bool)
    for i, r in enumerate(order):
        Y[i, list(r.labels)] = True
    shares = {**fractions, "train": 1.0 - sum(fractions.values())}
    assigned = iterative_split(Y, shares, seed)
    return {part: [order[i] for i in idx] for part, idx in assigned.items()}


def iterative_split(Y: np.ndarray, shares: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Split the rows of a multi-hot matrix ``Y`` (n, labels) into parts of the given shares, per label.

    Sechidis et al. (2011): repeatedly take the label with the fewest rows left, and give each
    of its rows to the part that still wants that label most (ties: the part that wants most
    rows, then a seeded coin). Rows without a label fill the parts' remaining wants.
    """
    rng = np.random.default_rng(seed)
    names = list(shares)
    n, k = Y.shape
    want = np.array([shares[p] * n for p in names], dtype=np.float64)
    want_label = np.outer([shares[p] for p in names], Y.sum(0)).astype(np.float64)
    part_of = np.full(n, -1, dtype=np.int64)
    left = Y.copy()
    while left.any():
        counts = left.sum(0).astype(np.float64)
        counts[counts == 0] = np.inf
        label = int(rng.choice(np.flatnonzero(counts == counts.min())))
        for row in rng.permutation(np.flatnonzero(left[:, label])):
            best = np.flatnonzero(want_label[:, label] == want_label[:, label].max())
            best = best[want[best] == want[best].max()] if len(best) > 1 else best
            part = int(rng.choice(best))
            part_of[row] = part
            want[part] -= 1
            want_label[part] -= Y[row]
            left[row] = False
    for row in rng.permutation(np.flatnonzero(part_of < 0)):
        part = int(np.argmax(want))
        part_of[row] = part
        want[part] -= 1
    return {p: np.flatnonzero(part_of == i) for i, p in enumerate(names)}
