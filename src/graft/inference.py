"""Running a network over image files: features for training, probabilities for use.

Both go through :class:`~graft.features.runtime.Embedder` (batched, decoding in
worker processes, per-machine precision). Features of a frozen backbone are cached
on disk keyed by a fingerprint of its weights, so evaluating or predicting with a
stage-1 model reuses what training already embedded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .data.records import SkippedFile
from .features import Embedder, FeatureSet, extract_features
from .features.runtime import choose_precision
from .preprocess import Preprocessing

__all__ = ["fingerprint", "model_features", "predict_probs", "Probabilities"]

_FP_CACHE: dict[int, tuple[int, str]] = {}

#: Bumped whenever decoding, cropping or the augmented views change what a feature
#: means, so caches written by older versions are never read as current ones.
FEATURE_PIPELINE_VERSION = 2


def fingerprint(module: nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, bytes).

    Cheap enough to compute per run (tens of ms for EfficientNet-Lite0), and exact:
    any change of weights gives a new feature-cache key.
    """
    version = sum(int(p._version) for p in module.parameters())  # bumps on in-place updates
    hit = _FP_CACHE.get(id(module))
    if hit is not None and hit[0] == version:
        return hit[1]
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    _FP_CACHE[id(module)] = (version, digest)
    return digest


def model_features(
    backbone: nn.Module,
    preprocessing: Preprocessing,
    paths: Sequence[str],
    *,
    spatial: bool = False,
    view: int = 0,
    seed: int = 0,
    transform: Callable | None = None,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
) -> FeatureSet:
    """Backbone features of image files, through the on-disk cache."""
    emb = Embedder(
        backbone, preprocessing, device=device, precision=precision, batch_size=batch_size,
        num_workers=num_workers, spatial=spatial, max_pixels=max_pixels,
    )
    dim = _feature_dim(backbone, preprocessing, spatial)
    spec: dict[str, Any] = {
        "backbone": fingerprint(backbone),
        "preprocessing": preprocessing.to_dict(),
        "precision": emb.precision,
        "pipeline": FEATURE_PIPELINE_VERSION,
        "spatial": spatial,
        "dim": dim,
    }
    return extract_features(
        paths, emb, spec, view=view, seed=seed, transform=transform, cache_dir=cache_dir,
        use_cache=use_cache, progress=progress,
    )


def _feature_dim(backbone: nn.Module, pre: Preprocessing, spatial: bool) -> int:
    if not spatial and getattr(backbone, "num_features", None) and getattr(backbone, "num_classes", 1) == 0:
        hidden = getattr(backbone, "head_hidden_size", None)
        return int(hidden or backbone.num_features)
    with torch.inference_mode():
        x = torch.zeros(1, 3, *pre.input_size)
        dev = next(backbone.parameters()).device
        out = backbone.forward_features(x.to(dev)).flatten(1) if spatial else backbone(x.to(dev))
    return int(out.shape[1])


@dataclass
class Probabilities:
    """Output of :func:`predict_probs`."""

    probs: np.ndarray  # (n_ok, n_classes)
    paths: list[str]  # readable inputs, in input order
    failed: list[SkippedFile]


def predict_probs(
    net: nn.Module,
    preprocessing: Preprocessing,
    paths: Sequence[str],
    *,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    fingerprint_spec: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> Probabilities:
    """Softmax probabilities of ``net`` (a :class:`~graft.heads.GraftNet`) for image files.

    With ``fingerprint_spec`` (a frozen, stage-1 backbone) features come through the
    cache and only the head runs; otherwise the whole network runs on every image.
    """
    paths = [str(p) for p in paths]
    if not paths:
        return Probabilities(np.zeros((0, 0), np.float32), [], [])
    if fingerprint_spec is not None:
        fs = model_features(
            net.backbone, preprocessing, paths, spatial=bool(getattr(net, "spatial", False)),
            device=device, precision=precision, batch_size=batch_size, num_workers=num_workers,
            cache_dir=cache_dir, progress=progress,
        )
        with torch.inference_mode():
            head = net.head.to("cpu").eval()
            logits = head(torch.from_numpy(fs.X)).float()
        net.head.to(device)
        return Probabilities(torch.softmax(logits, 1).numpy(), [paths[i] for i in fs.ok], fs.failed)
    emb = Embedder(
        net, preprocessing, device=device, precision=choose_precision(precision, device),
        batch_size=batch_size, num_workers=num_workers,
    )
    res = emb.embed_paths(paths, progress=progress)
    probs = torch.softmax(torch.from_numpy(res.features), 1).numpy()
    order = np.argsort(res.ok_indices, kind="stable")
    return Probabilities(probs[order], [paths[i] for i in res.ok_indices[order]], res.failed)
