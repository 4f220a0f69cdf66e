"""The model behind the server: ONNX Runtime (preferred) or PyTorch.

An ``.onnx`` file always runs on ONNX Runtime, and torch is never imported. A model
directory is exported once to ONNX (cached under ``$GRAFT_HOME/serve``, keyed by the
weights' hash) because ONNX Runtime is several times faster than eager PyTorch for
single images on CPU; ``backend="torch"`` keeps it on PyTorch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..exceptions import ModelFileError
from ..preprocess import Preprocessing

__all__ = ["BACKENDS", "Backend", "OnnxBackend", "TorchBackend", "open_backend"]

BACKENDS = ("auto", "onnx", "torch")
logger = logging.getLogger("graft.serve")


class Backend(Protocol):
    """What the server needs from a model."""

    name: str
    classes: list[str]
    preprocessing: Preprocessing
    info: dict[str, Any]

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, n_classes) probabilities."""
        ...


class OnnxBackend:
    """ONNX Runtime session of an exported file (torch-free)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, source: str | None = None) -> None:
        from ..onnx_predictor import OnnxClassifier

        # No busy-waiting ORT threads: the event loop and decoders share the cores
        # (measured under contention on 2 cores: single-image p50 ~45 ms vs ~115 ms with spinning).
        self.clf = OnnxClassifier(path, threads=threads, decode_workers=0, spin=False)
        self.classes = self.clf.classes_
        self.preprocessing = self.clf.preprocessing_
        cfg = self.clf.config_
        self.info = {
            "source": source or str(path),
            "onnx": str(path),
            "backbone": cfg.get("backbone", {}),
            "head": cfg.get("head", {}),
            "metrics": cfg.get("metrics", {}),
            "quantization": cfg.get("quantization"),
            "graft_version": cfg.get("graft_version"),
        }

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.clf.predict_arrays(batch)


class TorchBackend:
    """Eager PyTorch on the CPU (or the given device)."""

    name = "torch"

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from ..model import load_model

        if threads:
            torch.set_num_threads(int(threads))
        lm = load_model(model_dir, device=device)
        self.net, self.device = lm.net.eval(), device
        self.classes = lm.classes
        self.preprocessing = lm.preprocessing
        self.info = {
            "source": str(lm.path),
            "backbone": lm.config.get("backbone", {}),
            "head": lm.config.get("head", {}),
            "metrics": {k: v for k, v in lm.config.get("metrics", {}).items() if k not in ("per_class", "confusion_matrix")},
            "quantization": None,
            "graft_version": lm.config.get("versions", {}).get("graft"),
        }

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.net(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)).float()
            return torch.softmax(logits, 1).cpu().numpy()


def _cached_onnx(model_dir: Path) -> Path:
    """Export a model directory once; later starts reuse the file."""
    from ..config import graft_home
    from ..export import export_onnx
    from ..model import CONFIG_NAME, WEIGHTS_NAME, read_config

    cfg = read_config(model_dir)
    mdir = Path(cfg["_dir"])
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update((mdir / name).read_bytes())
    out = graft_home() / "serve" / f"{h.hexdigest()[:24]}.onnx"
    if not out.is_file():
        logger.info("exporting %s to ONNX for serving: %s", mdir, out)
        export_onnx(mdir, out)
    return out


def open_backend(model_path: str | os.PathLike, backend: str = "auto", *, threads: int | None = None) -> Backend:
    """Open ``model_path`` (``.onnx`` file or model directory) with the chosen runtime.

    Args:
        model_path: exported ONNX file, model directory or run directory.
        backend: ``auto`` (ONNX Runtime, falling back to PyTorch if the export fails),
            ``onnx`` or ``torch``.
        threads: intra-op threads for the runtime (None: its default).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    path = Path(model_path)
    if path.suffix.lower() == ".onnx" or path.is_file():
        if backend == "torch":
            raise ModelFileError(f"{path} is an ONNX file; it can only run on ONNX Runtime (use --backend onnx/auto)")
        return OnnxBackend(path, threads=threads)
    if backend == "torch":
        return TorchBackend(path, threads=threads)
    try:
        return OnnxBackend(_cached_onnx(path), threads=threads, source=str(path))
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any export failure: serve with PyTorch instead
        if backend == "onnx":
            raise
        logger.warning("ONNX export for serving failed (%s); serving with PyTorch", e)
        return TorchBackend(path, threads=threads)
