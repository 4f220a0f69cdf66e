"""Process-wide settings: where graft keeps its cache and weights, and device choice."""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
from pathlib import Path

__all__ = ["cpu_info", "graft_home", "quiet_cuda_home_notice", "resolve_device"]


def graft_home() -> Path:
    """Folder for caches and downloaded/offline weights (``$GRAFT_HOME`` or ``~/.cache/graft``)."""
    env = os.environ.get("GRAFT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graft"


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """``{"model": ..., "flags": ...}`` of this CPU, read once (``/proc/cpuinfo`` on Linux)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.processor() or platform.machine()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value.strip()
    except OSError:
        pass
    return {"model": model, "flags": flags}


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` onto a concrete torch device string.

    Raises:
        InvalidParameterError: unknown name, or a CUDA device asked for but not available
            (a ``ValueError``).
    """
    import torch

    from graft.validation import invalid_parameter

    given = device
    if device is not None and not isinstance(device, str):
        raise invalid_parameter("device", "resolve_device", "'auto', 'cpu', 'cuda' or 'cuda:N'", given)
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m is None:
        raise invalid_parameter("device", "resolve_device", "'auto', 'cpu', 'cuda' or 'cuda:N'", given)
    if not torch.cuda.is_available():
        raise invalid_parameter(
            "device",
            "resolve_device",
            "'auto' or 'cpu' here: this torch build sees no CUDA GPU (use --device cpu)",
            given,
        )
    count = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= count:
        raise invalid_parameter(
            "device", "resolve_device", f"'cuda' or 'cuda:N' with N below {count} (GPUs seen)", given
        )
    return device


class _NoCudaRuntimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def quiet_cuda_home_notice() -> None:
    """Drop torch's "No CUDA runtime is found, using CUDA_HOME=..." (idempotent).

    ``torch.compile`` prints it on every CPU-only machine that has a CUDA toolkit (an ``nvcc``
    on the PATH): graft compiles for the CPU there, so it is noise, not news.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in logger.filters):
        logger.addFilter(_NoCudaRuntimeNotice())
