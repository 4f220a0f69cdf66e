"""The one shape of a prediction, shared by every predictor, the CLI and the server."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from graft.data.records import SkippedFile

__all__ = ["softmax", "top_k_results", "prediction_rows"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for accuracy, returned as float32."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def top_k_results(probs: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """``{label, probability, top_k: [{label, probability}, ...]}`` per row of ``probs``."""
    k = max(1, min(int(top_k), len(classes)))
    out = []
    for p in probs:
        order = np.argsort(-p, kind="stable")[:k]
        out.append(
            {
                "label": classes[int(order[0])],
                "probability": float(p[order[0]]),
                "top_k": [{"label": classes[int(i)], "probability": float(p[i])} for i in order],
            }
        )
    return out


def prediction_rows(
    paths: Sequence[str], probs: np.ndarray, classes: Sequence[str], top_k: int, failed: Iterable[SkippedFile] = ()
) -> list[dict[str, Any]]:
    """One dict per image: ``path`` plus :func:`top_k_results`; unreadable files get ``error``."""
    rows: list[dict[str, Any]] = [{"path": p, **r} for p, r in zip(paths, top_k_results(probs, classes, top_k))]
    rows.extend({"path": f.path, "error": f.reason} for f in failed)
    return rows
