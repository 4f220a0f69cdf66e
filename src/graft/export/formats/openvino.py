"""``--format openvino``: OpenVINO IR (``.xml`` + ``.bin``) converted from the ONNX export.

The normalisation goes into the IR with OpenVINO's PrePostProcessor (RGB pixels 0..255
in); graft's document is in the model's ``rt_info`` under ``graft/config``. int8 is the
ONNX export's calibrated QDQ graph, which OpenVINO runs with int8 kernels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from graft.export.job import Built, ExportJob, on_pixels
from graft.export.metadata import metadata_document
from graft.export.registry import register_format

__all__ = ["write_openvino", "read_openvino"]

_RT_PATH = ["graft", "config"]


def read_openvino(path: Path) -> dict[str, Any]:
    """graft's document from an IR's ``rt_info`` (openvino only, no graft model folder)."""
    import openvino as ov

    raw = ov.Core().read_model(str(path)).get_rt_info(_RT_PATH)
    return dict(json.loads(raw.astype(str) if hasattr(raw, "astype") else str(raw)))


@register_format(
    "openvino",
    suffix=".xml",
    extra="openvino",
    requires=("openvino",),
    verified_by="running",
    int8="the ONNX export's calibrated QDQ int8 graph, converted (OpenVINO runs it with int8 kernels)",
    reader=read_openvino,
)
def write_openvino(job: ExportJob, dst: Path, int8: bool) -> Built:
    import openvino as ov

    model = ov.convert_model(str(job.onnx_file(pixels=False, int8=int8)))
    ppp = ov.preprocess.PrePostProcessor(model)
    inp = ppp.input("input")
    inp.tensor().set_layout(ov.Layout("NCHW"))
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().mean([m * 255.0 for m in job.pre.mean]).scale([s * 255.0 for s in job.pre.std])
    model = ppp.build()
    quant = "int8-static" if int8 else None
    model.set_rt_info(json.dumps(metadata_document(job.spec, "openvino", quantization=quant)), _RT_PATH)
    ov.save_model(model, str(dst), compress_to_fp16=False)
    # f32 as written: on CPUs with bf16 units OpenVINO otherwise runs bf16 (probabilities off by 0.04 on lite0)
    compiled = ov.Core().compile_model(str(dst), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    probs = compiled.output("probabilities")

    def predict(batch: np.ndarray) -> np.ndarray:
        return on_pixels(lambda px: compiled(px)[probs], batch, job.pre)

    note = "verified with INFERENCE_PRECISION_HINT f32; OpenVINO's default on CPUs with bf16 units is bf16"
    return Built(dst, read_openvino(dst), predict, notes=[note], quantization=quant)
