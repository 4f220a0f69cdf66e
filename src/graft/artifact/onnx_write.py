"""Write a graft network as a self-contained ONNX file (graph + :class:`ArtifactSpec` metadata)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graft.artifact.onnx_meta import INPUT_NAME, METADATA_KEY, OOD_OUTPUT, OUTPUT_NAMES, onnx_metadata
from graft.artifact.spec import ArtifactSpec

__all__ = ["DEFAULT_OPSET", "write_onnx", "write_onnx_metadata"]

DEFAULT_OPSET = 17
"""Supported by every ONNX Runtime since 1.14 and by the TorchScript exporter for timm models."""


class _WithProbs(nn.Module):
    """Network -> (logits, probabilities[, OOD score]): the outputs of every exported file.

    The probabilities are a softmax over the classes, or for a multi-label model one sigmoid
    per label (the metadata's ``thresholds`` then turn them into a label set).
    """

    def __init__(self, inner: nn.Module, multi_label: bool = False) -> None:
        super().__init__()
        self.inner: Any = inner  # a GraftNet
        self.with_ood = getattr(inner, "ood", None) is not None
        self.multi_label = multi_label

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.with_ood:  # one pass through the backbone for both heads
            logits, ood = self.inner.forward_all(x)
            return logits, self._probs(logits), ood
        logits = self.inner(x)
        return logits, self._probs(logits)


def write_onnx(net: nn.Module, spec: ArtifactSpec, path: str | Path, *, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export ``net`` (fp32, dynamic batch) to ``path`` with ``spec`` in its metadata.

    Returns:
        The metadata document written.
    """
    path = Path(path)
    x = torch.zeros(2, 3, *spec.preprocessing.input_size)
    wrapped = _WithProbs(net.eval(), spec.multi_label)
    outputs = list(OUTPUT_NAMES) + ([OOD_OUTPUT] if wrapped.with_ood else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from timm's dynamic 'same' padding are expected
        # The TorchScript exporter (dynamo=False) handles timm's tf_* 'same' padding; the
        # spatial size is fixed by the preprocessing, only the batch axis is dynamic.
        torch.onnx.export(
            wrapped,
            (x,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            opset_version=opset,
            do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            dynamo=False,
        )
    meta = onnx_metadata(spec, opset=opset)
    write_onnx_metadata(path, meta)
    return meta


def write_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Replace the graft metadata of an ONNX file (also used after int8 quantisation)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in {
        METADATA_KEY: json.dumps(meta),
        "graft_version": meta["graft_version"],
        "classes": json.dumps(meta["classes"]),
    }.items():
        entry = model.metadata_props.add()
        entry.key = k
        entry.value = v
    model.producer_name = "graft"
    model.producer_version = meta["graft_version"]
    model.doc_string = f"graft image classifier ({meta['backbone'].get('name', '?')}, {len(meta['classes'])} classes)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
