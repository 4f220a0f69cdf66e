"""The network as the portable formats take it: RGB pixels in [0, 255] in, (logits, probabilities[, OOD]) out.

Only the normalisation (mean/std) moves into the graph: decoding, resizing and the centre
crop stay with the app (a phone or browser does them with its own image API at the
input size the metadata names), as they do for the ONNX export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from graft.artifact.onnx_meta import onnx_metadata
from graft.artifact.onnx_write import _WithProbs, write_onnx, write_onnx_metadata
from graft.export.metadata import metadata_document

__all__ = ["PixelInput", "pixel_model", "write_model_onnx", "restamp_onnx"]


class PixelInput(nn.Module):
    """``net`` behind the normalisation: takes float RGB pixels 0..255 (NCHW)."""

    def __init__(self, net: nn.Module, pre: Any, *, ood: bool = True) -> None:
        super().__init__()
        self.net: Any = net
        # _WithProbs adds the OOD output where this is set (None: logits and probabilities only)
        self.ood = getattr(net, "ood", None) if ood else None
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._norm(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net.forward_all(self._norm(x))


class _ProbsOnly(nn.Module):
    """One output, the probabilities: Core ML's classifier reads its labels' scores from it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[1]


def pixel_model(lm: Any, *, probs_only: bool = False, ood: bool = True) -> nn.Module:
    """The loaded model as pixels -> (logits, probabilities[, OOD]) (or probabilities only), in eval mode."""
    inner = PixelInput(lm.net.eval(), lm.preprocessing, ood=ood and not probs_only)
    m: nn.Module = _WithProbs(inner, lm.spec.multi_label)
    return (_ProbsOnly(m) if probs_only else m).eval()


def write_model_onnx(lm: Any, path: Path, *, pixels: bool) -> None:
    """The loaded model as an fp32 ONNX file: normalised input (graft's ``.onnx``) or pixel input."""
    net = PixelInput(lm.net.eval(), lm.preprocessing) if pixels else lm.net
    write_onnx(net, lm.spec, path)
    if pixels:
        restamp_onnx(path, lm.spec, pixels=True, quantization=None)


def restamp_onnx(path: Path, spec: Any, *, pixels: bool, quantization: str | None) -> None:
    """Rewrite an ONNX file's graft metadata (after quantisation, or for pixel input)."""
    if pixels:
        doc = metadata_document(spec, "onnx-pixels", quantization=quantization, pixels=True)
    else:
        doc = onnx_metadata(spec, opset=17, quantization=quantization)
    write_onnx_metadata(path, doc)
