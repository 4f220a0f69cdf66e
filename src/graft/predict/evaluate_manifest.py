"""Which rows of a manifest ``graft evaluate`` scores, with their labels in the model's class order.

A manifest's own split column decides first where it gives test or val rows. Without one,
the rows are split as training split them (the seed and fractions the model records) and,
when that gives the very rows the model was trained with (the recorded fingerprint), the
held-out part is scored; on any other manifest every row is, and the result says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from graft.data.manifest import read_manifest
from graft.data.manifest_splits import manifest_splits
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.records import DatasetSplits, ImageRecord, SkippedFile
from graft.exceptions import DataError
from graft.predict.base import Predictor

__all__ = ["manifest_records"]


def manifest_records(
    predictor: Predictor,
    path: Path,
    split: str | None,
    strict: bool,
    warn: Callable[[str], None],
    options: ManifestOptions | None = None,
) -> tuple[list[ImageRecord], list[SkippedFile], dict[str, str]]:
    """(records labelled in the model's classes, skipped files, what they are) of the manifest rows to score.

    Raises:
        DataError: the manifest names labels the model does not know, lists several labels per
            image for a single-label model, or lacks the ``split`` asked for.
    """
    table = read_manifest(path, options)
    classes = list(predictor.classes)
    unknown = [c for c in table.classes if c not in classes]
    if unknown:
        raise DataError(
            f"{path} names {len(unknown)} label(s) the model does not know ({', '.join(unknown[:5])}); "
            f"its classes are {', '.join(classes[:10])}{'...' if len(classes) > 10 else ''}"
        )
    if table.multi_label and not predictor.spec.multi_label:
        raise DataError(
            f"{path} lists several labels per image but the model is single-label; score it with a multi-label "
            "model (trained on such a manifest), or give one label per row"
        )
    recorded = predictor.spec.split
    ds = manifest_splits(table, _recorded_options(recorded), strict=strict, warn=warn)
    part, scored = _part(ds, split, recorded, classes)
    index = [classes.index(c) for c in ds.classes]
    records = [_relabelled(r, index, predictor.spec.multi_label) for r in part]
    return records, ds.skipped, scored


def _recorded_options(recorded: Mapping[str, Any]) -> SplitOptions:
    """The seed and fractions the model's training split used (the defaults where none is recorded)."""
    try:
        return SplitOptions(
            val_fraction=float(recorded.get("val_fraction", SplitOptions.val_fraction)),
            test_fraction=float(recorded.get("test_fraction", SplitOptions.test_fraction)),
            seed=int(recorded.get("seed", SplitOptions.seed)),
        ).validate()
    except (TypeError, ValueError):  # a damaged record: split as training does by default
        return SplitOptions()


def _part(
    ds: DatasetSplits, split: str | None, recorded: Mapping[str, Any], classes: list[str]
) -> tuple[list[ImageRecord], dict[str, str]]:
    """The records to score and a description of them (see the module docstring)."""
    name = Path(ds.root).name
    if split is not None:
        if split not in ds.splits:
            raise DataError(f"{ds.root} has no {split!r} split (it has {', '.join(sorted(ds.splits))})")
        return ds.splits[split], {"split": split, "description": f"the {split} split of {ds.root}"}
    given = set(ds.split_dirs)
    same = bool(recorded.get("fingerprint")) and ds.classes == classes and ds.fingerprint() == recorded["fingerprint"]
    if same or {"test", "val"} & given:
        part = "test" if ds.splits.get("test") and (same or "test" in given) else "val"
        if part in given:
            return ds.splits[part], {"split": part, "description": f"the {part} rows of {name} (its split column)"}
        return ds.splits[part], {
            "split": part,
            "description": f"the {part} split graft held out of {name} when this model was trained on it "
            f"(seed {recorded.get('seed')}, {part}_fraction {recorded.get(f'{part}_fraction')})",
        }
    why = (
        "it is not the manifest this model was trained on (or it changed since), so none of them was held out for sure"
        if recorded
        else "it has no split column and the model does not record its training split, so some may be training images"
    )
    every = [r for recs in ds.splits.values() for r in recs]
    return every, {"split": "all", "description": f"every row of {name}: {why}"}


def _relabelled(rec: ImageRecord, index: list[int], multi_label: bool) -> ImageRecord:
    """``rec`` with its label(s) as indices into the model's classes (``index``: manifest class -> model class)."""
    labels = tuple(sorted(index[i] for i in rec.label_set))
    if multi_label:
        return ImageRecord(rec.path, -1, rec.width, rec.height, labels)
    return ImageRecord(rec.path, labels[0], rec.width, rec.height)
