"""Process-wide settings: where graft keeps its cache and weights, and device choice."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["graft_home", "resolve_device"]


def graft_home() -> Path:
    """Folder for caches and downloaded/offline weights (``$GRAFT_HOME`` or ``~/.cache/graft``)."""
    env = os.environ.get("GRAFT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graft"


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` onto a concrete torch device string.

    Raises:
        ValueError: unknown name, or CUDA asked for but not available.
    """
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but this torch build sees no CUDA GPU; "
                "use --device cpu (or auto)"
            )
        return device
    raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
