"""Images and measurements used to verify an export: parity, accuracy, size and speed.

Everything here is torch-free, so the ONNX side of each check runs exactly as a
user's deployment would; the PyTorch reference comes from :class:`graft.predict.torch.TorchPredictor`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from graft.artifact.run_folder import RunFolder
from graft.data.decode import load_image
from graft.exceptions import ExportError, ImageDecodeError
from graft.transforms.eval import Preprocessing

__all__ = [
    "CheckImages",
    "training_data_dir",
    "val_split",
    "calibration_paths",
    "choose_check_images",
    "load_batch",
    "latency_ms",
    "accuracy",
    "label_set_agreement",
]


@dataclass
class CheckImages:
    """Preprocessed images for a parity check and where they came from."""

    batch: np.ndarray  # (N, 3, H, W) float32
    source: str  # "given", "training data <dir>" or "synthetic"
    paths: list[str]


def training_data_dir(model_dir: Path, config: Mapping[str, Any]) -> Path | None:
    """The dataset the model was trained on, if recorded (run folder or config) and still present."""
    run = RunFolder.of_model(model_dir)
    found = run.data_dir() if run is not None else None
    if found is not None:
        return found
    c = config.get("training", {}).get("data_dir")
    return Path(c) if isinstance(c, str) and Path(c).is_dir() else None


def val_split(model_dir: Path, classes: Sequence[str], data_dir: Path | None) -> tuple[list[str], np.ndarray] | None:
    """(paths, labels) of the validation split: the run folder's record, else ``val/`` of the data."""
    run = RunFolder.of_model(model_dir)
    recorded = run.val_split(classes) if run is not None else None
    if recorded is not None:
        return recorded[0], np.asarray(recorded[1], dtype=np.int64)
    if data_dir is None:
        return None
    from graft.data.scan import scan_split
    from graft.exceptions import DataError

    try:
        recs, _, _ = scan_split(data_dir, "val", list(classes), warn=lambda _m: None)
    except DataError:
        return None
    return [str(r.path) for r in recs], np.asarray([r.label for r in recs], dtype=np.int64)


def calibration_paths(data_dir: Path | None, exclude: Sequence[str], limit: int = 64) -> list[str]:
    """Up to ``limit`` training images (never validation ones), spread evenly over the folder."""
    if data_dir is None:
        return []
    from graft.data.files import walk_folder

    images, _ = walk_folder(data_dir)
    ex = {os.path.abspath(p) for p in exclude}
    held_out = {"val", "valid", "validation", "test", "testing"}
    train = [
        str(p)
        for p in images
        if os.path.abspath(p) not in ex and not held_out & {s.lower() for s in Path(p).relative_to(data_dir).parts[:-1]}
    ]
    if len(train) <= limit:
        return train
    idx = np.linspace(0, len(train) - 1, limit).round().astype(int)
    return [train[i] for i in idx]


def load_batch(paths: Sequence[str], pre: Preprocessing) -> tuple[np.ndarray, list[str]]:
    """Decode and preprocess image files exactly as prediction does; unreadable ones are dropped."""
    arrs = []
    ok = []
    for p in paths:
        try:
            arrs.append(pre(load_image(p, draft_size=pre.decode_size)))
            ok.append(str(p))
        except ImageDecodeError:
            continue
    h, w = pre.input_size
    return (np.stack(arrs) if arrs else np.zeros((0, 3, h, w), np.float32)), ok


def _synthetic(pre: Preprocessing, n: int = 6) -> np.ndarray:
    """Smooth gradients and noise: a weak check, used only when no real image is available."""
    rng = np.random.default_rng(0)
    h, w = pre.input_size
    imgs = []
    for _ in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        base = rng.integers(0, 256, 3)
        arr = (base + 120 * np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) + rng.normal(0, 20, (h, w, 3))) % 256
        imgs.append(pre(Image.fromarray(arr.astype(np.uint8), "RGB")))
    return np.stack(imgs)


def choose_check_images(
    pre: Preprocessing, check_images: Sequence[str | os.PathLike] | None, data_dir: Path | None, n: int = 8
) -> CheckImages:
    """Images for the parity check: the given ones, else training data, else synthetic."""
    if check_images:
        from graft.data.files import collect_image_paths

        files, _ = collect_image_paths([str(p) for p in check_images])
        batch, ok = load_batch([str(f) for f in files][: max(n, 1) * 4], pre)
        if len(batch) == 0:
            raise ExportError(
                f"none of the --check-images ({', '.join(map(str, check_images))[:200]}) could be read as an image"
            )
        return CheckImages(batch, "given", ok)
    if data_dir is not None:
        from graft.data.files import walk_folder

        images, _ = walk_folder(data_dir)
        if images:
            idx = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
            batch, ok = load_batch([str(images[i]) for i in sorted(set(idx))], pre)
            if len(batch):
                return CheckImages(batch, f"training data {data_dir}", ok)
    return CheckImages(_synthetic(pre), "synthetic", [])


def latency_ms(session: Any, input_name: str, shape: tuple[int, ...], repeats: int = 20) -> float:
    """Median single-batch latency of an ONNX Runtime session, in milliseconds."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        session.run(None, {input_name: x})
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {input_name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def label_set_agreement(
    ref_logits: np.ndarray, got_logits: np.ndarray, thresholds: Sequence[float], margin: float = 1e-4
) -> tuple[float, bool]:
    """(share of images with the same label set, whether every difference lies on a threshold) of a
    multi-label model's two runs (sigmoid probabilities ``>=`` the per-label thresholds).

    A probability within ``margin`` of its threshold may fall either side by float rounding;
    any other difference means the export is wrong.
    """
    from graft.predict.results import sigmoid

    t = np.asarray(thresholds, np.float64)
    p_ref, p_got = sigmoid(ref_logits).astype(np.float64), sigmoid(got_logits).astype(np.float64)
    differ = (p_ref >= t) != (p_got >= t)
    if not len(differ):
        return 1.0, True
    return float((~differ.any(1)).mean()), bool((np.abs(p_ref - t)[differ] <= margin).all())
