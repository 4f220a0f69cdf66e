"""``--format litert``: a LiteRT (TensorFlow Lite) flatbuffer, ``.tflite``, converted with litert-torch.

Input RGB pixels 0..255 at batch 1 (normalisation inside); outputs logits and
probabilities (no OOD score: its top-k does not lower to a LiteRT op, so no "unknown").
graft's document and ``labels.txt`` are TFLite associated files: a zip appended to the
flatbuffer (as TFLite Support's metadata writer packs them), readable with any zip tool.
The converter runs in graft's environment where litert-torch imports, else in the separate
environment of :mod:`graft.export.litert_env`; the file is verified with the LiteRT runtime.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from graft.exceptions import ExportError
from graft.export.job import Built, ExportJob, on_pixels
from graft.export.metadata import metadata_document
from graft.export.registry import MissingExtraError, register_format

__all__ = ["write_litert", "read_litert"]


def read_litert(path: Path) -> dict[str, Any]:
    """graft's document from a ``.tflite``'s associated files."""
    with zipfile.ZipFile(path) as z:
        return dict(json.loads(z.read("graft_config.json")))


def _convert(job: ExportJob, dst: Path, int8: bool) -> None:
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        from graft.export import litert_env

        py = litert_env.env_python()
        if py is None:
            raise MissingExtraError(
                "--format litert converts with litert-torch, which conflicts with graft's packages; create its "
                f"environment once (about 900 MB) with: {litert_env.setup_command()}"
            ) from None
        litert_env.link(py)
        src = str(Path(__file__).resolve().parents[3])  # graft's own source, first on the subprocess's path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        cmd = [str(py), "-m", "graft.export.litert_convert", str(job.lm.path), str(dst), *(["int8"] if int8 else [])]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0 or not dst.is_file():
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"litert-torch could not convert {job.lm.path}: {tail[:400]}") from None
        return
    from graft.export.litert_convert import convert

    convert(str(job.lm.path), str(dst), int8)


def _append_files(path: Path, files: dict[str, str]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    with open(path, "ab") as f:
        f.write(buf.getvalue())


@register_format(
    "litert",
    suffix=".tflite",
    extra="litert",
    requires=("ai_edge_litert",),
    verified_by="running",
    int8="dynamic-range int8 (litert-torch PT2E: per-channel int8 weights, activations quantised at run time)",
    reader=read_litert,
)
def write_litert(job: ExportJob, dst: Path, int8: bool) -> Built:
    from ai_edge_litert.interpreter import Interpreter

    job.say("converting with litert-torch" + (" (int8)" if int8 else ""))
    _convert(job, dst, int8)
    quant = "int8-dynamic" if int8 else None
    doc = metadata_document(job.spec, "litert", quantization=quant)
    doc["outputs"] = ["logits", "probabilities"]
    _append_files(dst, {"graft_config.json": json.dumps(doc), "labels.txt": "\n".join(job.spec.classes) + "\n"})
    interp = Interpreter(model_path=str(dst))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = interp.get_output_details()
    probs = next((d["index"] for d in outs if "output_1" in d["name"]), outs[-1]["index"])

    def run(px: np.ndarray) -> np.ndarray:  # the file takes batch 1
        interp.set_tensor(inp, px)
        interp.invoke()
        return interp.get_tensor(probs).copy()

    def predict(batch: np.ndarray) -> np.ndarray:
        return on_pixels(run, batch, job.pre, step=1)

    notes = ["no OOD output: LiteRT cannot run the OOD score's top-k, so this file never says 'unknown'"]
    if sys.platform != "linux":  # pragma: no cover
        notes.append("verified with the LiteRT runtime of this OS")
    return Built(dst, read_litert(dst), predict, quantization=quant, notes=notes)
