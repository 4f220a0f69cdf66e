"""Metrics of any :class:`Predictor` on a labelled folder: what ``graft evaluate`` prints.

Which images are scored matters as much as the score. A folder with a ``test/`` or ``val/``
folder is scored there. A folder without one is the tricky case: scoring all of it would
score the training images too when it is the folder the model was trained on. The model
records how graft split its training folder (:attr:`ArtifactSpec.split`), so here that
split is made again and, when it gives the very same images (a fingerprint of every
image's split, class and path), its held-out part is scored; on any other folder every
image is, and the result says so (``scored``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from graft.data.options import ManifestOptions
from graft.data.records import ImageRecord, SkippedFile
from graft.data.scan import scan_dataset, scan_split, split_folders
from graft.data.source import manifest_of
from graft.exceptions import DataError
from graft.metrics import compute_metrics
from graft.metrics_multilabel import compute_multilabel_metrics
from graft.predict.base import Predictor
from graft.predict.evaluate_manifest import manifest_records

__all__ = ["evaluate_predictor"]


def evaluate_predictor(
    predictor: Predictor,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    top_k: int = 5,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    manifest: ManifestOptions | None = None,
) -> dict[str, Any]:
    """Metrics on ``test/`` if present, else val (or ``split``), of a labelled folder or a manifest.

    Without ``split`` on a folder with neither test/ nor val/, the validation (or test) part
    of the seeded split the model was trained with is scored when ``data`` is its training
    folder, and every image otherwise (see the module docstring). A manifest (a file, or the
    one in a folder without class folders; read with ``manifest``) is scored on its test rows,
    else its val rows: its own split column's, or the model's recorded seeded split's when it is
    the manifest the model was trained on; otherwise on every row.

    Returns:
        :func:`~graft.metrics.compute_metrics` (a multi-label model:
        :func:`~graft.metrics_multilabel.compute_multilabel_metrics` at its thresholds) plus
        ``scored`` (``split``, ``images`` and a ``description`` of what was scored),
        ``skipped``, ``paths``, ``probs`` and ``labels`` (a multi-label model: 0/1 rows).
    """
    warn = warn or (lambda _m: None)
    found = manifest_of(data, warn)
    if found is not None:
        records, skipped, scored = manifest_records(predictor, found, split, strict, warn, manifest)
    else:
        records, skipped, scored = _records(predictor, data, split, strict, warn)
    out, ok_paths, failed = predictor.predict_outputs([r.path for r in records])
    probs = out.probs
    if not ok_paths:
        raise DataError(
            f"{data}: none of the {len(records)} images to evaluate could be read; see the files listed above"
        )
    label_of = {str(r.path): r.label_set for r in records}
    if predictor.spec.multi_label:
        Y = np.zeros((len(ok_paths), len(predictor.classes)), np.int64)
        for i, p in enumerate(ok_paths):
            Y[i, list(label_of[p])] = 1
        m = compute_multilabel_metrics(Y, probs, predictor.classes, predictor.spec.thresholds)
        labels: list[Any] = Y.tolist()
    else:
        y = np.array([label_of[p][0] for p in ok_paths], dtype=np.int64)
        m = compute_metrics(y, probs, predictor.classes, top_k=top_k)
        labels = y.tolist()
    threshold = predictor.ood_threshold
    if out.ood is not None and threshold is not None:  # how often the model would answer "unknown" here
        m["unknown_rate"] = float((out.ood > threshold).mean())
    m["scored"] = {**scored, "images": len(ok_paths)}
    m["skipped"] = [s.to_dict() for s in list(skipped) + list(failed)]
    m["paths"] = ok_paths
    m["probs"] = probs.tolist()
    m["labels"] = labels
    return m


def _records(
    predictor: Predictor, data: str | os.PathLike, split: str | None, strict: bool, warn: Callable[[str], None]
) -> tuple[list[ImageRecord], list[SkippedFile], dict[str, str]]:
    """(records, skipped files, what they are) of the images to score."""
    root = Path(data).expanduser()
    folders = split_folders(root) if split is None and root.is_dir() else {}
    if split is None and root.is_dir() and "test" not in folders and "val" not in folders:
        held = _held_out(predictor.spec.split, root, predictor.classes, strict, warn)
        if held is not None:
            return held
    records, _classes, skipped = scan_split(data, split, predictor.classes, strict=strict, warn=warn)
    if split is not None or folders:
        name = split if split is not None else folders["test" if "test" in folders else "val"].name
        return records, skipped, {"split": name, "description": f"the {name!r} split folder of {data}"}
    why = (
        "it is not the folder this model was trained on (or that folder changed since), so graft cannot tell "
        "which images were held out"
        if predictor.spec.split
        else "the model does not record how its training folder was split (an older graft), so some may be "
        "training images"
    )
    return records, skipped, {"split": "all", "description": f"every image in {data}: {why}"}


def _held_out(
    recorded: Mapping[str, Any], root: Path, classes: list[str], strict: bool, warn: Callable[[str], None]
) -> tuple[list[ImageRecord], list[SkippedFile], dict[str, str]] | None:
    """The part of ``root`` held out when the model was trained on it; None when ``root`` is not that folder."""
    carved = recorded.get("carved")
    if not recorded.get("fingerprint") or not isinstance(carved, list) or not ({"val", "test"} & set(carved)):
        return None
    notes: list[str] = []  # a scan's warnings, passed on only if this scan is the one used
    try:
        seed, fractions = int(recorded["seed"]), {k: float(recorded[f"{k}_fraction"]) for k in ("val", "test")}
        vf, tf = fractions["val"], fractions["test"]
        ds = scan_dataset(root, val_fraction=vf, test_fraction=tf, seed=seed, strict=strict, warn=notes.append)
    except (DataError, KeyError, TypeError, ValueError):  # another folder, or a damaged record: not the same split
        return None
    if ds.classes != list(classes) or ds.fingerprint() != recorded["fingerprint"]:
        return None
    for note in notes:
        warn(note)
    part = "test" if "test" in carved and ds.splits.get("test") else "val"
    description = (
        f"the {part} split graft held out of {root} when this model was trained on it "
        f"(seed {seed}, {part}_fraction {fractions[part]:g})"
    )
    return ds.splits[part], ds.skipped, {"split": part, "description": description}
