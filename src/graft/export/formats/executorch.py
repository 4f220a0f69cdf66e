"""``--format executorch``: an ExecuTorch program (``.pte``) lowered to the XNNPACK CPU backend.

ExecuTorch has no free-form metadata field, so graft's document travels the way ExecuTorch's
own exporters store model facts: a constant method, ``graft_config``, that returns the JSON
as a uint8 tensor (any ExecuTorch runtime can call it). The input is RGB pixels 0..255 at
batch 1 (normalisation inside). int8: XNNPACK's PT2E quantiser calibrated on training images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from graft.exceptions import ExportError
from graft.export.job import Built, ExportJob, on_pixels, to_pixels
from graft.export.metadata import metadata_document
from graft.export.registry import register_format

__all__ = ["write_executorch", "read_executorch"]

_META_METHOD = "graft_config"


def _program(path: Path) -> Any:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path))


def read_executorch(path: Path) -> dict[str, Any]:
    """graft's document from a ``.pte``'s ``graft_config`` constant method (ExecuTorch runtime only)."""
    raw = _program(path).load_method(_META_METHOD).execute([])[0]
    return dict(json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode("utf-8")))


def _quantized(net: Any, x: Any, calib: np.ndarray) -> Any:
    """``net`` after XNNPACK's symmetric int8 PT2E quantisation, calibrated on ``calib`` (pixels)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
    for i in range(len(calib)):
        prepared(torch.from_numpy(calib[i : i + 1]))
    return convert_pt2e(prepared)


@register_format(
    "executorch",
    suffix=".pte",
    extra="executorch",
    requires=("executorch",),
    verified_by="running",
    int8="XNNPACK PT2E int8 (per-channel weights, calibrated on training images)",
    reader=read_executorch,
)
def write_executorch(job: ExportJob, dst: Path, int8: bool) -> Built:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from graft.export.wrap import pixel_model

    h, w = job.pre.input_size
    x = torch.zeros(1, 3, h, w)
    quant = "int8-static" if int8 else None
    doc = json.dumps(metadata_document(job.spec, "executorch", quantization=quant)).encode("utf-8")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        net: Any = pixel_model(job.lm)
        if int8:
            if not len(job.calibration):
                raise ExportError(
                    f"--int8 for executorch calibrates on training images, and {job.lm.path}'s training data "
                    "folder was not found (it is recorded in the run folder's run.json)"
                )
            net = _quantized(net, x, to_pixels(job.calibration, job.pre))
        edge = to_edge_transform_and_lower(
            torch.export.export(net, (x,)),
            partitioner=[XnnpackPartitioner()],
            constant_methods={_META_METHOD: torch.tensor(list(doc), dtype=torch.uint8)},
        )
        dst.write_bytes(edge.to_executorch().buffer)
    method = _program(dst).load_method("forward")

    def predict(batch: np.ndarray) -> np.ndarray:  # the file takes batch 1
        return on_pixels(lambda px: method.execute([torch.from_numpy(px)])[1], batch, job.pre, step=1)

    return Built(dst, read_executorch(dst), predict, quantization=quant)
