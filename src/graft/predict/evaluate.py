"""Metrics of any :class:`Predictor` on a labelled folder: what ``graft evaluate`` prints."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from graft.data.scan import scan_split
from graft.exceptions import DataError
from graft.metrics import compute_metrics
from graft.predict.base import Predictor

__all__ = ["evaluate_predictor"]


def evaluate_predictor(
    predictor: Predictor,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    top_k: int = 5,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy, top-k, per-class figures and confusion matrix on ``test/`` if present, else val (or ``split``).

    Returns:
        :func:`~graft.metrics.compute_metrics` plus ``skipped``, ``paths``, ``probs`` and ``labels``.
    """
    records, _classes, skipped = scan_split(
        data, split, predictor.classes, strict=strict, warn=warn or (lambda _m: None)
    )
    out, ok_paths, failed = predictor.predict_outputs([r.path for r in records])
    probs = out.probs
    if not ok_paths:
        raise DataError(
            f"{data}: none of the {len(records)} images to evaluate could be read; see the files listed above"
        )
    label_of = {str(r.path): r.label for r in records}
    y = np.array([label_of[p] for p in ok_paths], dtype=np.int64)
    m = compute_metrics(y, probs, predictor.classes, top_k=top_k)
    threshold = predictor.ood_threshold
    if out.ood is not None and threshold is not None:  # how often the model would answer "unknown" here
        m["unknown_rate"] = float((out.ood > threshold).mean())
    m["skipped"] = [s.to_dict() for s in list(skipped) + list(failed)]
    m["paths"] = ok_paths
    m["probs"] = probs.tolist()
    m["labels"] = y.tolist()
    return m
