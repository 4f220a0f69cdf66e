"""The ONNX file format of a graft model: an :class:`ArtifactSpec` in ``metadata_props``.

Torch-free, so the ONNX-only predictor can read it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from graft.artifact.spec import ArtifactSpec
from graft.exceptions import ModelFileError

__all__ = [
    "METADATA_KEY",
    "ONNX_FORMAT",
    "ONNX_FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "PROBABILITY_FUNCTIONS",
    "onnx_metadata",
    "spec_from_onnx_metadata",
]

METADATA_KEY = "graft_config"
"""Key of the JSON document in the ONNX ``metadata_props``."""
ONNX_FORMAT = "graft-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")
OOD_OUTPUT = "ood_score"
"""Third output of models with an OOD score: higher is less like the training data."""
_METRIC_KEYS = (
    "n",
    "accuracy",
    "top2_accuracy",
    "top_k",
    "macro_f1",
    "balanced_accuracy",
    "log_loss",
    "ece",
    # multi-label models (graft.metrics_multilabel)
    "multi_label",
    "subset_accuracy",
    "hamming_loss",
    "map_macro",
    "map_micro",
    "f1_micro",
    "f1_macro",
)
PROBABILITY_FUNCTIONS = ("softmax", "sigmoid")
"""What the ``probabilities`` output applies to the logits: softmax (single-label) or sigmoid per label."""


def onnx_metadata(spec: ArtifactSpec, *, opset: int, quantization: str | None = None) -> dict[str, Any]:
    """The ``graft_config`` JSON document stored in an exported ONNX file."""
    from graft._version import __version__

    h, w = spec.preprocessing.input_size
    body = spec.to_dict()
    return {
        **body,
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "graft_version": __version__,
        "metrics": {k: spec.metrics[k] for k in _METRIC_KEYS if k in spec.metrics},
        "training": {},  # curves and parameters stay in the model folder
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, int(h), int(w)], "dtype": "float32", "layout": "NCHW"},
        "outputs": list(OUTPUT_NAMES) + ([OOD_OUTPUT] if spec.ood else []),
        "probabilities": PROBABILITY_FUNCTIONS[int(spec.multi_label)],
        "opset": opset,
        "quantization": quantization,
    }


def spec_from_onnx_metadata(meta: Mapping[str, str], path: str) -> tuple[ArtifactSpec, dict[str, Any]]:
    """(spec, the raw document) from an ONNX file's ``metadata_props``.

    Raises:
        ModelFileError: not exported by graft, damaged, or from a newer graft.
    """
    raw = meta.get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not exported by graft, so its classes and "
            "preprocessing are unknown. Re-export it with: graft export MODEL --out FILE.onnx"
        )
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ModelFileError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: metadata '{METADATA_KEY}' is nested too deeply to be graft's") from None
    if not isinstance(doc, dict) or doc.get("format") != ONNX_FORMAT:
        raise ModelFileError(f"{path}: metadata '{METADATA_KEY}' is not a {ONNX_FORMAT} document")
    if _int(doc.get("format_version")) > ONNX_FORMAT_VERSION:
        raise ModelFileError(f"{path} was exported by a newer graft; upgrade graft to use it")
    return ArtifactSpec.from_dict(doc, source=path), doc


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0
