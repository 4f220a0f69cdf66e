"""What identifies a network's weights: the key of the feature cache and the ONNX cache."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["FEATURE_PIPELINE_VERSION", "fingerprint"]

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
