"""Embedding runtime: decode, preprocess and run the frozen backbone, fast.

Decoding and resizing run in DataLoader workers so they overlap with the network;
JPEGs decode at reduced scale when the target size allows it, and workers hand over
uint8 crops (4x less to move than float32) that the main process normalises. The
network runs on the engine chosen per machine (see :mod:`graft.features.engines`):
ONNX Runtime or PyTorch, in the precision :func:`choose_precision` and a cached
micro-benchmark pick.
"""

from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graft.data.decode import load_image
from graft.data.records import SkippedFile
from graft.exceptions import ImageDecodeError, ModelFileError, WorkerTimeoutError
from graft.features.autotune import cpu_supports_fast_bf16, resolve_cpu_auto
from graft.features.engines import Engine, build_engine
from graft.features.fingerprint import fingerprint
from graft.features.options import EmbedOptions
from graft.heap import malloc_trim
from graft.transforms.eval import Preprocessing

__all__ = [
    "Embedder",
    "ImageArrayDataset",
    "choose_precision",
    "cpu_supports_fast_bf16",
    "default_num_workers",
    "collate_skip_failed",
    "EmbedResult",
    "WORKER_TIMEOUT_S",
    "batches",
    "make_loader",
]

ProgressFn = Callable[[int], None]

WORKER_TIMEOUT_S = float(os.environ.get("GRAFT_WORKER_TIMEOUT", "600"))
"""Seconds a decoding worker may take for one batch before graft gives up with an error."""


def make_loader(dataset: Dataset, *, num_workers: int, **kwargs: Any) -> DataLoader:
    """A DataLoader whose workers are forked safely and can never hang silently.

    Before forking, the garbage collector runs in this process: a worker inheriting
    unreachable objects (an old ONNX Runtime session) could otherwise run their
    finalisers itself and deadlock inside the native library. A stuck worker then
    becomes a :class:`WorkerTimeoutError` after :data:`WORKER_TIMEOUT_S` (see :func:`batches`).
    """
    if num_workers:
        gc.collect()
    timeout = WORKER_TIMEOUT_S if num_workers else 0
    return DataLoader(dataset, num_workers=num_workers, timeout=timeout, **kwargs)


def batches(loader: DataLoader) -> Iterator[Any]:
    """Iterate ``loader``, turning a worker timeout into a one-line :class:`WorkerTimeoutError`."""
    try:
        yield from loader
    except RuntimeError as e:
        if "timed out" not in str(e):
            raise
        raise WorkerTimeoutError(
            f"a decoding worker gave no batch for {loader.timeout:g} s ({e}); it is stuck, or an image takes "
            "that long to decode. Run again with --workers 0 to decode in the main process, or raise "
            "GRAFT_WORKER_TIMEOUT"
        ) from None


def choose_precision(precision: str, device: str) -> str:
    """Resolve ``auto|fp32|bf16|fp16`` for a device.

    auto: bf16 on CPUs with bf16 units, bf16 on CUDA GPUs that support it (else fp16),
    fp32 everywhere else.
    """
    from graft.validation import invalid_parameter

    given = precision
    precision = (precision or "auto").lower() if isinstance(precision, (str, type(None))) else precision
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise invalid_parameter("precision", "choose_precision", "one of 'auto', 'fp32', 'bf16', 'fp16'", given)
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
        kwargs: dict[str, Any] = {"draft_size": self.draft_size}
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
        idx = torch.zeros(0, dtype=torch.long)
        batch = None
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
        options: where and how it runs (default: on the CPU, the other defaults of
            :class:`~graft.features.options.EmbedOptions`); ``device`` is ``cpu``, ``cuda``...
            (resolved, not ``auto``); ``precision`` ``auto|fp32|bf16|fp16`` (see
            :func:`choose_precision`; on CPUs with bf16 units ``auto`` keeps fp32 when a
            micro-benchmark finds it faster); ``batch_size`` None: 64 on CUDA, 16 on the CPU;
            ``num_workers``: decoder processes (0 decodes in this process); ``max_pixels``:
            decompression-bomb guard passed to the decoder. The cache fields are not used here.
        spatial: return the flattened feature map instead of pooled features.
        taps: block stages whose pooled outputs precede the final features (:mod:`graft.backbones.taps`).
        weights_key: returns a fingerprint of the weights (keys the ONNX export cache).
        expected_images: images this embedder will run, where known (a small first job
            skips the bf16 measurement; :data:`graft.features.autotune.MEASURE_MIN_IMAGES`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        options: EmbedOptions | None = None,
        *,
        spatial: bool = False,
        taps: Sequence[int] = (),
        weights_key: Callable[[], str] | None = None,
        expected_images: int | None = None,
    ) -> None:
        opts = EmbedOptions(device="cpu") if options is None else options
        device = opts.device
        precision = opts.precision
        self.device = device
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.input_size = (int(preprocessing.input_size[0]), int(preprocessing.input_size[1]))
        # A partial over the model, not a bound method: a bound method stored on self is a
        # reference cycle, which keeps the ONNX Runtime session alive until the garbage
        # collector runs, possibly inside a forked DataLoader worker (a deadlock).
        self._key = weights_key or functools.partial(fingerprint, self.model)
        if (precision or "auto").lower() == "auto" and not device.startswith("cuda"):
            choose_precision(precision, device)  # validates
            self.precision = resolve_cpu_auto(self.model, self.input_size, self._key, expected_images)
        else:
            self.precision = choose_precision(precision, device)
        # CPU: 16, because ONNX Runtime ran Lite0 at 288 px as fast in batches of 8, 16 or 32
        # (114-120 img/s on 2 cores) while its working memory grows with the batch (356 vs 607 MiB).
        self.batch_size = opts.batch_size or (64 if device.startswith("cuda") else 16)
        self.num_workers = default_num_workers() if opts.num_workers is None else opts.num_workers
        self.spatial = spatial
        self.taps = tuple(int(t) for t in taps)
        self.max_pixels = opts.max_pixels
        self._engine: Engine | None = None
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = mean / std

    def engine(self, n_images: int | None = None) -> Engine:
        """The engine (built on first use; ``n_images`` lets small jobs skip an ONNX export)."""
        if self._engine is None:
            self._engine = build_engine(
                self.model,
                self.input_size,
                device=self.device,
                precision=self.precision,
                spatial=self.spatial,
                taps=self.taps,
                n_images=n_images,
                key=self._key,
            )
        return self._engine

    def close(self) -> None:
        """Drop the engine (and its ONNX Runtime session) now, and hand the freed heap back to the OS."""
        self._engine = None
        malloc_trim()

    @property
    def runtime(self) -> str:
        """What runs the network, e.g. ``onnxruntime-fp32`` or ``torch-bf16-channels_last``."""
        return getattr(self._engine, "label", "not built yet")

    def normalize(self, batch: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
        """uint8 (B, H, W, 3) crops -> normalised float32 (B, 3, H, W), in the memory layout asked for.

        ``channels_last=False`` writes NCHW-contiguous floats in one pass: converting
        channels-last floats afterwards (what ONNX Runtime needs) cost three times as long.
        """
        if channels_last:
            x = batch.permute(0, 3, 1, 2).float()
        else:
            x = torch.empty((batch.shape[0], batch.shape[3], batch.shape[1], batch.shape[2]), dtype=torch.float32)
            x.copy_(batch.permute(0, 3, 1, 2))
        return x.mul_(self._scale).sub_(self._shift)

    def forward(self, batch: torch.Tensor, *, n_images: int | None = None) -> torch.Tensor:
        """Features of a batch, as float32 on the CPU.

        Args:
            batch: normalised float (B, 3, H, W), or uint8 (B, H, W, 3) crops.
        """
        engine = self.engine(len(batch) if n_images is None else n_images)
        if batch.dtype == torch.uint8:
            batch = self.normalize(batch, channels_last=engine.channels_last)
        return engine(batch)

    def _forward_padded(self, batch: torch.Tensor, n_images: int, pad_to: int) -> torch.Tensor:
        """:meth:`forward` on ``batch`` topped up to ``pad_to`` rows (copies of its last); only its own rows' features.

        On CUDA every new batch shape costs seconds: cuDNN plans (and compiles) its kernels
        per shape, 2.6-3.0 s each on an H100, where the rows added cost milliseconds. Padding
        each file list's last, short batch keeps stage 1 at one shape instead of three.
        """
        n = len(batch)
        if n < pad_to:
            batch = torch.cat([batch, batch[-1:].expand(pad_to - n, *batch.shape[1:])])
        return self.forward(batch, n_images=n_images)[:n]

    def _loader(self, paths: Sequence[os.PathLike | str], transform: Callable | None, workers: int) -> Any:
        """Batches of decoded crops of ``paths`` (uint8 by default; normalised later, in bulk)."""
        transform = transform or self.preprocessing.crop
        ds = ImageArrayDataset(paths, transform, self.preprocessing.decode_size, self.max_pixels)
        return make_loader(
            ds,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate_skip_failed,
            pin_memory=self.device.startswith("cuda"),
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )

    def _finite(self, out: np.ndarray, ids: np.ndarray, paths: Sequence[os.PathLike | str]) -> np.ndarray:
        """``out``, unless the network gave NaN or infinity: a damaged network, never features to use or cache."""
        bad = np.flatnonzero(~np.isfinite(out).all(1))
        if not len(bad):
            return out
        hint = ", or embed with --precision fp32 (fp16 can overflow)" if self.precision == "fp16" else ""
        raise ModelFileError(
            f"the backbone gives non-finite features (NaN or infinity) for {paths[int(ids[bad[0]])]}: its weights "
            f"are damaged (a model folder or --weights file holding NaN values); use intact weights{hint}"
        )

    def _features(
        self, batch: torch.Tensor, ids: np.ndarray, paths: Sequence[os.PathLike | str], shape: tuple[int, int]
    ) -> np.ndarray:
        """One batch's features, checked finite (``shape``: the job's image count and the padded batch size)."""
        return self._finite(self._forward_padded(batch, *shape).numpy(), ids, paths)

    def embed_paths(
        self,
        paths: Sequence[os.PathLike | str],
        *,
        transform: Callable | None = None,
        progress: ProgressFn | None = None,
        on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
        on_mirror: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ) -> EmbedResult:
        """Embed image files; undecodable files are returned in ``failed``, not raised.

        Args:
            paths: image files.
            transform: PIL -> float32 CHW array (default: the eval preprocessing).
            progress: called with the number of images done after each batch.
            on_batch: called with (input positions, features) after each batch, so a
                caller can write features incrementally (memory stays flat).
            on_mirror: with the default preprocessing only: each batch of crops is also
                embedded mirrored left-right (feature view 1, see
                :func:`~graft.transforms.train.build_feature_view_transform`) and this is
                called with (input positions, those features). The mirror view then costs
                no second decode, which on large photos or PNG scans is most of its cost.
        """
        if on_mirror is not None and transform is not None:
            raise ValueError("on_mirror mirrors the default crops; it cannot be combined with a transform")
        workers = self.num_workers if len(paths) > self.batch_size else 0
        loader = self._loader(paths, transform, workers)
        engine_n = len(paths)
        pad_to = self.batch_size if self.device.startswith("cuda") else 0  # on a CPU a new shape is cheap
        # Batches arriving from DataLoader workers fragment glibc's heap: without a trim every
        # few batches the main process grew ~0.3 MB per image embedded (2000 images: 1.6 GB
        # peak RSS vs 1.26 GB), so memory was not flat in dataset size.
        trim = malloc_trim if workers else (lambda: None)
        n_batches = 0
        feats: list[np.ndarray] = []
        oks: list[np.ndarray] = []
        failed: list[SkippedFile] = []
        for idx, batch, bad in batches(loader):
            failed.extend(SkippedFile(str(paths[i]), reason) for i, reason in bad)
            if batch is not None:
                ids = idx.numpy()
                out = self._features(batch, ids, paths, (engine_n, pad_to))
                if on_mirror is not None:  # uint8 (B, H, W, 3): flip the width axis
                    on_mirror(ids, self._features(batch.flip(2), ids, paths, (engine_n, pad_to)))
                if on_batch is not None:
                    on_batch(ids, out)
                else:
                    feats.append(out)
                oks.append(ids)
            if progress is not None:
                progress(len(idx) + len(bad))
            n_batches += 1
            if n_batches % 4 == 0:
                trim()
        dim = feats[0].shape[1] if feats else 0
        return EmbedResult(
            features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
            ok_indices=np.concatenate(oks) if oks else np.zeros(0, np.int64),
            failed=failed,
        )
