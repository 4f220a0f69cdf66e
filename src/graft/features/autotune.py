"""Which CPU engine and precision are fastest on this machine: measured once, then cached.

On CPUs with native bf16 units (AVX512-BF16 or AMX) bf16 autocast can beat ONNX
Runtime fp32, or not, depending on the chip and the architecture; a short
micro-benchmark decides once per machine and architecture, cached in
``$GRAFT_HOME/runtime/choice.json``. Without bf16 units fp32 always wins (bf16 is
emulated there, about 10x slower). A first job smaller than :data:`MEASURE_MIN_IMAGES`
skips the measurement and runs fp32, the accuracy reference, without storing a verdict.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from graft.config import cpu_info, graft_home
from graft.features.engines import ENGINES, Engine, EngineRequest, by_preference, forced_engine
from graft.fileio import atomic_write_text

__all__ = [
    "BF16_MIN_GAIN",
    "MEASURE_MIN_IMAGES",
    "cached_choice",
    "cpu_supports_fast_bf16",
    "machine_choice",
    "resolve_cpu_auto",
]

log = logging.getLogger("graft")

BF16_MIN_GAIN = 1.1
"""bf16 embeds only where it measured at least 10 % faster than fp32: it changes the features
(flowers_kaggle_128: 3 of 864 validation images fewer right), and on this 2-core CPU one
stored verdict picked bf16 at 112 vs 111 img/s, a tie within the measurement's noise."""

MEASURE_MIN_IMAGES = 1000
"""Images below which a first job does not measure bf16 against fp32.

The measurement runs 48 images on each candidate, as long as embedding about 100 images
(2 s on the 2-core CPU, where bf16 ran 2.6x *slower* than ONNX Runtime fp32). Even at
1.3x faster, the gain seen on a training step, bf16 would repay it only from several
hundred images; a job of fewer than 1,000 keeps fp32 and leaves the verdict to a bigger one.
"""


def cpu_supports_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix units (AVX512-BF16 or AMX).

    Without them bf16 autocast is emulated and several times *slower* than fp32.
    """
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _machine_key(model: nn.Module, input_size: tuple[int, int]) -> str:
    cpu = cpu_info()["model"]
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


def _choices_path() -> Path:
    return graft_home() / "runtime" / "choice.json"


def _read_choices() -> dict:
    try:
        cached = json.loads(_choices_path().read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def cached_choice(model: nn.Module, input_size: tuple[int, int]) -> dict | None:
    """The stored verdict of :func:`machine_choice` for this machine and architecture, if any."""
    hit = _read_choices().get(_machine_key(model, input_size))
    return hit if isinstance(hit, dict) else None


def machine_choice(model: nn.Module, input_size: tuple[int, int], *, key: str | None = None) -> dict:
    """Which CPU engine is fastest here for this architecture: measured once, then cached.

    Returns:
        ``{"engine": "onnxruntime"|"torch", "precision": "fp32"|"bf16", "images_per_s": {...}}``.
    """
    mkey = _machine_key(model, input_size)
    path = _choices_path()
    hit = cached_choice(model, input_size)
    if hit is not None:
        return hit
    x = torch.randn(16, 3, *input_size, generator=torch.Generator().manual_seed(0))
    speeds: dict[str, float] = {}
    for name, make in _candidates(model, input_size, key).items():
        # Only the precision is decided here, and fp32 runs on ONNX Runtime wherever it works
        # (build_engine): timing eager fp32 beside it could not change the answer, and cost
        # about 2 s of a first run (Lite0, 288 px, 2 cores: 23 img/s for 48 images).
        if name == "torch-fp32" and any(k.endswith("-fp32") for k in speeds):
            continue
        try:
            speeds[name] = _time(make(), x)
        except Exception as e:  # noqa: BLE001 - a failing candidate just loses
            log.debug("runtime candidate %s failed: %s", name, e)
    best = max(speeds, key=speeds.get) if speeds else "torch-fp32"  # type: ignore[arg-type]
    fp32 = max((v for k, v in speeds.items() if k.endswith("-fp32")), default=0.0)
    if best == "torch-bf16" and fp32 and speeds[best] < BF16_MIN_GAIN * fp32:
        # bf16 changes the features (3 of 864 flowers validation images); a near tie keeps fp32.
        best = max((k for k in speeds if k.endswith("-fp32")), key=speeds.get)  # type: ignore[arg-type]
    engine, _, precision = best.rpartition("-")
    choice = {"engine": engine, "precision": precision, "images_per_s": speeds}
    cached = _read_choices()
    cached[mkey] = choice
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=2))
    except OSError as e:
        log.debug("could not store the runtime choice at %s: %s", path, e)
    return choice


def _candidates(model: nn.Module, input_size: tuple[int, int], key: str | None) -> dict[str, Callable[[], Engine]]:
    """``"<engine>-<precision>"`` -> builder, for every registered engine installed here: bf16 first, fp32 last."""
    out: dict[str, Callable[[], Engine]] = {}
    for precision in ("bf16", "fp32"):
        for kind in by_preference():
            if precision in kind.precisions and kind.available():
                req = EngineRequest(model, tuple(input_size), "cpu", precision, key=key)  # type: ignore[arg-type]
                out[f"{kind.name}-{precision}"] = functools.partial(kind.build, req)
    return out


def resolve_cpu_auto(
    model: nn.Module, input_size: tuple[int, int], key: Callable[[], str] | None = None, n_images: int | None = None
) -> str:
    """Precision for ``--precision auto`` on this CPU: fp32 unless bf16 measured faster.

    ``n_images``: the job's size where known; below :data:`MEASURE_MIN_IMAGES` an unmeasured
    machine keeps fp32 rather than paying the measurement.
    """
    forced = forced_engine()
    if not cpu_supports_fast_bf16() or (forced and "bf16" not in ENGINES[forced].precisions):
        return "fp32"
    if forced:
        return "bf16"
    hit = cached_choice(model, input_size)
    if hit is None and n_images is not None and n_images < MEASURE_MIN_IMAGES:
        return "fp32"
    choice = hit or machine_choice(model, input_size, key=key() if key else None)
    return str(choice.get("precision", "fp32"))
