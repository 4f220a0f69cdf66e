"""Which features stage 1 uses: the final ones, or multi-depth (final + pooled last block stages).

Decided from the training data alone: the linear head is cross-validated on both column
sets of the same cached features (one embedding pass computes them all), and the
multi-depth set is used only where its best cross-validated accuracy beats the final
features' by at least :data:`MIN_GAIN`. Validation images are never looked at, so the
validation accuracy reported afterwards stays an honest estimate.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from graft.backbones.taps import tap_columns
from graft.training.head.options import FEATURE_MODES
from graft.validation import check_choice

__all__ = [
    "FEATURE_MODES",
    "MIN_GAIN",
    "FeatureChoice",
    "choose_features",
    "choose_features_by_cv",
    "column_view",
    "select_columns",
]

#: auto: choose by cross-validation; final: the backbone's own pooled features; multi: always multi-depth.

#: Cross-validated accuracy multi-depth must gain to be used (accuracy as a fraction). Half a
#: point: below that the difference is within the CV noise of a few hundred images, and the
#: final features are the smaller, better-known model.
MIN_GAIN = 0.005


@dataclass
class FeatureChoice:
    """The chosen taps (``()``: final features only) and the evidence behind the choice."""

    taps: tuple[int, ...]
    columns: list[int]
    cv_accuracy: dict[str, float]
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "taps": list(self.taps), "cv_accuracy": self.cv_accuracy}


def column_view(X: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """``X[:, columns]``: a view without a copy where ``columns`` is a range (the final features are)."""
    cols = [int(c) for c in columns]
    if cols and cols == list(range(cols[0], cols[0] + len(cols))):
        return X[:, cols[0] : cols[0] + len(cols)]
    return np.ascontiguousarray(X[:, cols])


def select_columns(split: Any, columns: Sequence[int]) -> Any:
    """A copy of a :class:`~graft.features.dataset.SplitFeatures` with only ``columns`` of its features (a view)."""
    if len(columns) == split.X.shape[1]:
        return split
    return dataclasses.replace(split, X=column_view(split.X, columns))


def choose_features(
    mode: str,
    head: str,
    taps: Sequence[int],
    widths: Sequence[int],
    cv_accuracy: Callable[[list[list[int]]], list[float]],
) -> FeatureChoice:
    """Choose the feature columns of features embedded with ``taps`` (widths from :func:`tap_widths`).

    Args:
        mode: ``auto``, ``final`` or ``multi`` (see :data:`FEATURE_MODES`).
        head: the head type; only the linear head is cross-validated, so ``auto`` means
            ``final`` for the others.
        cv_accuracy: best cross-validated accuracy of the head on each given set of training
            columns (all sets in one call, so they can be fitted side by side).
    """
    check_choice("features", mode, FEATURE_MODES, "Classifier")
    mode = "auto" if mode == "wide" else mode  # the backbone's own choice; the other members come after
    taps = tuple(int(t) for t in taps)
    final = tap_columns(widths, taps, ()) if taps else list(range(int(sum(widths))))
    if not taps or mode == "final" or (mode == "auto" and head != "linear"):
        return FeatureChoice((), final, {}, mode)
    multi = list(range(int(sum(widths))))
    if mode == "multi":
        return FeatureChoice(taps, multi, {}, mode)
    scores = dict(zip(("final", "multi"), cv_accuracy([final, multi])))
    if scores["multi"] >= scores["final"] + MIN_GAIN:
        return FeatureChoice(taps, multi, scores, mode)
    return FeatureChoice((), final, scores, mode)


def choose_features_by_cv(
    train: Any,
    taps: Sequence[int],
    widths: Sequence[int],
    mode: str,
    head: str,
    n_classes: int,
    *,
    class_weight: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[FeatureChoice, dict[tuple[int, ...], Any]]:
    """:func:`choose_features` with the linear head's CV on ``train`` (training features only); the fits made.

    The returned fits (keyed by column tuple) let the caller reuse the chosen set's fit as the head.
    Multi-label ``train.y`` (a 0/1 matrix): the per-label head's CV mean average precision is
    compared instead of accuracy (``class_weight``: per-label positive weights).
    """
    from graft.training.head.linear_probe import fit_linear_head, fits_on_one_thread, torch_threads

    fits: dict[tuple[int, ...], Any] = {}

    def fit(columns: list[int]) -> Any:
        if np.ndim(train.y) == 2:  # multi-label: the score compared is the CV mean AP
            from graft.training.head.multilabel import fit_multilabel_head

            return fit_multilabel_head(
                column_view(train.X, columns), train.y, pos_weight=class_weight, seed=seed, groups=train.groups
            )
        return fit_linear_head(
            column_view(train.X, columns), train.y, n_classes, class_weight=class_weight, seed=seed, groups=train.groups
        )

    def cv_accuracy(column_sets: list[list[int]]) -> list[float]:
        n = train.X.shape[0]
        widest = max(len(c) for c in column_sets)
        if len(column_sets) > 1 and fits_on_one_thread(n, widest):
            # Fits this small each run on one thread: side by side they use both cores of a
            # small CPU. The whole process stays at one torch thread until both are done, so
            # each fit computes exactly what it would alone.
            with torch_threads(1), ThreadPoolExecutor(len(column_sets)) as pool:
                done = list(pool.map(fit, column_sets))
        else:
            done = [fit(c) for c in column_sets]
        fits.update((tuple(c), f) for c, f in zip(column_sets, done))
        return [float(max(f.cv_scores.values())) if f.cv_scores else 0.0 for f in done]

    return choose_features(mode, head, taps, widths, cv_accuracy), fits
