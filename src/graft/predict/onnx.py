"""Predict with an exported ``.onnx`` file: numpy + Pillow + ONNX Runtime, never torch.

The file carries everything needed (the :class:`~graft.artifact.spec.ArtifactSpec`
in its metadata), and preprocessing runs through the same
:class:`~graft.transforms.eval.Preprocessing` code as training, so this predictor
and the PyTorch one give the same answers.

Example:
    >>> from graft.predict.onnx import OnnxPredictor
    >>> OnnxPredictor("model.onnx").predict(["bee.jpg"], top_k=2)
    [{'path': 'bee.jpg', 'label': 'bees', 'probability': 0.97, 'top_k': [...]}]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graft.artifact.onnx_meta import OOD_OUTPUT, OUTPUT_NAMES, spec_from_onnx_metadata
from graft.data.decode import DEFAULT_MAX_PIXELS
from graft.exceptions import ModelFileError
from graft.onnxrt import onnx_session
from graft.predict.base import Predictor
from graft.predict.results import Outputs, softmax

__all__ = ["OnnxPredictor", "read_onnx_metadata", "onnx_session"]


def _check_file(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"ONNX model {p} does not exist; export one with: graft export MODEL --out {p.name}")
    return str(p)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The graft document stored in an exported ONNX file (classes, preprocessing, backbone...).

    Raises:
        ModelFileError: the file is missing, not ONNX, or was not exported by graft.
    """
    p = _check_file(path)
    return spec_from_onnx_metadata(onnx_session(p, 1).get_modelmeta().custom_metadata_map, p)[1]


class OnnxPredictor(Predictor):
    """Predict with an exported ONNX model, without torch.

    Args:
        path: ``.onnx`` file written by ``graft export``.
        batch_size: images per ONNX Runtime call.
        threads: ONNX Runtime intra-op threads (None: one per physical core).
        decode_workers: threads decoding and preprocessing images (Pillow releases the GIL).
        max_pixels: decompression-bomb guard for decoded images.
        providers: ONNX Runtime execution providers (default CPU).
        spin: let idle ONNX Runtime threads busy-wait (lowest latency when the CPU is otherwise idle).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        decode_workers: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        providers: Sequence[str] | None = None,
        spin: bool = True,
    ) -> None:
        self.path = Path(_check_file(path))
        self.session = onnx_session(str(self.path), threads, providers, spin=spin)
        self.spec, self.document = spec_from_onnx_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(self.path)
        )
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = max_pixels
        self.decode_workers = decode_workers if decode_workers is not None else min(4, os.cpu_count() or 1)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "quantization": self.document.get("quantization")}

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed float32 batch of shape (N, 3, H, W)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        want = [OUTPUT_NAMES[0]] if OUTPUT_NAMES[0] in self.output_names else None
        return self.session.run(want, {self.input_name: x})[0]

    def _outputs(self, batch: np.ndarray) -> Outputs:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if OOD_OUTPUT in self.output_names:
            logits, ood = self.session.run([OUTPUT_NAMES[0], OOD_OUTPUT], {self.input_name: x})
            return Outputs(softmax(logits), ood.astype(np.float32))
        return Outputs(softmax(self.logits(x)))

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, classes={len(self.spec.classes)})"
