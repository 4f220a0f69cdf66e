"""The network and its saved parts: what a model folder describes and what prediction runs.

Below both :mod:`graft.artifact` (which saves and loads it) and :mod:`graft.training`
(which fits it), so opening a model for prediction never imports the trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graft.network.heads import HEAD_TYPES, HeadSpec, build_head, register_head
    from graft.network.net import GraftNet
    from graft.network.ood import OODScorer

_EXPORTS = {
    "HEAD_TYPES": "graft.network.heads",
    "HeadSpec": "graft.network.heads",
    "build_head": "graft.network.heads",
    "register_head": "graft.network.heads",
    "GraftNet": "graft.network.net",
    "OODScorer": "graft.network.ood",
}

__all__ = ["HEAD_TYPES", "GraftNet", "HeadSpec", "OODScorer", "build_head", "register_head"]


def __getattr__(name: str) -> Any:
    """Import on first use, so that reading a constant of one submodule never loads torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
