"""Backbone execution engines: eager PyTorch and ONNX Runtime behind one call.

Measured on a 2-core AVX2 CPU (no bf16 units), EfficientNet-Lite0, batch 32:
ONNX Runtime fp32 ran several times faster than eager PyTorch fp32 (channels-last
or not), and bf16 autocast ran about 10x *slower* than fp32 (it is emulated). So:

* CUDA: PyTorch, autocast bf16 (fp16 where bf16 is unsupported), channels-last.
* CPU, fp32: ONNX Runtime (exported once per weights, kept in the one ONNX cache,
  :mod:`graft.features.onnx_cache`); eager PyTorch channels-last when ORT is missing,
  fails to export, disagrees with PyTorch, or the job is too small to pay the export.
* CPU, bf16: PyTorch autocast (where :mod:`graft.features.autotune` measured it faster).

Engines are registered by name (:func:`register_engine`, this file alone); ``GRAFT_RUNTIME=<name>``
(``torch``, ``onnxruntime``) forces one (benchmarks, debugging).
Every engine runs tf_* models with static "same" padding for the fixed input size
(identical outputs, none of the per-call padding arithmetic).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from graft.backbones.surgery import FeatureExtractor, static_same_padding
from graft.features import onnx_cache
from graft.onnxrt import onnx_session

__all__ = [
    "Engine",
    "TorchEngine",
    "OrtEngine",
    "onnxruntime_available",
    "build_engine",
    "build_ort_engine",
    "reuse_engines",
    "ORT_MIN_IMAGES",
    "ENGINES",
    "EngineKind",
    "EngineRequest",
    "by_preference",
    "forced_engine",
    "register_engine",
]

log = logging.getLogger("graft")

#: Below this many images an uncached ONNX export (about 1-2 s) does not pay off.
ORT_MIN_IMAGES = 64


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as good as none
        return False
    return True


# ---------------------------------------------------------------------- engines
class Engine:
    """Runs a network on a normalised float32 NCHW batch; returns float32 CPU features."""

    name = "engine"
    precision = "fp32"
    channels_last = False  # the memory layout the engine wants its input in

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TorchEngine(Engine):
    """Eager PyTorch under ``inference_mode``, optional autocast and channels-last."""

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str,
        precision: str,
        *,
        spatial: bool = False,
        taps: Sequence[int] = (),
        input_size: tuple[int, int] | None = None,
        channels_last: bool = True,
    ) -> None:
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.input_size = input_size
        model = model.eval().to(device)
        self.general = FeatureExtractor(model, spatial, taps)
        fixed = static_same_padding(model, input_size) if input_size else model
        self.fixed = FeatureExtractor(fixed, spatial, taps) if fixed is not model else self.general
        if channels_last:
            # channels-last helps bf16/fp16 kernels, GPUs, and depthwise convs on CPU.
            model.to(memory_format=torch.channels_last)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    @property
    def label(self) -> str:
        return f"torch-{self.precision}" + ("-channels_last" if self.channels_last else "")

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.fixed if self.input_size and tuple(x.shape[-2:]) == tuple(self.input_size) else self.general
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(dev_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            out = net(x)
        return out.float().cpu()


class OrtEngine(Engine):
    """ONNX Runtime (CPU) on an exported copy of the network, fixed input size."""

    name = "onnxruntime"

    def __init__(
        self, onnx_bytes_or_path: bytes | str, input_size: tuple[int, int], threads: int | None = None
    ) -> None:
        self.input_size = tuple(input_size)
        # spin=False: idle ORT threads would spin between batches, taking CPU from the decoders
        # (measured: +10% end to end on 2 busy cores).
        self.session = onnx_session(
            onnx_bytes_or_path, threads or torch.get_num_threads(), spin=False, name="exported backbone"
        )
        self.input_name = self.session.get_inputs()[0].name

    label = "onnxruntime-fp32"

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"this ONNX engine takes {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return torch.from_numpy(self.run_numpy(x.detach().float().cpu().contiguous().numpy()))


def _onnx_cache_key(key: str, input_size: tuple[int, int], spatial: bool, taps: Sequence[int] = ()) -> str:
    """Cache key of the export for this backbone key, input size and output kind."""
    size = (int(input_size[0]), int(input_size[1]))
    kind = f"{spatial}" + (f"|taps{list(taps)}" if taps else "")
    return hashlib.sha1(f"{key}|{size}|{kind}|{torch.__version__}|17".encode()).hexdigest()[:24]


def _export_onnx(module: nn.Module, input_size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter takes ~1 s for Lite0; the dynamo one several times that.
        torch.onnx.export(
            module,
            (torch.zeros(2, 3, *input_size),),
            buf,  # type: ignore[arg-type]  # a BytesIO works
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def build_ort_engine(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    spatial: bool = False,
    taps: Sequence[int] = (),
    key: str | None = None,
    check: bool = True,
) -> OrtEngine:
    """Export ``model`` (static padding) to ONNX, cached by ``key``, and open a session.

    A cached export that no longer opens or no longer matches PyTorch (damaged on disk) is
    rebuilt once, with a warning (:func:`graft.features.onnx_cache.load_or_build`).

    Raises:
        RuntimeError: export failed or ORT disagrees with PyTorch (callers fall back).
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    model = model.eval().to("cpu")
    wrapped = FeatureExtractor(static_same_padding(model, input_size), spatial, taps).eval()

    def load(onnx: bytes | Path) -> OrtEngine:
        engine = OrtEngine(onnx if isinstance(onnx, bytes) else str(onnx), input_size)
        if check:
            x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                ref = wrapped(x).float()
            err = float((engine(x) - ref).abs().max()) / max(float(ref.abs().max()), 1e-6)
            if not math.isfinite(err) or err > 1e-3:
                raise RuntimeError(f"ONNX Runtime output differs from PyTorch (relative error {err:.2e})")
        return engine

    if key is None:
        return load(_export_onnx(wrapped, input_size))

    def build(path: Path) -> None:
        path.write_bytes(_export_onnx(wrapped, input_size))

    return onnx_cache.load_or_build(_onnx_cache_key(key, input_size, spatial, taps), build, load)


def onnx_cached(key: str | None, input_size: tuple[int, int], spatial: bool, taps: Sequence[int] = ()) -> bool:
    return key is not None and onnx_cache.lookup(_onnx_cache_key(key, input_size, spatial, taps)) is not None


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class EngineRequest:
    """What an engine is built for: the network, its input size, where, at which precision, which outputs."""

    model: nn.Module
    input_size: tuple[int, int]
    device: str = "cpu"
    precision: str = "fp32"
    spatial: bool = False
    taps: tuple[int, ...] = ()
    key: str | None = None  # the weights' fingerprint: keys the on-disk ONNX cache


@dataclass(frozen=True)
class EngineKind:
    """A registered engine: the CPU precisions it offers, whether it is installed, when it pays, how to build it."""

    name: str
    precisions: tuple[str, ...]
    build: Callable[[EngineRequest], Engine]
    available: Callable[[], bool]
    pays: Callable[[EngineRequest, int | None], bool]  # worth building for a job of this many images


#: Registered engines by name (:func:`by_preference` orders them). ``GRAFT_RUNTIME=<name>`` forces one.
ENGINES: dict[str, EngineKind] = {}


def register_engine(
    name: str,
    *,
    precisions: tuple[str, ...],
    available: Callable[[], bool] = lambda: True,
    pays: Callable[[EngineRequest, int | None], bool] = lambda _req, _n: True,
) -> Callable[[Callable[[EngineRequest], Engine]], Callable[[EngineRequest], Engine]]:
    """Register ``build(request) -> Engine`` as engine ``name`` (timm's ``register_model``, for runtimes)."""

    def add(build: Callable[[EngineRequest], Engine]) -> Callable[[EngineRequest], Engine]:
        ENGINES[name] = EngineKind(name, precisions, build, available, pays)
        return build

    return add


def by_preference() -> list[EngineKind]:
    """The registered engines in the order a CPU tries them: as registered, eager PyTorch (which always works) last."""
    return [k for k in ENGINES.values() if k.name != "torch"] + [ENGINES["torch"]]


def forced_engine() -> str:
    """The engine ``GRAFT_RUNTIME`` names (empty: none; an unknown name is ignored with a warning)."""
    forced = os.environ.get("GRAFT_RUNTIME", "").strip().lower()
    if forced and forced not in ENGINES:
        log.warning("GRAFT_RUNTIME=%s is not an engine (%s); choosing as usual", forced, ", ".join(ENGINES))
        return ""
    return forced


def _ort_pays(req: EngineRequest, n_images: int | None) -> bool:
    """An uncached export (1-2 s) pays from :data:`ORT_MIN_IMAGES` images; a cached one always."""
    big = n_images is None or n_images >= ORT_MIN_IMAGES
    return big or onnx_cached(req.key, req.input_size, req.spatial, req.taps)


@register_engine("onnxruntime", precisions=("fp32",), available=onnxruntime_available, pays=_ort_pays)
def _onnxruntime(req: EngineRequest) -> Engine:
    return build_ort_engine(req.model, req.input_size, spatial=req.spatial, taps=req.taps, key=req.key)


@register_engine("torch", precisions=("bf16", "fp32"))
def _torch(req: EngineRequest) -> Engine:
    return TorchEngine(
        req.model, req.device, req.precision, spatial=req.spatial, taps=req.taps, input_size=req.input_size
    )


_REUSE: contextvars.ContextVar[dict[tuple, Engine] | None] = contextvars.ContextVar("graft_engines", default=None)


@contextlib.contextmanager
def reuse_engines() -> Iterator[None]:
    """Within the block, :func:`build_engine` hands back the engine it already built for the same
    model and settings, instead of a new ONNX Runtime session and parity check (about 0.7 s each
    for Lite0 at 288 px on 2 cores). For one model whose weights do not change inside the block:
    stage 1 embeds train, its augmented views and val. The engines are dropped at the end."""
    token = _REUSE.set({})
    try:
        yield
    finally:
        _REUSE.reset(token)


def build_engine(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    device: str,
    precision: str,
    spatial: bool = False,
    taps: Sequence[int] = (),
    n_images: int | None = None,
    key: Callable[[], str] | None = None,
) -> Engine:
    """The fastest engine for ``model`` on ``device`` at the resolved ``precision``.

    Args:
        precision: ``fp32|bf16|fp16`` (already resolved).
        n_images: images about to run (small jobs skip an uncached ONNX export).
        key: returns a weights fingerprint; keys the on-disk ONNX cache.
    """
    memo = _REUSE.get()
    mkey = (id(model), tuple(input_size), device, precision, spatial, tuple(taps))
    if memo is not None and mkey in memo:
        return memo[mkey]
    req = EngineRequest(model, tuple(input_size), device, precision, spatial, tuple(taps))  # type: ignore[arg-type]
    engine = _build_engine(req, n_images, key)
    if memo is not None:
        memo[mkey] = engine
    return engine


def _build_engine(req: EngineRequest, n_images: int | None, key: Callable[[], str] | None) -> Engine:
    """The first registered engine that runs ``req`` here and pays for this job; eager PyTorch otherwise."""
    if req.device.startswith("cuda"):
        return ENGINES["torch"].build(req)
    forced = forced_engine()
    for kind in by_preference()[:-1]:
        if req.precision not in kind.precisions or not kind.available():
            continue
        if forced and forced != kind.name:
            continue
        req = dataclasses.replace(req, key=key() if key and req.key is None else req.key)
        if forced == kind.name or kind.pays(req, n_images):
            try:
                return kind.build(req)
            except Exception as e:  # noqa: BLE001 - the PyTorch path always works
                log.warning("%s could not run this network (%s); using PyTorch", kind.name, e)
    return ENGINES["torch"].build(dataclasses.replace(req, device="cpu"))
