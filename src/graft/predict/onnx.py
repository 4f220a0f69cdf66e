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

from graft.artifact.onnx_meta import OOD_OUTPUT, OUTPUT_NAMES, PROBABILITY_FUNCTIONS, spec_from_onnx_metadata
from graft.data.decode import DEFAULT_MAX_PIXELS
from graft.exceptions import ModelFileError
from graft.onnxrt import onnx_session
from graft.predict.base import Predictor
from graft.predict.results import Outputs

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
        self.source = str(self.path)
        self.session = onnx_session(str(self.path), threads, providers, spin=spin)
        self.spec, self.document = spec_from_onnx_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(self.path)
        )
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._check_graph()
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = max_pixels
        self.decode_workers = decode_workers if decode_workers is not None else min(4, os.cpu_count() or 1)

    def _check_graph(self) -> None:
        """The graph must agree with its metadata (output names, class count, input size), as a model folder's
        weights must agree with its config: otherwise labels would be wrong, or a prediction a traceback."""
        p, fix = self.path, f"re-export it with: graft export MODEL --out {self.path.name}"
        outs = {o.name: o for o in self.session.get_outputs()}
        listed = self.document.get("outputs")
        wanted = [OUTPUT_NAMES[0]] + ([OOD_OUTPUT] if self.spec.ood else [])
        wanted += [str(n) for n in listed if str(n) not in wanted] if isinstance(listed, list) else []
        missing = [n for n in wanted if n not in outs]
        if missing:
            raise ModelFileError(f"{p}: the graph lacks output(s) {missing} (it has {sorted(outs)}); {fix}")
        probs, expected = self.document.get("probabilities"), PROBABILITY_FUNCTIONS[int(self.spec.multi_label)]
        if probs is not None and probs != expected:  # older files do not say; a multi-label one always does
            raise ModelFileError(
                f"{p}: its metadata says the probabilities are a {probs!r} but its thresholds make it a "
                f"{'multi' if self.spec.multi_label else 'single'}-label model ({expected}); {fix}"
            )
        width, n = _dims(outs[OUTPUT_NAMES[0]].shape)[-1:], len(self.spec.classes)
        if width and isinstance(width[0], int) and width[0] != n:
            raise ModelFileError(f"{p}: its metadata lists {n} class(es) but the graph gives {width[0]} outputs; {fix}")
        graph_in = _dims(self.session.get_inputs()[0].shape)
        doc_input = self.document.get("input")
        doc_in = _dims(doc_input.get("shape")) if isinstance(doc_input, dict) else []
        size = tuple(self.spec.preprocessing.input_size)
        for what, shape in (("graph", graph_in), ("metadata's input", doc_in)):
            if len(shape) == 4 and all(isinstance(v, int) for v in shape[1:]) and (shape[1], *shape[2:]) != (3, *size):
                raise ModelFileError(
                    f"{p}: the {what} takes {shape[1]}x{shape[2]}x{shape[3]} inputs but its preprocessing makes "
                    f"3x{size[0]}x{size[1]}; {fix}"
                )

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
        else:
            logits, ood = self.logits(x), None
        if logits.ndim != 2 or logits.shape[1] != len(self.spec.classes):  # a width the graph left symbolic
            raise ModelFileError(
                f"{self.path}: its metadata lists {len(self.spec.classes)} class(es) but the graph gave "
                f"{logits.shape[-1]} outputs; re-export it with: graft export MODEL --out {self.path.name}"
            )
        return Outputs(self.probabilities_of(logits), None if ood is None else ood.astype(np.float32))

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, classes={len(self.spec.classes)})"


def _dims(shape: Any) -> list[Any]:
    """An ONNX shape as a list (symbolic dimensions stay strings); [] when unknown."""
    return list(shape) if isinstance(shape, (list, tuple)) else []
