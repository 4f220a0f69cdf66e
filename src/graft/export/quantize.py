"""int8 quantisation of an exported model with ONNX Runtime's quantisation tools.

Static quantisation (QDQ, per-channel weights) calibrated on training images is used
when such images exist: convolutions then run as int8 kernels. Without calibration
images, dynamic quantisation (weights only, activations quantised at run time) is the
fallback.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from graft.exceptions import ExportError

__all__ = ["QUANTIZE_MODES", "quantize_int8"]

QUANTIZE_MODES = ("int8",)


class _Reader:
    """CalibrationDataReader over a preprocessed batch, one image at a time."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: np.ascontiguousarray(batch[i : i + 1])} for i in range(len(batch))]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def quantize_int8(src: Path, dst: Path, input_name: str, calibration: np.ndarray | None) -> str:
    """Write an int8 version of ``src`` to ``dst``.

    Args:
        src: fp32 ONNX model.
        dst: output file.
        input_name: the model's image input.
        calibration: preprocessed training images (N, 3, H, W); None or empty: dynamic.

    Returns:
        The method used: ``"static"`` or ``"dynamic"``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs through the root logger
    with tempfile.TemporaryDirectory(prefix="graft-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the original
            pre = src
        try:
            if calibration is not None and len(calibration):
                quantize_static(
                    str(pre),
                    str(dst),
                    _Reader(input_name, calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    # The classifier's last layer decides the label: keep it in float.
                    nodes_to_exclude=_last_gemm(pre),
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
                return "static"
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
            return "dynamic"
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001
            if dst.exists():
                os.unlink(dst)
            raise ExportError(f"int8 quantisation failed: {type(e).__name__}: {e}") from None


def _last_gemm(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return names[-1:]
