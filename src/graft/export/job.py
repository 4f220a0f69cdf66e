"""What every export format shares: the loaded model, the parity images, the PyTorch reference,
and the verification that turns a written file into a report.

A format writer gets an :class:`ExportJob` and returns a :class:`Built`; :func:`verify` then
runs the file in its own runtime on the parity images and compares it with PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from graft.export import checks

__all__ = [
    "DEFAULT_PROB_TOLERANCE",
    "MIN_AGREEMENT",
    "PIXEL_CHUNK",
    "Built",
    "ExportJob",
    "ParityImages",
    "on_pixels",
    "to_pixels",
]

DEFAULT_PROB_TOLERANCE = 1e-3
"""Largest accepted |probability difference| between a format's runtime and PyTorch (fp32)."""
MIN_AGREEMENT = 0.99
"""Smallest accepted top-1 agreement with PyTorch (fp32) on the parity images."""
_MAX_PARITY = 256
PIXEL_CHUNK = 32
"""Images per runtime call when a format is checked (one call on hymenoptera's 153 validation images: 3.5 GB more)."""


def to_pixels(batch: np.ndarray, pre: Any) -> np.ndarray:
    """Undo the normalisation of a preprocessed batch: RGB pixels in [0, 255], float32 NCHW.

    Formats with the normalisation inside their graph take these (decoded, resized and
    cropped exactly as graft does; only mean/std move into the model).
    """
    mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((batch * std + mean) * np.float32(255.0), dtype=np.float32)


def on_pixels(run: Callable[[np.ndarray], Any], batch: np.ndarray, pre: Any, step: int = PIXEL_CHUNK) -> np.ndarray:
    """``run``'s probabilities for ``batch`` as pixels (:func:`to_pixels`), ``step`` images per call.

    A format's file is checked on up to 256 images; one call on all of them would hold every
    layer's activations for all at once. In chunks, as a predictor runs, memory stays bounded.
    """
    px = to_pixels(batch, pre)
    return np.concatenate([np.asarray(run(px[i : i + step]), np.float32) for i in range(0, len(px), step)])


@dataclass
class ParityImages:
    """Preprocessed images the export is checked on, with labels where they are validation images."""

    batch: np.ndarray
    source: str
    labels: np.ndarray | None = None


@dataclass
class Built:
    """A written export: where, how to run it, and its metadata read back from the file.

    ``predict`` takes a preprocessed (normalised) NCHW batch and returns probabilities;
    None where no runtime runs on this OS (verified by inspection: ``inspected`` lists what was checked).
    """

    path: Path
    metadata: dict[str, Any]
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    inspected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quantization: str | None = None


@dataclass
class ExportJob:
    """The model and images shared by every format of one ``graft export`` run (loaded once)."""

    lm: Any
    data_dir: Path | None
    tmp: Path
    check_dirs: list[str] | None = None
    tolerance: float = DEFAULT_PROB_TOLERANCE
    say: Callable[[str], None] = lambda _m: None
    _onnx_cache: dict[tuple[bool, bool], Path] = field(default_factory=dict)

    @property
    def spec(self) -> Any:
        return self.lm.spec

    @property
    def pre(self) -> Any:
        return self.lm.preprocessing

    @cached_property
    def val(self) -> tuple[list[str], np.ndarray] | None:
        return None if self.spec.multi_label else checks.val_split(self.lm.path, self.lm.classes, self.data_dir)

    @cached_property
    def parity(self) -> ParityImages:
        """``--check`` images, else the validation split (up to 256), else training/synthetic images."""
        if not self.check_dirs and self.val is not None:
            paths, labels = self.val
            batch, ok = checks.load_batch(paths[:_MAX_PARITY], self.pre)
            if len(batch):
                keep = np.isin(paths[:_MAX_PARITY], ok)
                return ParityImages(batch, "validation", labels[:_MAX_PARITY][keep])
        imgs = checks.choose_check_images(self.pre, self.check_dirs, self.data_dir, n=32)
        return ParityImages(imgs.batch, imgs.source)

    @cached_property
    def reference(self) -> np.ndarray:
        """PyTorch fp32 probabilities on the parity images."""
        from graft.predict.torch import TorchPredictor

        return TorchPredictor(self.lm.net, self.spec).predict_arrays(self.parity.batch)

    @cached_property
    def calibration(self) -> np.ndarray:
        """Preprocessed training images (never validation ones) for int8 calibration; may be empty."""
        exclude = self.val[0] if self.val else []
        batch, _ = checks.load_batch(checks.calibration_paths(self.data_dir, exclude), self.pre)
        return batch

    def onnx_file(self, *, pixels: bool, int8: bool) -> Path:
        """An ONNX file of the model in the temp folder (built once per kind): normalised or pixel input, fp32 or int8."""
        key = (pixels, int8)
        if key not in self._onnx_cache:
            from graft.export.wrap import restamp_onnx, write_model_onnx

            path = self.tmp / f"model{'-pixels' if pixels else ''}{'-int8' if int8 else ''}.onnx"
            if int8:
                from graft.artifact.onnx_meta import INPUT_NAME
                from graft.export.quantize import quantize_int8

                src = self.onnx_file(pixels=pixels, int8=False)
                calib = to_pixels(self.calibration, self.pre) if pixels else self.calibration
                method = quantize_int8(src, path, INPUT_NAME, calib if len(calib) else None)
                restamp_onnx(path, self.spec, pixels=pixels, quantization=f"int8-{method}")
            else:
                write_model_onnx(self.lm, path, pixels=pixels)
            self._onnx_cache[key] = path
        return self._onnx_cache[key]
