"""The one shape of a prediction, shared by every predictor, the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from graft.data.records import SkippedFile

__all__ = ["Outputs", "label_sets", "prediction_rows", "sigmoid", "softmax", "top_k_results"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for accuracy, returned as float32."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (stable for large |logits|), returned as float32.

    A multi-label model's probabilities: one independent yes/no per label.
    """
    z = np.asarray(logits, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def label_sets(probs: np.ndarray, classes: Sequence[str], thresholds: Sequence[float]) -> list[list[dict[str, Any]]]:
    """A multi-label model's decisions: per row, ``{label, probability}`` of every label at or over
    its threshold, most probable first (an empty list when none is)."""
    t = np.asarray(thresholds, np.float64)
    out = []
    for p in probs:
        over = np.flatnonzero(p >= t)
        order = over[np.argsort(-p[over], kind="stable")]
        out.append([{"label": classes[int(i)], "probability": float(p[i])} for i in order])
    return out


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


@dataclass
class Outputs:
    """What a predictor gives for a batch: class probabilities and, where the model has one, OOD scores."""

    probs: np.ndarray  # (N, n_classes) float32
    ood: np.ndarray | None = None  # (N,) float32; higher is less like the training data

    @staticmethod
    def empty(n_classes: int, with_ood: bool) -> Outputs:
        return Outputs(np.zeros((0, n_classes), np.float32), np.zeros(0, np.float32) if with_ood else None)

    @staticmethod
    def concat(parts: Sequence[Outputs]) -> Outputs:
        oods = [p.ood for p in parts if p.ood is not None]
        ood = np.concatenate(oods) if oods and len(oods) == len(parts) else None
        return Outputs(np.concatenate([p.probs for p in parts]), ood)

    def packed(self) -> np.ndarray:
        """One (N, n_classes + 1) array (last column the OOD score, NaN without one): for the batcher."""
        ood = self.ood if self.ood is not None else np.full(len(self.probs), np.nan, np.float32)
        return np.concatenate([self.probs, ood[:, None].astype(self.probs.dtype)], 1)

    @staticmethod
    def unpack(rows: np.ndarray) -> Outputs:
        ood = rows[:, -1]
        return Outputs(rows[:, :-1], None if np.isnan(ood).all() else ood)


def prediction_rows(
    paths: Sequence[str],
    outputs: Outputs | np.ndarray,
    classes: Sequence[str],
    top_k: int,
    failed: Iterable[SkippedFile] = (),
    *,
    threshold: float | None = None,
    thresholds: Sequence[float] = (),
) -> list[dict[str, Any]]:
    """One dict per image: ``path`` plus :func:`top_k_results`; unreadable files get ``error``.

    With OOD scores, each row also gets ``ood_score`` and ``known``; an image scoring above
    ``threshold`` is labelled ``"unknown"`` and keeps its best class in ``best_label`` (and
    ``probability``, ``top_k``), so nothing is hidden from a caller who wants it.
    With per-label ``thresholds`` (a multi-label model, sigmoid ``outputs``), each row also
    gets ``labels`` (:func:`label_sets`); an unknown image's is empty.
    """
    out = outputs if isinstance(outputs, Outputs) else Outputs(outputs)
    sets = label_sets(out.probs, classes, thresholds) if len(thresholds) else None
    rows: list[dict[str, Any]] = []
    for i, (p, r) in enumerate(zip(paths, top_k_results(out.probs, classes, top_k))):
        row = {"path": p, **r}
        if sets is not None:
            row["labels"] = sets[i]
        if out.ood is not None:
            score = float(out.ood[i])
            known = threshold is None or score <= threshold
            row.update(ood_score=score, known=known)
            if not known:
                row["best_label"], row["label"] = row["label"], "unknown"
                if sets is not None:
                    row["labels"] = []
        rows.append(row)
    rows.extend({"path": f.path, "error": f.reason} for f in failed)
    return rows
