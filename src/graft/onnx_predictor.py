"""Lightweight inference on an exported ``.onnx`` file: numpy + Pillow + ONNX Runtime.

This module never imports torch, so it can be embedded in any service. The exported
file carries everything needed to predict (class names and the exact evaluation
preprocessing, in the ONNX metadata written by :func:`graft.export.export_onnx`),
and preprocessing runs through the same :class:`~graft.preprocess.Preprocessing`
code as training, so both paths give the same answers.

Example:
    >>> from graft.onnx_predictor import OnnxClassifier
    >>> clf = OnnxClassifier("model.onnx")
    >>> clf.predict(["bee.jpg"], top_k=2)
    [{'path': 'bee.jpg', 'label': 'bees', 'probability': 0.97, 'top_k': [...]}]
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .data.decode import DEFAULT_MAX_PIXELS, load_image
from .data.records import SkippedFile
from .exceptions import ImageDecodeError, ModelFileError
from .preprocess import Preprocessing

__all__ = ["METADATA_KEY", "ONNX_FORMAT", "OnnxClassifier", "read_onnx_metadata", "softmax", "top_k_results"]

METADATA_KEY = "graft_config"
"""Key of the JSON document in the ONNX ``metadata_props``."""
ONNX_FORMAT = "graft-onnx"
ONNX_FORMAT_VERSION = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for accuracy, returned as float32."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def top_k_results(probs: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """``{label, probability, top_k: [...]}`` per row, in the shape ``Classifier.predict`` uses."""
    k = max(1, min(int(top_k), len(classes)))
    out = []
    for p in probs:
        order = np.argsort(-p, kind="stable")[:k]
        out.append({
            "label": classes[int(order[0])],
            "probability": float(p[order[0]]),
            "top_k": [{"label": classes[int(i)], "probability": float(p[i])} for i in order],
        })
    return out


def _session(path: str, threads: int | None, providers: Sequence[str] | None, spin: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not spin:
        # Idle ORT threads otherwise busy-wait; a server needs those cycles for decoding.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's warnings are noise for users
    if threads:
        so.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(path, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelFileError(f"{path}: ONNX Runtime cannot load this file ({type(e).__name__}: {e})") from None


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The graft config stored in an exported ONNX file (classes, preprocessing, backbone...).

    Raises:
        ModelFileError: the file is missing, not ONNX, or was not exported by graft.
    """
    return _read_meta(str(path), _session(_check_file(path), 1, None).get_modelmeta().custom_metadata_map)


def _check_file(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"ONNX model {p} does not exist; export one with: graft export MODEL --out {p.name}")
    return str(p)


def _read_meta(path: str, meta: dict[str, str]) -> dict[str, Any]:
    raw = meta.get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not exported by graft, so its classes and "
            "preprocessing are unknown. Re-export it with: graft export MODEL --out FILE.onnx"
        )
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise ModelFileError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from None
    if cfg.get("format") != ONNX_FORMAT or not cfg.get("classes") or "preprocessing" not in cfg:
        raise ModelFileError(f"{path}: metadata '{METADATA_KEY}' is not a {ONNX_FORMAT} document")
    if int(cfg.get("format_version", 0)) > ONNX_FORMAT_VERSION:
        raise ModelFileError(f"{path} was exported by a newer graft; upgrade graft to use it")
    return cfg


class OnnxClassifier:
    """Predict with an exported ONNX model, without torch.

    Args:
        path: ``.onnx`` file written by ``graft export``.
        batch_size: images per ONNX Runtime call.
        threads: ONNX Runtime intra-op threads (None: one per physical core).
        decode_workers: threads decoding and preprocessing images (Pillow releases the GIL).
        max_pixels: decompression-bomb guard for decoded images.
        providers: ONNX Runtime execution providers (default CPU).
        spin: let idle ONNX Runtime threads busy-wait (lowest latency when the CPU is otherwise idle).

    Attributes:
        classes_, preprocessing_, config_ (the stored metadata), backbone_info_, metrics_,
        input_name, output_names, path_.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        decode_workers: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        providers: Sequence[str] | None = None,
        spin: bool = True,
    ) -> None:
        self.path_ = Path(_check_file(path))
        self.session = _session(str(self.path_), threads, providers, spin)
        self.config_ = _read_meta(str(self.path_), self.session.get_modelmeta().custom_metadata_map)
        self.classes_: list[str] = list(self.config_["classes"])
        self.preprocessing_ = Preprocessing.from_dict(self.config_["preprocessing"])
        self.backbone_info_: dict[str, Any] = dict(self.config_.get("backbone", {}))
        self.metrics_: dict[str, Any] = dict(self.config_.get("metrics", {}))
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = max_pixels
        n = decode_workers if decode_workers is not None else min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="graft-decode") if n > 1 else None

    # ------------------------------------------------------------------ arrays
    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed float32 batch of shape (N, 3, H, W)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(["logits"] if "logits" in self.output_names else None, {self.input_name: x})[0]

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, n_classes) for a preprocessed batch."""
        if len(batch) == 0:
            return np.zeros((0, len(self.classes_)), np.float32)
        return softmax(self.logits(batch))

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """PIL image -> float32 CHW network input (the training-time eval transform)."""
        return self.preprocessing_(img)

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax probabilities for decoded PIL images."""
        arrs = [self.preprocess(im) for im in images]
        return self._run_batched(arrs)

    def _run_batched(self, arrs: list[np.ndarray]) -> np.ndarray:
        outs = [self.predict_arrays(np.stack(arrs[i:i + self.batch_size])) for i in range(0, len(arrs), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes_)), np.float32)

    # ------------------------------------------------------------------ files
    def _load(self, path: str) -> tuple[np.ndarray | None, str | None]:
        kw: dict[str, Any] = {"draft_size": self.preprocessing_.decode_size}
        if self.max_pixels:
            kw["max_pixels"] = self.max_pixels
        try:
            return self.preprocess(load_image(path, **kw)), None
        except ImageDecodeError as e:
            return None, e.reason
        except Exception as e:  # noqa: BLE001 - one bad file must not end a batch
            return None, f"could not be read: {type(e).__name__}: {e}"

    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
        """Class probabilities for image files.

        Returns:
            (probs of the readable files, their paths, the unreadable files with reasons)
        """
        names = [str(p) for p in paths]
        loaded = list(self._pool.map(self._load, names)) if self._pool and len(names) > 1 else [self._load(n) for n in names]
        arrs, ok, failed = [], [], []
        for name, (arr, err) in zip(names, loaded):
            if arr is None:
                failed.append(SkippedFile(name, err or "unreadable"))
            else:
                arrs.append(arr)
                ok.append(name)
        return self._run_batched(arrs), ok, failed

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 1) -> list[dict[str, Any]]:
        """Top-k labels for image files, folders or globs (same output as ``Classifier.predict``).

        Returns:
            One dict per input image: ``path``, ``label``, ``probability``, ``top_k``
            (list of {label, probability}); unreadable files get ``error`` instead.
        """
        from .data.files import collect_image_paths

        files, missing = collect_image_paths([str(p) for p in paths])
        probs, ok_paths, failed = self.predict_proba(files)
        results: list[dict[str, Any]] = [
            {"path": path, **r} for path, r in zip(ok_paths, top_k_results(probs, self.classes_, top_k))
        ]
        results.extend({"path": f.path, "error": f.reason} for f in list(missing) + list(failed))
        return results

    def close(self) -> None:
        """Stop the decoding threads (the session is freed with the object)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.path_)!r}, classes={len(self.classes_)})"
