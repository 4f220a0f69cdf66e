"""Convert a graft model to LiteRT with litert-torch: ``python -m graft.export.litert_convert MODEL_DIR OUT``.

Run by ``graft export --format litert`` inside the environment of :mod:`graft.export.litert_env`
(or in-process where litert-torch imports). The model folder is read with graft's loader
(safetensors, no code execution); only the file at OUT is written.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = ["convert"]


def convert(model_dir: str, out: str) -> None:
    """Write the pixel-input network (logits, probabilities; no OOD output) as a ``.tflite`` flatbuffer."""
    import litert_torch
    import torch

    from graft.artifact.model_dir import load_model
    from graft.export.wrap import pixel_model

    lm = load_model(model_dir, device="cpu")
    h, w = lm.preprocessing.input_size
    # no OOD output: its top-k lowers to STABLEHLO_SORT, which the LiteRT runtime cannot run
    net = pixel_model(lm, ood=False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        litert_torch.convert(net, (torch.zeros(1, 3, h, w),)).export(str(Path(out)))


if __name__ == "__main__":  # pragma: no cover - run in a subprocess
    convert(sys.argv[1], sys.argv[2])
