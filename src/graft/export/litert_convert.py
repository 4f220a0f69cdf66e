"""Convert a graft model to LiteRT with litert-torch: ``python -m graft.export.litert_convert MODEL_DIR OUT [int8]``.

Run by ``graft export --format litert`` inside the environment of :mod:`graft.export.litert_env`
(or in-process where litert-torch imports). The model folder is read with graft's loader
(safetensors, no code execution); only the file at OUT is written.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["convert"]


def _quantized(net: Any, x: Any) -> tuple[Any, Any]:
    """(``net`` after litert-torch's dynamic-range int8 PT2E quantisation, its config).

    Dynamic range, not static: int8 weights (per channel), activations quantised at run time by
    LiteRT's kernels, so no calibration set. Static int8 (HistogramObserver activations, calibrated
    on 245 training images) lost 3.3 points on hymenoptera's validation (0.9608 -> 0.9281, 94.1%
    agreement) where ONNX's and ExecuTorch's static int8 lost 0.65; dynamic range lost none
    (BENCHMARKS.md, "Export formats").
    """
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    )
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
    prepared(x)  # one pass: per-channel weight observers need to have seen the weights
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def convert(model_dir: str, out: str, int8: bool = False) -> None:
    """Write the pixel-input network (logits, probabilities; no OOD output) as a ``.tflite`` flatbuffer.

    ``int8``: dynamic-range int8 (see :func:`_quantized`).
    """
    import litert_torch
    import torch

    from graft.artifact.model_dir import load_model
    from graft.export.wrap import pixel_model

    lm = load_model(model_dir, device="cpu")
    h, w = lm.preprocessing.input_size
    x = torch.zeros(1, 3, h, w)
    # no OOD output: its top-k lowers to STABLEHLO_SORT, which the LiteRT runtime cannot run
    net: Any = pixel_model(lm, ood=False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        config = None
        if int8:
            net, config = _quantized(net, x)
        litert_torch.convert(net, (x,), quant_config=config).export(str(Path(out)))


if __name__ == "__main__":  # pragma: no cover - run in a subprocess
    convert(sys.argv[1], sys.argv[2], sys.argv[3:] == ["int8"])
