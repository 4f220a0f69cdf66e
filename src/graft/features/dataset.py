"""Embedding a dataset: scan the splits, load the frozen backbone, embed train (with views) and val.

What ``graft train``, ``graft embed``, ``graft doctor`` and ``graft curve`` share before any
fitting: every image goes through the feature cache once per view. Fitting lives in
:mod:`graft.training`; this module never imports it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from graft import distributed
from graft.backbones.options import BackboneOptions
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.records import ImageRecord, SkippedFile
from graft.exceptions import DataError
from graft.features.engines import reuse_engines
from graft.features.extract import FeatureSet
from graft.features.options import EmbedOptions
from graft.heap import malloc_trim
from graft.progress import NullProgress, Progress
from graft.transforms.eval import Preprocessing

__all__ = [
    "SplitFeatures",
    "EmbeddedData",
    "EmbedFn",
    "scan_splits",
    "embed_dataset",
    "load_backbone",
    "embed_split",
    "multi_hot",
]

#: ``embed(paths, view=..., transform=..., progress=...) -> FeatureSet``: the backbone and its settings, bound.
EmbedFn = Callable[..., FeatureSet]


@dataclass
class SplitFeatures:
    """Features of one split: rows of every view, their labels and source-image ids.

    Attributes:
        X, y, groups: stacked rows of all views; ``groups`` indexes ``records``.
        paths: the images that decoded, in order (view 0).
        failed: images that did not decode at full decode (found only now, e.g. truncated data).
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    paths: list[str]
    failed: list[SkippedFile] = field(default_factory=list)


def multi_hot(records: Sequence[ImageRecord], n_labels: int) -> np.ndarray:
    """(images, labels) float32 0/1 matrix of the records' label sets."""
    Y = np.zeros((len(records), n_labels), np.float32)
    for i, r in enumerate(records):
        Y[i, list(r.label_set)] = 1.0
    return Y


def embed_split(
    records: Sequence[ImageRecord],
    embed: EmbedFn,
    *,
    name: str,
    views: int = 0,
    view_transform: Callable[[int], Callable | None] = lambda _v: None,
    strict: bool = False,
    progress: Progress | None = None,
    n_labels: int = 0,
) -> SplitFeatures:
    """Embed ``records`` (view 0, plus ``views`` augmented views) through the feature cache.

    ``n_labels``: for multi-label records, the number of labels: ``y`` is then a 0/1 matrix
    (images, labels) instead of class indices.
    """
    prog = progress or NullProgress()
    paths = [str(r.path) for r in records]
    labels = multi_hot(records, n_labels) if n_labels else np.array([r.label for r in records], dtype=np.int64)
    Xs, ys, gs = [], [], []
    bad: set[str] = set()
    failed: list[SkippedFile] = []
    for view in range(views + 1):
        task = prog.task(f"embedding {name}" + (f" (view {view})" if view else ""), total=len(paths))
        # View 1 is the mirror image: view 0's pass caches it from the same decoded crops.
        mirror = {"mirror_view": 1} if view == 0 and views >= 1 else {}
        fs = embed(paths, view=view, transform=view_transform(view), progress=task.advance, **mirror)
        task.close()
        if view == 0:
            failed = list(fs.failed)
            bad = {f.path for f in failed}
            if failed and strict:
                raise DataError(
                    f"{failed[0].path}: {failed[0].reason} ({len(failed)} unreadable images in {name}); "
                    "remove or fix them, or drop --strict to skip them"
                )
        keep = np.array([paths[i] not in bad for i in fs.ok], dtype=bool)
        Xs.append(fs.X if keep.all() else fs.X[keep])  # no copy of the largest array in a run
        ys.append(labels[fs.ok[keep]])
        gs.append(fs.ok[keep])
    X = Xs[0] if len(Xs) == 1 else np.concatenate(Xs)
    return SplitFeatures(X, np.concatenate(ys), np.concatenate(gs), [paths[i] for i in gs[0]], failed)


def scan_splits(
    data: str | os.PathLike,
    split: SplitOptions | None = None,
    manifest: ManifestOptions | None = None,
    *,
    strict: bool = False,
    max_pixels: int | None = None,
    progress: Progress | None = None,
) -> Any:
    """Scan a dataset folder or a manifest into splits, with a progress bar (:func:`graft.data.source.scan_labelled`)."""
    from graft.data.source import scan_labelled

    prog = progress or NullProgress()
    pixels = {"max_pixels": max_pixels} if max_pixels else {}
    task = prog.task("scanning images")
    try:
        return scan_labelled(data, split, manifest, strict=strict, progress=task.advance, warn=prog.warn, **pixels)
    finally:
        task.close()


@dataclass
class EmbeddedData:
    """Result of :func:`embed_dataset`: the frozen backbone, its preprocessing and the features of train and val."""

    backbone: Any  # graft.backbones.Backbone
    data: Any  # a copy of the splits, files that failed at full decode moved to ``skipped``
    preprocessing: Preprocessing
    backbone_info: dict[str, Any]
    augment_views: int
    train: SplitFeatures
    val: SplitFeatures
    timings: dict[str, float]
    taps: tuple[int, ...] = ()  # block stages embedded besides the final features
    widths: list[int] = field(default_factory=list)  # their pooled widths, then the final width


def load_backbone(splits: Any, options: BackboneOptions) -> tuple[Any, Preprocessing, dict[str, Any]]:
    """The pretrained backbone, the embedding preprocessing chosen for ``splits``' training images, and its info."""
    from graft.backbones import create_backbone, feature_preprocessing

    bb = create_backbone(options.backbone, weights=options.weights)
    sides = [min(r.width, r.height) for r in splits.splits["train"] if r.width and r.height]
    pre = feature_preprocessing(
        bb.model,
        bb.preprocessing,
        options.input_size,
        options.crop_pct,
        image_short_side=float(np.median(sides)) if sides else None,
    )
    info = {**bb.to_dict(), "preprocessing": pre.to_dict(), "native_preprocessing": bb.preprocessing.to_dict()}
    return bb, pre, info


def embed_dataset(
    splits: Any,
    backbone: BackboneOptions,
    *,
    spatial: bool = False,
    multi_depth: bool = False,
    augment_views: int | str = "auto",
    seed: int = 0,
    embed: EmbedOptions | None = None,
    progress: Progress | None = None,
) -> EmbeddedData:
    """Load the pretrained backbone, choose the embedding preprocessing, embed train (with views) and val.

    Args:
        splits: the scanned :class:`~graft.data.records.DatasetSplits` (read only).
        multi_depth: also embed the pooled outputs of the last block stages (``taps``), where
            the backbone has them; features are then ``[taps..., final]`` (:mod:`graft.backbones.taps`).
        embed: device (resolved), precision, batch size, workers, cache, pixel limit, strictness.
    """
    from graft.backbones.taps import candidate_taps, tap_widths
    from graft.features.extract import EmbedJob, FeatureRequest, bind_model_features
    from graft.transforms.train import build_feature_view_transform, resolve_augment_views

    opts = embed or EmbedOptions()
    t0 = time.perf_counter()
    bb, pre, info = load_backbone(splits, backbone)
    timings = {"load_backbone": time.perf_counter() - t0}
    t0 = time.perf_counter()
    views = resolve_augment_views(augment_views, len(splits.splits["train"]))
    taps = candidate_taps(bb.model) if multi_depth and not spatial else ()
    widths = tap_widths(bb.model, taps) if taps else []
    n_train, n_val = len(splits.splits["train"]), len(splits.splits["val"])
    embed_fn = bind_model_features(
        bb.model,
        pre,
        what=FeatureRequest(spatial=spatial, taps=taps, seed=seed),
        options=opts,
        # in a job of several processes each embeds its share
        job=EmbedJob(shard=distributed.is_distributed(), expected_images=n_train * (views + 1) + n_val),
    )

    def view_transform(view: int) -> Callable | None:
        return None if view == 0 else build_feature_view_transform(pre, view, seed)

    kw: dict[str, Any] = dict(embed=embed_fn, view_transform=view_transform, strict=opts.strict, progress=progress)
    kw["n_labels"] = len(splits.classes) if getattr(splits, "multi_label", False) else 0
    with reuse_engines():  # one runtime session for train, its views and val
        train = embed_split(splits.splits["train"], name="train", views=views, **kw)
        val = embed_split(splits.splits["val"], name="val", **kw)
    malloc_trim()
    timings["embed"] = time.perf_counter() - t0
    failed = train.failed + val.failed
    bad = {f.path for f in failed}
    kept = {name: [r for r in recs if str(r.path) not in bad] for name, recs in splits.splits.items()}
    data = dataclasses.replace(splits, splits=kept, skipped=list(splits.skipped) + failed)
    return EmbeddedData(bb, data, pre, info, views, train, val, timings, taps, widths)
