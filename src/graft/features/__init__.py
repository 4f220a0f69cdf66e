"""Embedding runtime and the on-disk feature cache."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graft.features.autotune import cpu_supports_fast_bf16
    from graft.features.cache import FeatureCache, embedder_key, file_key
    from graft.features.embedder import Embedder, choose_precision, default_num_workers
    from graft.features.extract import FeatureSet, extract_features, model_features
    from graft.features.fingerprint import FEATURE_PIPELINE_VERSION, fingerprint

_EXPORTS = {
    "cpu_supports_fast_bf16": "graft.features.autotune",
    "FeatureCache": "graft.features.cache",
    "embedder_key": "graft.features.cache",
    "file_key": "graft.features.cache",
    "Embedder": "graft.features.embedder",
    "choose_precision": "graft.features.embedder",
    "default_num_workers": "graft.features.embedder",
    "FeatureSet": "graft.features.extract",
    "extract_features": "graft.features.extract",
    "model_features": "graft.features.extract",
    "FEATURE_PIPELINE_VERSION": "graft.features.fingerprint",
    "fingerprint": "graft.features.fingerprint",
}

__all__ = [
    "FEATURE_PIPELINE_VERSION",
    "fingerprint",
    "model_features",
    "Embedder",
    "FeatureCache",
    "FeatureSet",
    "choose_precision",
    "cpu_supports_fast_bf16",
    "default_num_workers",
    "embedder_key",
    "extract_features",
    "file_key",
]


def __getattr__(name: str) -> Any:
    """Import on first use, so that reading a constant of one submodule never loads torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
