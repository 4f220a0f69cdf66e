"""Embedding runtime: decode, preprocess and run the frozen backbone, fast.

Decoding and resizing run in DataLoader workers so they overlap with the network;
JPEGs decode at reduced scale when the target size allows it. The network runs
under ``inference_mode`` in the precision chosen per machine (see :func:`choose_precision`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.decode import load_image
from ..data.records import SkippedFile
from ..exceptions import ImageDecodeError
from ..preprocess import Preprocessing

__all__ = [
    "Embedder",
    "ImageArrayDataset",
    "choose_precision",
    "cpu_supports_fast_bf16",
    "default_num_workers",
    "collate_skip_failed",
]

ProgressFn = Callable[[int], None]


def cpu_supports_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix units (AVX512-BF16 or AMX).

    Without them bf16 autocast is emulated and several times *slower* than fp32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(precision: str, device: str) -> str:
    """Resolve ``auto|fp32|bf16|fp16`` for a device.

    auto: bf16 on CPUs with bf16 units, bf16 on CUDA GPUs that support it (else fp16),
    fp32 everywhere else.
    """
    precision = (precision or "auto").lower()
    if precision not in {"auto", "fp32", "bf16", "fp16"}:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_fast_bf16() else "fp32"


def default_num_workers() -> int:
    """Decoder processes: leave the network most cores, but always overlap decoding."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, n // 2))


class ImageArrayDataset(Dataset):
    """Paths -> preprocessed float32 CHW arrays; decode failures become ``None`` items.

    Args:
        paths: image files.
        transform: PIL image -> float32 CHW numpy array.
        draft_size: passed to the decoder (JPEG DCT-domain downscale).
        max_pixels: decompression-bomb guard.
    """

    def __init__(
        self,
        paths: Sequence[os.PathLike | str],
        transform: Callable,
        draft_size: tuple[int, int] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.draft_size = draft_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        kwargs = {"draft_size": self.draft_size}
        if self.max_pixels:
            kwargs["max_pixels"] = self.max_pixels
        try:
            img = load_image(self.paths[i], **kwargs)
            return i, self.transform(img), None
        except ImageDecodeError as e:
            return i, None, e.reason
        except Exception as e:  # noqa: BLE001 - a bad file must not end a long run
            return i, None, f"could not be read: {type(e).__name__}: {e}"


def collate_skip_failed(items):
    """Stack the good items; return failures separately as (index, reason)."""
    good = [(i, x) for i, x, err in items if err is None]
    bad = [(i, err) for i, x, err in items if err is not None]
    if good:
        idx = torch.tensor([i for i, _ in good], dtype=torch.long)
        arrs = [x for _, x in good]
        batch = torch.from_numpy(np.stack(arrs)) if isinstance(arrs[0], np.ndarray) else torch.stack(arrs)
    else:
        idx, batch = torch.zeros(0, dtype=torch.long), None
    return idx, batch, bad


@dataclass
class EmbedResult:
    """Output of :meth:`Embedder.embed_paths`."""

    features: np.ndarray  # (n_ok, dim) float32, rows in the order of ``ok_indices``
    ok_indices: np.ndarray  # positions (into the input paths) that decoded
    failed: list[SkippedFile]


class Embedder:
    """Runs a frozen backbone over image files.

    Args:
        model: a headless timm model (``num_classes=0``) returning pooled features,
            or any module mapping (B, 3, H, W) -> (B, D).
        preprocessing: the eval preprocessing of the backbone.
        device: ``cpu``, ``cuda``...
        precision: ``auto|fp32|bf16|fp16`` (resolved by :func:`choose_precision`).
        batch_size: images per forward pass.
        num_workers: decoder processes (0 decodes in this process).
        spatial: return the flattened feature map instead of pooled features.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        *,
        device: str = "cpu",
        precision: str = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
        spatial: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        self.device = device
        self.precision = choose_precision(precision, device)
        self.preprocessing = preprocessing
        self.batch_size = batch_size or (64 if device.startswith("cuda") else 32)
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.spatial = spatial
        self.max_pixels = max_pixels
        self.model = model.eval().to(device)
        if self.precision != "fp32" or device.startswith("cuda"):
            # channels-last pays off with bf16/fp16 kernels and on GPUs.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = self.precision != "fp32" or device.startswith("cuda")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of a preprocessed batch, as float32 on the CPU."""
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(dev_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            if self.spatial:
                out = self.model.forward_features(x).flatten(1)
            else:
                out = self.model(x)
        return out.float().cpu()

    def embed_paths(
        self,
        paths: Sequence[os.PathLike | str],
        *,
        transform: Callable | None = None,
        progress: ProgressFn | None = None,
        on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> EmbedResult:
        """Embed image files; undecodable files are returned in ``failed``, not raised.

        Args:
            paths: image files.
            transform: PIL -> float32 CHW array (default: the eval preprocessing).
            progress: called with the number of images done after each batch.
            on_batch: called with (input positions, features) after each batch, so a
                caller can write features incrementally (memory stays flat).
        """
        transform = transform or self.preprocessing
        ds = ImageArrayDataset(paths, transform, self.preprocessing.decode_size, self.max_pixels)
        workers = self.num_workers if len(paths) > self.batch_size else 0
        loader = DataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate_skip_failed,
            pin_memory=self.device.startswith("cuda"),
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        feats: list[np.ndarray] = []
        oks: list[np.ndarray] = []
        failed: list[SkippedFile] = []
        for idx, batch, bad in loader:
            failed.extend(SkippedFile(str(paths[i]), reason) for i, reason in bad)
            if batch is not None:
                out = self.forward(batch).numpy()
                ids = idx.numpy()
                if on_batch is not None:
                    on_batch(ids, out)
                else:
                    feats.append(out)
                oks.append(ids)
            if progress is not None:
                progress(len(idx) + len(bad))
        dim = feats[0].shape[1] if feats else 0
        return EmbedResult(
            features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
            ok_indices=np.concatenate(oks) if oks else np.zeros(0, np.int64),
            failed=failed,
        )
