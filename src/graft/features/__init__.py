"""Embedding runtime and the on-disk feature cache."""

from graft.features.autotune import cpu_supports_fast_bf16
from graft.features.cache import FeatureCache, embedder_key, file_key
from graft.features.embedder import Embedder, choose_precision, default_num_workers
from graft.features.extract import FeatureSet, extract_features, model_features
from graft.features.fingerprint import FEATURE_PIPELINE_VERSION, fingerprint

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
