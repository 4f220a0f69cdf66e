"""Backbone execution engines, and the per-machine choice between them.

Measured on a 2-core AVX2 CPU (no bf16 units), EfficientNet-Lite0, batch 32:
ONNX Runtime fp32 ran several times faster than eager PyTorch fp32 (channels-last
or not), and bf16 autocast ran about 10x *slower* than fp32 (it is emulated). On
CPUs with AMX / AVX512-BF16 the issue's reference machine ran bf16 autocast with
channels-last and ONNX Runtime at about the same speed. So:

* CUDA: PyTorch, autocast bf16 (fp16 where bf16 is unsupported), channels-last.
* CPU, fp32: ONNX Runtime (exported once per weights, cached under
  ``$GRAFT_HOME/runtime/onnx``); eager PyTorch channels-last when ORT is missing,
  fails to export, disagrees with PyTorch, or the job is too small to pay the export.
* CPU, auto: fp32 as above, unless the CPU has bf16 units; then a short
  micro-benchmark (bf16 autocast vs ORT fp32) decides once per machine and
  architecture, cached in ``$GRAFT_HOME/runtime/choice.json``.

``GRAFT_RUNTIME=torch|onnxruntime`` forces an engine (benchmarks, debugging).
Every engine runs tf_* models with static "same" padding for the fixed input size
(identical outputs, none of the per-call padding arithmetic).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import graft_home
from ..fileio import atomic_write_text

__all__ = [
    "Engine",
    "TorchEngine",
    "OrtEngine",
    "static_same_padding",
    "cpu_supports_fast_bf16",
    "onnxruntime_available",
    "build_engine",
    "build_ort_engine",
    "machine_choice",
    "resolve_cpu_auto",
    "ORT_MIN_IMAGES",
]

log = logging.getLogger("graft")

#: Below this many images an uncached ONNX export (about 1-2 s) does not pay off.
ORT_MIN_IMAGES = 64
_ONNX_KEEP = 8  # exported models kept on disk (most recent first)


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


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as good as none
        return False
    return True


# ---------------------------------------------------------------------- padding
def static_same_padding(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """A copy of ``model`` whose dynamic "same" convolutions pad statically.

    timm's ``Conv2dSame`` (tf_* ports) computes its padding from the input shape on
    every call. At a fixed input size the padding is a constant, so each one becomes
    ``ZeroPad2d + Conv2d``. Parameters are shared with ``model`` (no copy), so the
    result stays in sync with it; ``model`` itself is untouched.
    """
    try:
        from timm.layers import Conv2dSame
    except Exception:  # noqa: BLE001
        return model
    names = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    if not names:
        return model
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda mod, inp, n=n: sizes.__setitem__(n, tuple(inp[0].shape[-2:]))
        )
        for n in names
    ]
    was_training = model.training
    try:
        model.eval()
        dev = next(model.parameters()).device
        with torch.no_grad():
            _ = (model.forward_features if hasattr(model, "forward_features") else model)(
                torch.zeros(1, 3, *input_size, device=dev)
            )
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    new = copy.deepcopy(model, memo)
    for n in names:
        old = new.get_submodule(n)
        ih, iw = sizes[n]
        (kh, kw), (sh, sw), (dh, dw) = old.kernel_size, old.stride, old.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        conv = nn.Conv2d(
            old.in_channels, old.out_channels, old.kernel_size, old.stride, 0, old.dilation, old.groups,
            old.bias is not None, device="meta",
        )
        conv.weight = old.weight
        conv.bias = old.bias
        repl = nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv) if ph or pw else conv
        parent, _, leaf = n.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, leaf, repl)
    return new


class _Features(nn.Module):
    """Module -> pooled features, or the flattened feature map (``spatial``)."""

    def __init__(self, model: nn.Module, spatial: bool) -> None:
        super().__init__()
        self.model, self.spatial = model, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x).flatten(1) if self.spatial else self.model(x)


# ---------------------------------------------------------------------- engines
class Engine:
    """Runs a network on a normalised float32 NCHW batch; returns float32 CPU features."""

    name = "engine"
    precision = "fp32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TorchEngine(Engine):
    """Eager PyTorch under ``inference_mode``, optional autocast and channels-last."""

    name = "torch"

    def __init__(
        self, model: nn.Module, device: str, precision: str, *, spatial: bool = False,
        input_size: tuple[int, int] | None = None, channels_last: bool = True,
    ) -> None:
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.input_size = input_size
        model = model.eval().to(device)
        self.general = _Features(model, spatial)
        fixed = static_same_padding(model, input_size) if input_size else model
        self.fixed = _Features(fixed, spatial) if fixed is not model else self.general
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

    def __init__(self, onnx_bytes_or_path: bytes | str, input_size: tuple[int, int], threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Idle ORT threads would spin between batches, taking CPU from the decoders
        # (measured: +10% end to end on 2 busy cores).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.input_size = tuple(input_size)
        self.session = ort.InferenceSession(onnx_bytes_or_path, so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    label = "onnxruntime-fp32"

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"this ONNX engine takes {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return torch.from_numpy(self.run_numpy(x.detach().float().cpu().contiguous().numpy()))


def _onnx_cache_path(key: str, input_size: tuple[int, int], spatial: bool) -> Path:
    """Where the export for this backbone key, input size and output kind is cached."""
    size = (int(input_size[0]), int(input_size[1]))
    tag = hashlib.sha1(f"{key}|{size}|{spatial}|{torch.__version__}|17".encode()).hexdigest()[:24]
    return graft_home() / "runtime" / "onnx" / f"{tag}.onnx"


def _export_onnx(module: nn.Module, input_size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter takes ~1 s for Lite0; the dynamo one several times that.
        torch.onnx.export(
            module, (torch.zeros(2, 3, *input_size),), buf, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    return buf.getvalue()


def build_ort_engine(
    model: nn.Module, input_size: tuple[int, int], *, spatial: bool = False, key: str | None = None,
    check: bool = True,
) -> OrtEngine:
    """Export ``model`` (static padding) to ONNX, cached by ``key``, and open a session.

    Raises:
        RuntimeError: export failed or ORT disagrees with PyTorch (callers fall back).
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    path = None if key is None else _onnx_cache_path(key, input_size, spatial)
    model = model.eval().to("cpu")
    wrapped = _Features(static_same_padding(model, input_size), spatial).eval()
    if path is not None and path.exists():
        try:
            os.utime(path)
            data: bytes = path.read_bytes()
        except OSError:
            data = _export_onnx(wrapped, input_size)
    else:
        data = _export_onnx(wrapped, input_size)
        if path is not None:
            _store(path, data)
    engine = OrtEngine(data, input_size)
    if check:
        x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = wrapped(x).float()
        got = engine(x)
        err = float((got - ref).abs().max()) / max(float(ref.abs().max()), 1e-6)
        if not math.isfinite(err) or err > 1e-3:
            if path is not None:
                path.unlink(missing_ok=True)
            raise RuntimeError(f"ONNX Runtime output differs from PyTorch (relative error {err:.2e})")
    return engine


def _store(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        old = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)[_ONNX_KEEP:]
        for p in old:
            p.unlink(missing_ok=True)
    except OSError as e:  # a read-only cache only costs the export next time
        log.debug("could not cache the ONNX export at %s: %s", path, e)


def onnx_cached(key: str | None, input_size: tuple[int, int], spatial: bool) -> bool:
    return key is not None and _onnx_cache_path(key, input_size, spatial).exists()


# ---------------------------------------------------------------------- choice
def _machine_key(model: nn.Module, input_size: tuple[int, int]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime

        ort_v = onnxruntime.__version__
    except Exception:  # noqa: BLE001
        ort_v = "none"
    n_params = sum(p.numel() for p in model.parameters())
    text = f"{cpu}|{torch.get_num_threads()}|{torch.__version__}|{ort_v}|{type(model).__name__}|{n_params}|{input_size}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _time(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reps: int = 2) -> float:
    fn(x)  # warm-up (allocations, kernel selection)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def machine_choice(model: nn.Module, input_size: tuple[int, int], *, key: str | None = None) -> dict:
    """Which CPU engine is fastest here for this architecture: measured once, then cached.

    Returns:
        ``{"engine": "onnxruntime"|"torch", "precision": "fp32"|"bf16", "images_per_s": {...}}``.
    """
    mkey = _machine_key(model, input_size)
    path = graft_home() / "runtime" / "choice.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(mkey), dict):
        return cached[mkey]
    x = torch.randn(16, 3, *input_size, generator=torch.Generator().manual_seed(0))
    speeds: dict[str, float] = {}
    candidates: dict[str, Callable[[], Engine]] = {
        "torch-bf16": lambda: TorchEngine(model, "cpu", "bf16", input_size=input_size),
        "torch-fp32": lambda: TorchEngine(model, "cpu", "fp32", input_size=input_size),
    }
    if onnxruntime_available():
        candidates["onnxruntime-fp32"] = lambda: build_ort_engine(model, input_size, key=key)
    for name, make in candidates.items():
        try:
            speeds[name] = _time(make(), x)
        except Exception as e:  # noqa: BLE001 - a failing candidate just loses
            log.debug("runtime candidate %s failed: %s", name, e)
    best = max(speeds, key=speeds.get) if speeds else "torch-fp32"  # type: ignore[arg-type]
    engine, _, precision = best.rpartition("-")
    choice = {"engine": engine, "precision": precision, "images_per_s": speeds}
    cached = cached if isinstance(cached, dict) else {}
    cached[mkey] = choice
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=2))
    except OSError as e:
        log.debug("could not store the runtime choice at %s: %s", path, e)
    return choice


def resolve_cpu_auto(model: nn.Module, input_size: tuple[int, int], key: Callable[[], str] | None = None) -> str:
    """Precision for ``--precision auto`` on this CPU: fp32 unless bf16 measured faster."""
    forced = os.environ.get("GRAFT_RUNTIME", "").strip().lower()
    if not cpu_supports_fast_bf16() or forced == "onnxruntime":
        return "fp32"
    if forced == "torch":
        return "bf16"
    return str(machine_choice(model, input_size, key=key() if key else None).get("precision", "fp32"))


def build_engine(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    device: str,
    precision: str,
    spatial: bool = False,
    n_images: int | None = None,
    key: Callable[[], str] | None = None,
) -> Engine:
    """The fastest engine for ``model`` on ``device`` at the resolved ``precision``.

    Args:
        precision: ``fp32|bf16|fp16`` (already resolved).
        n_images: images about to run (small jobs skip an uncached ONNX export).
        key: returns a weights fingerprint; keys the on-disk ONNX cache.
    """
    if device.startswith("cuda"):
        return TorchEngine(model, device, precision, spatial=spatial, input_size=input_size)
    forced = os.environ.get("GRAFT_RUNTIME", "").strip().lower()
    if precision == "fp32" and forced != "torch" and onnxruntime_available():
        k = key() if key else None
        big = n_images is None or n_images >= ORT_MIN_IMAGES or forced == "onnxruntime"
        if big or onnx_cached(k, input_size, spatial):
            try:
                return build_ort_engine(model, input_size, spatial=spatial, key=k)
            except Exception as e:  # noqa: BLE001 - the PyTorch path always works
                log.warning("ONNX Runtime could not run this network (%s); using PyTorch", e)
    return TorchEngine(model, "cpu", precision, spatial=spatial, input_size=input_size)
