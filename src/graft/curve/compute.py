"""Learning curve: validation accuracy against training images per class, from cached features.

Answers "will labelling more images help?" before anyone labels them. The dataset is
embedded once (graft's stage-1 embedding, through the on-disk feature cache, no
augmented views); then graft's default linear head is refitted on nested per-class
subsamples for several seeds. Each fit is a logistic regression on cached features,
so no image is decoded twice and a warm curve costs only the head fits.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graft.backbones.options import BackboneOptions
from graft.curve.multilabel import multilabel_curve
from graft.curve.points import (
    CURVE_JSON,
    CURVE_PNG,
    FEW_SHOT_C,
    HELPS_POINTS_PER_DOUBLING,
    LearningCurve,
    default_sizes,
    slope_per_doubling,
    verdict,
)
from graft.data.options import ManifestOptions, SplitOptions
from graft.exceptions import DataError
from graft.features.options import EmbedOptions
from graft.progress import NullProgress, Progress
from graft.validation import Interval, check_param, invalid_parameter

__all__ = [
    "CURVE_JSON",
    "CURVE_PNG",
    "CurveOptions",
    "FEW_SHOT_C",
    "HELPS_POINTS_PER_DOUBLING",
    "LearningCurve",
    "curve_from_features",
    "default_sizes",
    "learning_curve",
    "slope_per_doubling",
    "verdict",
]

_OWNER = "learning_curve"


def _subsample(y: np.ndarray, per_class: int, rng_seed: int) -> np.ndarray:
    """Sorted rows: the first ``per_class`` of each class in a seeded shuffle (nested across sizes)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rows.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(rows))


def _accuracy(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    seed: int,
    C: float | None = None,
) -> tuple[float, float]:
    """(validation accuracy, C) of the default linear head fitted on (X, y): C given, by CV, or FEW_SHOT_C."""
    from graft.training.head.linear_probe import fit_linear_head

    counts = np.bincount(y, minlength=n_classes)
    if C is None and counts[counts > 0].min() < 2:  # CV needs two images of each class
        C = FEW_SHOT_C
    fit = fit_linear_head(X, y, n_classes, C=C, seed=seed)
    return float((fit.logits(X_val).argmax(1) == y_val).mean()), float(fit.C)


def _fit_all(
    subsets: list[tuple[np.ndarray, int]],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    jobs: int,
    task: Any,
) -> list[float]:
    """Validation accuracy of one head fit per (rows, seed), ``jobs`` fits side by side.

    CV chooses C once per size, on its first subsample, and the other seeds reuse it (C still
    comes from training rows only; sign_digits: 130 s -> 74 s). Each fit runs on one torch
    thread while ``jobs`` Python threads run them at once (torch releases the GIL).
    """
    import torch

    X, y, X_val, y_val = data
    sizes = [len(rows) for rows, _ in subsets]
    first = {n: i for i, n in reversed(list(enumerate(sizes)))}  # size -> index of its first subsample
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed for every fit: results do not depend on ``jobs``
    pool = ThreadPoolExecutor(max(1, min(jobs, len(subsets))))

    def run(indices: list[int], C_of: dict[int, float]) -> dict[int, tuple[float, float]]:
        order = sorted(indices, key=lambda i: -sizes[i])  # largest fits first
        futures = {
            i: pool.submit(
                _accuracy,
                X[subsets[i][0]],
                y[subsets[i][0]],
                X_val,
                y_val,
                n_classes,
                subsets[i][1],
                C_of.get(sizes[i]),
            )
            for i in order
        }
        for _ in as_completed(futures.values()):
            task.advance()
        return {i: f.result() for i, f in futures.items()}

    try:
        done = run(sorted(first.values()), {})
        done.update(run([i for i in range(len(subsets)) if i not in done], {n: done[i][1] for n, i in first.items()}))
        return [done[i][0] for i in range(len(subsets))]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: queued fits are dropped, running ones end
        torch.set_num_threads(old)


def curve_from_features(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    *,
    sizes: Sequence[int] | None = None,
    seeds: int = 5,
    seed: int = 0,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> LearningCurve:
    """The curve on features already embedded (``train``, ``val``: features and labels): per size, ``seeds``
    subsamples, one head fit each.

    Seed ``seed + i`` draws the subsamples (nested: a seed's images at a size include its
    images at every smaller size) and the head's CV folds. At the full size all seeds
    draw the same rows, in order, so that point is exactly a plain fit on all of them.
    ``jobs``: fits run at once (default: the CPU count); the numbers do not depend on it.
    Multi-label labels (a 0/1 matrix) give a curve of validation mAP (:mod:`graft.curve.multilabel`).
    """
    if np.ndim(train[1]) == 2:
        return multilabel_curve(train, val, sizes=sizes, seeds=seeds, seed=seed, progress=progress)
    X, y = train[0], np.asarray(train[1], np.int64)
    X_val, y_val = val[0], np.asarray(val[1], np.int64)
    largest = int(np.bincount(y).max()) if len(y) else 0
    if largest == 0 or len(y_val) == 0:
        raise DataError("a learning curve needs training and validation images; found none in one of them")
    asked = default_sizes(largest) if sizes is None else [*sizes, largest]  # the full size is always measured
    ks = sorted({min(int(k), largest) for k in asked})
    plan = [(k, seed + i) for k in ks for i in range(1 if k >= largest else seeds)]
    subsets = [(_subsample(y, k, s), s) for k, s in plan]
    task = (progress or NullProgress()).task("fitting heads", total=len(plan))
    accs = _fit_all(subsets, (X, y, X_val, y_val), n_classes, jobs or os.cpu_count() or 1, task)
    task.close()
    per_seed = [[a for (k, _), a in zip(plan, accs) if k == size] for size in ks]
    n_images = [next(len(r) for (k, _), (r, _) in zip(plan, subsets) if k == size) for size in ks]
    mean = [float(np.mean(a)) for a in per_seed]
    std = [float(np.std(a, ddof=1)) if len(a) > 1 else 0.0 for a in per_seed]
    slope, span = slope_per_doubling(n_images, mean)
    return LearningCurve(ks, n_images, mean, std, per_seed, n_classes, len(y_val), slope, span, verdict(slope, span))


def _check_params(seeds: Any, sizes: Any, val_fraction: Any) -> None:
    check_param("seeds", seeds, _OWNER, Interval(1, integer=True))
    check_param("val_fraction", val_fraction, _OWNER, Interval(0, 1, closed="neither"))
    if sizes is not None:
        bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
        if bad or not len(sizes):
            raise invalid_parameter("sizes", _OWNER, "a non-empty list of ints >= 1 (images per class)", sizes)


def _embedded(
    data_dir: str | os.PathLike,
    backbone: BackboneOptions,
    source: tuple[SplitOptions, ManifestOptions],
    opts: EmbedOptions,
    prog: Progress,
) -> tuple[Any, Any]:
    """The scanned splits and their view-0 features, as ``graft train`` embeds them (cached)."""
    from graft.config import resolve_device
    from graft.features.dataset import embed_dataset, scan_splits

    split, manifest = source
    splits = scan_splits(data_dir, split, manifest, progress=prog)
    emb = embed_dataset(
        splits,
        backbone,
        augment_views=0,
        seed=split.seed,
        embed=dataclasses.replace(opts, device=resolve_device(opts.device)),
        progress=prog,
    )
    return splits, emb


@dataclass(frozen=True)
class CurveOptions:
    """Which points a learning curve measures, and how many head fits run at once.

    Attributes:
        seeds: subsamples per size (one at the full size, where all are the same).
        sizes: training images per class to try (None: :func:`default_sizes`); sizes
            above the largest class are clipped to it, which is always measured.
        jobs: head fits run at once (None: the CPU count).
    """

    seeds: int = 5
    sizes: Sequence[int] | None = None
    jobs: int | None = None


def learning_curve(
    data_dir: str | os.PathLike,
    *,
    backbone: BackboneOptions | None = None,
    split: SplitOptions | None = None,
    embed: EmbedOptions | None = None,
    manifest: ManifestOptions | None = None,
    curve: CurveOptions | None = None,
    progress: Progress | None = None,
) -> LearningCurve:
    """Validation accuracy against training images per class, for ``graft train``'s defaults.

    Scans ``data_dir`` as ``graft train`` does (same split options: the same validation
    split), embeds it once through the feature cache, and refits the linear head on
    subsamples (see :func:`curve_from_features`).

    Args:
        backbone / split / embed / manifest: as for :class:`graft.Classifier` (its options objects).
        curve: the sizes, seeds and parallel fits (:class:`CurveOptions`).
    """
    split = split or SplitOptions()
    points = curve or CurveOptions()
    _check_params(points.seeds, points.sizes, split.val_fraction)
    check_param("jobs", points.jobs, _OWNER, Interval(1, integer=True), None)
    prog = progress or NullProgress()
    t0 = time.perf_counter()
    source = (split, manifest or ManifestOptions())
    splits, emb = _embedded(data_dir, backbone or BackboneOptions(), source, embed or EmbedOptions(), prog)
    t1 = time.perf_counter()
    result = curve_from_features(
        (emb.train.X, emb.train.y),
        (emb.val.X, emb.val.y),
        len(splits.classes),
        sizes=points.sizes,
        seeds=points.seeds,
        seed=split.seed,
        jobs=points.jobs,
        progress=prog,
    )
    seconds = {"scan_and_embed": t1 - t0, "fits": time.perf_counter() - t1}
    return dataclasses.replace(
        result,
        classes=list(splits.classes),
        backbone=(backbone or BackboneOptions()).backbone,
        data_dir=str(Path(data_dir).resolve()),
        split={"val_fraction": split.val_fraction, "seed": split.seed},
        seconds=seconds,
    )
