"""Embedding runtime and the on-disk feature cache."""

from .cache import FeatureCache, embedder_key, file_key
from .runtime import Embedder, choose_precision, cpu_supports_fast_bf16, default_num_workers
from .store import FeatureSet, extract_features

__all__ = [
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
