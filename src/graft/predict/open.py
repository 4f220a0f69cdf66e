"""The one way to open a model for prediction: a model folder, a run folder or an ``.onnx`` file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from graft.exceptions import ExportError, ModelFileError
from graft.predict.base import Predictor
from graft.validation import check_choice

__all__ = ["BACKENDS", "is_onnx_file", "open_predictor"]

BACKENDS = ("auto", "onnx", "torch")
log = logging.getLogger("graft")


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True for an exported ONNX file (by suffix, or any regular file: model folders are folders)."""
    p = Path(path)
    return p.suffix.lower() == ".onnx" or p.is_file()


def open_predictor(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    device: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    fallback: bool = True,
    **options: Any,
) -> Predictor:
    """Open ``path`` behind the :class:`Predictor` interface.

    Args:
        path: exported ``.onnx`` file, model directory (``RUN_DIR/model``) or run directory.
        backend: ``auto`` (an .onnx file on ONNX Runtime, a model folder on PyTorch),
            ``onnx`` (a model folder is exported once into the ONNX cache; several times
            faster for single images on CPU) or ``torch``.
        device: ``auto``, ``cpu`` or ``cuda`` (PyTorch only).
        precision: backbone precision for PyTorch (None: what the model was trained with).
        threads: intra-op threads of the runtime (None: its default).
        fallback: with ``onnx`` on a model folder, fall back to PyTorch if the export fails.
        **options: passed to the predictor (``batch_size``, ``max_pixels``, ``spin``, ``decode_workers``...).

    Raises:
        ModelFileError: not a readable graft model, an .onnx file asked to run on PyTorch, or a
            network that answers NaN (checked on a blank image when opened).
    """
    check_choice("backend", backend, BACKENDS, "open_predictor")
    if is_onnx_file(path):
        if backend == "torch":
            raise ModelFileError(
                f"{path} is an ONNX file; it can only run on ONNX Runtime (use --backend onnx or auto)"
            )
        from graft.predict.onnx import OnnxPredictor

        return OnnxPredictor(path, threads=threads, **options).check()
    if backend == "onnx":
        try:
            return _onnx_of_model_dir(path, threads=threads, **options).check()
        except ModelFileError:
            raise
        except Exception as e:  # noqa: BLE001 - any export failure: predict with PyTorch instead
            if not fallback:
                raise
            log.warning("ONNX export of %s failed (%s); using PyTorch", path, e)
    return _torch_predictor(path, device=device, precision=precision, threads=threads, **options).check()


def _torch_predictor(
    path: str | os.PathLike, *, device: str, precision: str | None, threads: int | None, **options: Any
) -> Predictor:
    import torch

    from graft.artifact.model_dir import load_model
    from graft.config import resolve_device
    from graft.features.options import EmbedOptions
    from graft.predict.torch import TorchPredictor

    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    lm = load_model(path, device=dev)
    params = lm.spec.training.get("params", {})
    prec = precision or (params.get("precision") if isinstance(params, dict) else None) or "auto"
    kw = {k: v for k, v in options.items() if k in {"batch_size", "num_workers", "cache_dir", "use_cache"}}
    pred = TorchPredictor(lm.net, lm.spec, EmbedOptions(device=dev, precision=str(prec), **kw))
    pred.source = str(lm.path)
    return pred


def _onnx_of_model_dir(path: str | os.PathLike, *, threads: int | None, **options: Any) -> Predictor:
    """Export a model folder once into the ONNX cache (checked against PyTorch), then open it.

    A damaged cached export is rebuilt once (:func:`graft.features.onnx_cache.load_or_build`).
    """
    import numpy as np

    from graft.artifact.model_dir import load_model, weights_digest
    from graft.artifact.onnx_write import write_onnx
    from graft.features import onnx_cache
    from graft.predict.onnx import OnnxPredictor
    from graft.predict.torch import TorchPredictor

    key = weights_digest(path)[:32]
    lm = load_model(path, device="cpu")

    def build(tmp: Path) -> None:
        log.info("exporting %s to ONNX: %s", lm.path, tmp)
        write_onnx(lm.net, lm.spec, tmp)

    def load(onnx_path: Path) -> OnnxPredictor:
        pred = OnnxPredictor(onnx_path, threads=threads, **options)
        pred.source = str(lm.path)
        x = np.random.default_rng(0).standard_normal((2, 3, *lm.spec.preprocessing.input_size)).astype(np.float32)
        diff = float(np.abs(pred.logits(x) - TorchPredictor(lm.net, lm.spec).logits(x)).max())
        if not np.isfinite(diff) or diff > 1e-3:
            raise ExportError(f"the ONNX export of {lm.path} differs from PyTorch (max |logit diff| {diff:.2e})")
        return pred

    return onnx_cache.load_or_build(key, build, load)
