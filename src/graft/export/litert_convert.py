"""Convert a graft model to LiteRT with litert-torch: ``python -m graft.export.litert_convert MODEL_DIR OUT [CALIB]``.

Run by ``graft export --format litert`` inside the environment of :mod:`graft.export.litert_env`
(or in-process where litert-torch imports). The model folder is read with graft's loader
(safetensors, no code execution); CALIB, for ``--int8``, is a ``.npy`` of calibration pixels
(N, 3, H, W) read without pickle; only the file at OUT is written.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["convert"]


def _quantized(net: Any, x: Any, calib_npy: str) -> tuple[Any, Any]:
    """(``net`` after litert-torch's static int8 PT2E quantisation calibrated on the pixels in ``calib_npy``, its config)."""
    import numpy as np
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    calib = np.load(calib_npy, allow_pickle=False)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
    for i in range(len(calib)):
        prepared(torch.from_numpy(calib[i : i + 1]))
    return quantize_pt2e.convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def convert(model_dir: str, out: str, calib_npy: str | None = None) -> None:
    """Write the pixel-input network (logits, probabilities; no OOD output) as a ``.tflite`` flatbuffer.

    With ``calib_npy`` the weights and activations are int8 (static, per-channel weights).
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
        if calib_npy:
            net, config = _quantized(net, x, calib_npy)
        litert_torch.convert(net, (x,), quant_config=config).export(str(Path(out)))


if __name__ == "__main__":  # pragma: no cover - run in a subprocess
    convert(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
