"""Features for a list of records: from the cache where present, embedded otherwise."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.config import graft_home
from graft.data.records import SkippedFile
from graft.features.cache import FeatureCache, embedder_key, file_key
from graft.features.embedder import Embedder
from graft.features.fingerprint import FEATURE_PIPELINE_VERSION, fingerprint
from graft.features.options import EmbedOptions
from graft.features.sharded import embed_shards, fill_cache_shards
from graft.transforms.eval import Preprocessing

__all__ = [
    "FeatureSet",
    "FeatureRequest",
    "EmbedJob",
    "extract_features",
    "model_features",
    "bind_model_features",
    "feature_dim",
]


class FeatureSet:
    """Features of the records that decoded, with the positions they came from.

    Attributes:
        X: (n_ok, dim) float32.
        ok: positions into the input list whose image decoded.
        failed: the files that did not decode, with reasons.
        n_embedded: how many were embedded now (the rest came from the cache).
    """

    def __init__(self, X: np.ndarray, ok: np.ndarray, failed: list[SkippedFile], n_embedded: int) -> None:
        self.X, self.ok, self.failed, self.n_embedded = X, ok, failed, n_embedded


@dataclass(frozen=True)
class FeatureRequest:
    """Which features of each image (all but ``transform`` and ``mirror_view`` key the cache).

    Attributes:
        spatial: the flattened feature map instead of pooled features.
        taps: block stages whose pooled outputs precede the final features (:mod:`graft.backbones.taps`).
        view: augmentation view (0 = plain eval preprocessing).
        seed: seed of the augmented views.
        transform: PIL -> array transform for this view.
        mirror_view: with view 0 and the cache: also cache this view (the mirror image,
            view 1) from the same decoded crops, so that embedding it next decodes nothing.
    """

    spatial: bool = False
    taps: Sequence[int] = ()
    view: int = 0
    seed: int = 0
    transform: Callable | None = None
    mirror_view: int | None = None


@dataclass(frozen=True)
class EmbedJob:
    """The job a call is part of.

    Attributes:
        shard: in a job of several processes, each embeds its share and every process
            gets all the features (every process must call with the same paths;
            see :mod:`graft.features.sharded`).
        expected_images: the whole job's images where this call is one part of it
            (default: the call's paths).
    """

    shard: bool = False
    expected_images: int | None = None


def extract_features(
    paths: Sequence[str | os.PathLike],
    embedder: Embedder,
    spec: Mapping[str, Any],
    *,
    what: FeatureRequest = FeatureRequest(),
    options: EmbedOptions = EmbedOptions(),
    progress: Callable[[int], None] | None = None,
    job: EmbedJob = EmbedJob(),
) -> FeatureSet:
    """Embed ``paths`` with ``embedder``, reusing and filling the on-disk cache.

    Args:
        paths: image files.
        embedder: the runtime that embeds missing files.
        spec: JSON-ready description of the embedder (architecture, weights hash,
            preprocessing, precision, feature kind); hashed into the cache key.
        what: the view, its seed and transform, and the mirror view to cache alongside.
        options: only the feature cache: ``cache_dir`` (default ``$GRAFT_HOME/features``)
            and ``use_cache`` (False embeds everything and writes nothing).
        progress: called with the number of images done (cached ones count at once).
        job: ``shard``: each process of a job embeds its share (see :class:`EmbedJob`).
    """
    names: list[str] = [str(p) for p in paths]
    n = len(names)
    sharded = job.shard and distributed.is_distributed()
    if not options.use_cache:
        return _embed_uncached(names, embedder, what.transform, progress, sharded)

    keys, failed = _file_keys(names, what.view, what.seed)
    root = _cache_root(options.cache_dir) / embedder_key(spec)
    cache = FeatureCache(root, int(spec.get("dim", 0)), meta=dict(spec))
    cache.verify(keys)  # entries whose rows do not match are embedded again
    mirror = None
    if what.view == 0 and what.transform is None and not sharded:
        mirror = _mirror_keys(names, keys, what.mirror_view, what.seed, cache)
    # Embed what either view lacks, in one pass (without a mirror: what view 0 lacks).
    todo = [i for i, k in enumerate(keys) if k is not None and (k not in cache or (mirror and mirror[i]))]
    if sharded:  # rank 0's view of what is missing, so the shares cover it exactly
        todo = distributed.broadcast_object(todo)
    if progress is not None and n - len(todo) - len(failed) > 0:
        progress(n - len(todo) - len(failed))

    failed_pos: set[int] = {i for i, k in enumerate(keys) if k is None}
    if sharded:
        merged = fill_cache_shards(names, todo, keys, cache, embedder, transform=what.transform, progress=progress)
        failed.extend(f for _, f in merged)
        failed_pos.update(i for i, _ in merged)
    elif todo:
        bad = _embed_into_cache(names, todo, (keys, mirror), cache, embedder, what.transform, progress)
        failed.extend(bad)
        bad_paths = {f.path for f in bad}
        failed_pos.update(i for i in todo if names[i] in bad_paths)

    ok = np.array([i for i in range(n) if i not in failed_pos], dtype=np.int64)
    X = cache.get([keys[i] for i in ok])
    return FeatureSet(X, ok, failed, len(todo))


def _embed_uncached(
    paths: list[str],
    embedder: Embedder,
    transform: Callable | None,
    progress: Callable[[int], None] | None,
    sharded: bool,
) -> FeatureSet:
    """Every file embedded now, nothing read from or written to the cache."""
    if sharded:
        return FeatureSet(*embed_shards(paths, embedder, transform=transform, progress=progress))
    res = embedder.embed_paths(paths, transform=transform, progress=progress)
    return FeatureSet(res.features, res.ok_indices, res.failed, len(res.ok_indices))


def _file_keys(paths: Sequence[str], view: int, seed: int) -> tuple[list[str | None], list[SkippedFile]]:
    """Cache keys of ``paths`` (None for a file that vanished since the scan, reported like any unreadable one)."""
    keys: list[str | None] = []
    failed: list[SkippedFile] = []
    for p in paths:
        try:
            keys.append(file_key(p, view, seed))
        except OSError as e:
            keys.append(None)
            failed.append(SkippedFile(str(p), f"could not be read: {e.strerror or e}"))
    return keys, failed


def _embed_into_cache(
    paths: Sequence[str],
    todo: list[int],
    keys: tuple[list[str | None], list[str | None] | None],
    cache: FeatureCache,
    embedder: Embedder,
    transform: Callable | None,
    progress: Callable[[int], None] | None,
) -> list[SkippedFile]:
    """Embed ``paths[todo]`` once, writing the rows each view lacks (view keys, mirror keys or None); the failures."""
    view_keys, mirror = keys

    def write(ids: np.ndarray, feats: np.ndarray, into: list[str | None] = view_keys) -> None:
        new = [j for j, i in enumerate(ids) if into[todo[i]] is not None and into[todo[i]] not in cache]
        if new:
            cache.add([str(into[todo[ids[j]]]) for j in new], feats[new])

    on_mirror = None if mirror is None else (lambda ids, feats: write(ids, feats, into=mirror))
    res = embedder.embed_paths(
        [paths[i] for i in todo], transform=transform, progress=progress, on_batch=write, on_mirror=on_mirror
    )
    return list(res.failed)


def _mirror_keys(
    paths: Sequence[str], keys: list[str | None], mirror_view: int | None, seed: int, cache: FeatureCache
) -> list[str | None] | None:
    """Cache keys of the mirror view still missing (None where cached or unreadable); None: nothing to add."""
    if mirror_view is None:
        return None
    out = [file_key(p, mirror_view, seed) if k is not None else None for p, k in zip(paths, keys)]
    cache.verify(out)
    out = [k if k is not None and k not in cache else None for k in out]
    return out if any(k is not None for k in out) else None


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else graft_home() / "features"


def model_features(
    backbone: nn.Module,
    preprocessing: Preprocessing,
    paths: Sequence[str],
    *,
    what: FeatureRequest = FeatureRequest(),
    options: EmbedOptions,
    progress: Callable[[int], None] | None = None,
    job: EmbedJob = EmbedJob(),
) -> FeatureSet:
    """Backbone features of image files, through the on-disk cache keyed by the weights' fingerprint.

    ``what``: which features of each image (:class:`FeatureRequest`).
    ``options``: where and how the backbone runs (``device`` already resolved) and the feature cache.
    ``job``: sharding over the processes of a job, and the job's size (:class:`EmbedJob`).
    """
    n_images = len(paths) if job.expected_images is None else job.expected_images
    emb = Embedder(backbone, preprocessing, options, spatial=what.spatial, taps=what.taps, expected_images=n_images)
    if job.shard:  # one precision for all ranks (an auto choice is measured per process): one cache key
        emb.precision = distributed.broadcast_object(emb.precision)
    spec = _cache_spec(backbone, preprocessing, emb.precision, what)
    try:
        return extract_features(paths, emb, spec, what=what, options=options, progress=progress, job=job)
    finally:
        emb.close()  # free the runtime session now, not whenever the garbage collector runs


def bind_model_features(
    backbone: nn.Module,
    preprocessing: Preprocessing,
    *,
    what: FeatureRequest = FeatureRequest(),
    options: EmbedOptions,
    job: EmbedJob = EmbedJob(),
) -> Callable[..., FeatureSet]:
    """:func:`model_features` with the backbone and its settings bound (``what`` gives spatial, taps and seed).

    The function returned takes ``(paths, *, view=0, transform=None, mirror_view=None, progress=None)``,
    the per-pass part of the request (:data:`graft.features.dataset.EmbedFn`).
    """

    def embed(
        paths: Sequence[str],
        *,
        view: int = 0,
        transform: Callable | None = None,
        mirror_view: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> FeatureSet:
        this = dataclasses.replace(what, view=view, transform=transform, mirror_view=mirror_view)
        return model_features(backbone, preprocessing, paths, what=this, options=options, progress=progress, job=job)

    return embed


def _cache_spec(
    backbone: nn.Module, preprocessing: Preprocessing, precision: str, what: FeatureRequest
) -> dict[str, Any]:
    """What the feature cache keys on: the weights, preprocessing, precision, pipeline and feature kind."""
    spec: dict[str, Any] = {
        "backbone": fingerprint(backbone),
        "preprocessing": preprocessing.to_dict(),
        "precision": precision,
        "pipeline": FEATURE_PIPELINE_VERSION,
        "spatial": what.spatial,
        "dim": feature_dim(backbone, preprocessing, what.spatial, what.taps),
    }
    if what.taps:  # only where used: plain features keep their existing cache entries
        spec["taps"] = [int(t) for t in what.taps]
    return spec


def feature_dim(module: nn.Module, pre: Preprocessing, spatial: bool, taps: Sequence[int] = ()) -> int:
    """Width of the features ``module`` gives (pooled, multi-depth, or the flattened feature map)."""
    backbone: Any = module  # a timm model: num_features, forward_features
    if taps and not spatial:
        from graft.backbones.taps import tap_widths

        return sum(tap_widths(backbone, taps))
    if not spatial and getattr(backbone, "num_features", None) and getattr(backbone, "num_classes", 1) == 0:
        hidden = getattr(backbone, "head_hidden_size", None)
        return int(hidden or backbone.num_features)
    with torch.inference_mode():
        x = torch.zeros(1, 3, *pre.input_size)
        dev = next(backbone.parameters()).device
        out = backbone.forward_features(x.to(dev)).flatten(1) if spatial else backbone(x.to(dev))
    return int(out.shape[1])
