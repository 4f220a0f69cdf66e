"""``--format web``: a static folder that classifies photos in the browser, no server.

``index.html`` + ``graft-web.js`` + the model (``model.onnx``, pixel input, with the same
bytes in ``model.js`` so the page also works from ``file://``) + onnxruntime-web from the
npm registry, vendored into ``ort/``. onnxruntime-web comes from a cache under GRAFT_HOME
filled once with ``npm pack`` (integrity-checked); exports never download anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any

from graft.config import graft_home
from graft.export.job import Built, ExportJob, on_pixels
from graft.export.metadata import metadata_document
from graft.export.registry import MissingExtraError, register_format

__all__ = ["ORT_WEB_VERSION", "ORT_WEB_INTEGRITY", "ort_web_package", "write_web", "read_web"]

ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
"""npm's ``dist.integrity`` of the pinned package: the cached tarball must match it."""
_ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def _tarball() -> Path:
    return graft_home() / "npm" / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"


def fill_command() -> str:
    """The command that fills the cache (also what ``.ci/run`` runs)."""
    return f'mkdir -p "{_tarball().parent}" && npm pack onnxruntime-web@{ORT_WEB_VERSION} --pack-destination "{_tarball().parent}"'


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def ort_web_package() -> Path:
    """The cached, integrity-checked onnxruntime-web tarball; fetched with npm when missing (the only download).

    Raises:
        MissingExtraError: npm is missing or the download failed (one line with the exact command).
    """
    tgz = _tarball()
    if not tgz.is_file() and shutil.which("npm"):
        tgz.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["npm", "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--pack-destination", str(tgz.parent)]
        subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    if not tgz.is_file():
        raise MissingExtraError(
            f"--format web needs onnxruntime-web {ORT_WEB_VERSION} from the npm registry (once, then offline); "
            f"with network and npm run: {fill_command()}"
        )
    if _integrity(tgz) != ORT_WEB_INTEGRITY:
        raise MissingExtraError(
            f"{tgz} does not match npm's integrity for onnxruntime-web {ORT_WEB_VERSION}; delete it and run: {fill_command()}"
        )
    return tgz


def _vendor_ort(dst: Path) -> None:
    """Copy the runtime's three files into ``dst/ort`` and write them as a script for file:// pages."""
    ort = dst / "ort"
    ort.mkdir()
    with tarfile.open(ort_web_package(), "r:gz") as tar:
        for name in _ORT_FILES:
            src = tar.extractfile(f"package/dist/{name}")
            if src is None:  # a directory or link where npm's package has a file: not the package we checked
                raise MissingExtraError(
                    f"{ort_web_package()} has no file package/dist/{name}; delete it and export again to fetch it anew"
                )
            (ort / name).write_bytes(src.read())
    wasm = base64.b64encode((ort / _ORT_FILES[2]).read_bytes()).decode()
    glue = (ort / _ORT_FILES[1]).read_text("utf-8")
    (ort / "ort-wasm-binary.js").write_text(
        f"window.ORT_WASM_B64 = {json.dumps(wasm)};\nwindow.ORT_MJS_TEXT = {json.dumps(glue)};\n", "utf-8"
    )


def read_web(path: Path) -> dict[str, Any]:
    """graft's document from a web folder's ``config.js``."""
    text = (path / "config.js").read_text("utf-8")
    return dict(json.loads(text.split("=", 1)[1].strip().rstrip(";"))["document"])


def _page_config(job: ExportJob, doc: dict[str, Any]) -> dict[str, Any]:
    """What the page needs: the crop geometry, classes and thresholds (graft serve's), and the full document."""
    pre = job.pre
    return {
        "classes": list(job.spec.classes),
        "input_size": list(pre.input_size),
        "resize_size": pre.resize_size,
        "crop_mode": pre.crop_mode,
        "ood_threshold": job.spec.ood_threshold,
        "thresholds": list(job.spec.thresholds),
        "metrics": doc.get("metrics", {}),
        "backbone": job.spec.backbone.get("name") or job.spec.architecture,
        "ort_version": ORT_WEB_VERSION,
        "document": doc,
    }


@register_format(
    "web",
    suffix="",
    extra="",
    requires=("onnxruntime",),
    verified_by="running",
    int8="the ONNX export's calibrated QDQ int8 graph (onnxruntime-web runs it)",
    reader=read_web,
)
def write_web(job: ExportJob, dst: Path, int8: bool) -> Built:
    from graft.predict.onnx import onnx_session

    dst.mkdir()
    _vendor_ort(dst)
    src = job.onnx_file(pixels=True, int8=int8)
    shutil.copyfile(src, dst / "model.onnx")
    quant = "int8-static" if int8 else None
    doc = metadata_document(job.spec, "web", quantization=quant)
    (dst / "config.js").write_text(f"window.GRAFT_CONFIG = {json.dumps(_page_config(job, doc))};\n", "utf-8")
    model_b64 = base64.b64encode(src.read_bytes()).decode()
    (dst / "model.js").write_text(f"window.GRAFT_MODEL_B64 = {json.dumps(model_b64)};\n", "utf-8")
    assets = resources.files("graft.export") / "web_assets"
    for name in ("index.html", "graft-web.js"):
        (dst / name).write_text(assets.joinpath(name).read_text("utf-8"), "utf-8")
    sess = onnx_session(str(dst / "model.onnx"), None)

    def predict(batch: Any) -> Any:  # the page's graph, in ONNX Runtime (the browser check is the test's)
        return on_pixels(lambda px: sess.run(["probabilities"], {"input": px})[0], batch, job.pre)

    return Built(dst, read_web(dst), predict, quantization=quant)
