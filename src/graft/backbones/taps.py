"""Multi-depth features: pooled outputs of the last block stages beside the final features.

A backbone's last layer is tuned to ImageNet's classes; earlier stages carry more generic
texture and shape statistics. On data unlike ImageNet (hand signs, flowers at 128 px,
medical scans) a linear head on the final features *and* the global-average-pooled
outputs of the last block stages is more accurate, at almost no cost: the same forward
pass, a few hundred more feature columns. On ImageNet-like photos it can be worse, so
stage 1 decides per dataset by cross-validation on the training features (see
:func:`graft.training.fit.stages.choose_features`) and records the choice (``taps``) in
the model.

A tap is an index into timm's ``forward_intermediates`` outputs (with
``extra_blocks=True`` where the model has it: one output per block stage, e.g. the 7
stages of EfficientNet). Feature columns are ordered: the taps' pooled outputs in
increasing tap order, then the final pooled features.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["N_CANDIDATE_TAPS", "candidate_taps", "tap_columns", "tapped_features", "tap_widths"]

#: Block stages tapped besides the final features (the last ones before the head's own
#: stage). Three, measured on the shared datasets: see RESULTS.md ("Multi-depth features").
N_CANDIDATE_TAPS = 3


def _intermediate_kwargs(model: nn.Module) -> dict[str, Any] | None:
    """``forward_intermediates`` keyword arguments for one output per block stage; None if unsupported."""
    fn = getattr(model, "forward_intermediates", None)
    if fn is None:
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return {"extra_blocks": True} if "extra_blocks" in params else {}


def _intermediates(model: nn.Module, x: torch.Tensor, taps: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    kw = _intermediate_kwargs(model) or {}
    m: Any = model  # a timm model
    final, inter = m.forward_intermediates(x, indices=list(taps), **kw)
    return final, list(inter)


def _pool(t: torch.Tensor) -> torch.Tensor:
    """Global average over the spatial axes of an NCHW map (or the tokens of an NLC sequence)."""
    return t.mean((2, 3)) if t.ndim == 4 else t.mean(1)


def tapped_features(model: nn.Module, x: torch.Tensor, taps: Sequence[int]) -> torch.Tensor:
    """``[pooled tap outputs..., final pooled features]`` for images ``x`` (plain ``model(x)`` without taps)."""
    if not taps:
        return model(x)
    final, inter = _intermediates(model, x, taps)
    m: Any = model
    return torch.cat([_pool(t).to(final.dtype) for t in inter] + [m.forward_head(final, pre_logits=True)], 1)


def candidate_taps(model: nn.Module, n: int = N_CANDIDATE_TAPS) -> tuple[int, ...]:
    """The last ``n`` block stages whose output is not already the final feature map; () if unsupported.

    Found by a dry run on a small input, so any timm model with ``forward_intermediates``
    works: where the last intermediate *is* the final map (ResNet's ``layer4``), it is
    skipped, since the final features already pool it.
    """
    kw = _intermediate_kwargs(model)
    if kw is None or n < 1:
        return ()
    m: Any = model
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            x = torch.zeros(1, 3, 64, 64, device=dev)
            final, inter = m.forward_intermediates(x, **kw)
    except Exception:  # noqa: BLE001 - a model whose intermediates do not run plainly gets no taps
        return ()
    idx = list(range(len(inter)))
    if inter and inter[-1].shape == final.shape and torch.equal(inter[-1], final):
        idx = idx[:-1]
    return tuple(idx[-n:]) if len(idx) >= n else ()


def tap_widths(model: nn.Module, taps: Sequence[int]) -> list[int]:
    """Channels of each tap's pooled output, then the final features' width (a dry run)."""
    with torch.no_grad():
        dev = next(model.parameters()).device
        x = torch.zeros(1, 3, 64, 64, device=dev)
        final, inter = _intermediates(model, x, taps)
        m: Any = model
        return [int(_pool(t).shape[1]) for t in inter] + [int(m.forward_head(final, pre_logits=True).shape[1])]


def tap_columns(widths: Sequence[int], taps: Sequence[int], keep: Sequence[int]) -> list[int]:
    """Column indices, in the features of ``taps`` (widths from :func:`tap_widths`), of the features of ``keep``.

    ``keep`` is a subset of ``taps``; the final features' columns are always kept.
    """
    starts = [sum(widths[:i]) for i in range(len(widths))]
    cols: list[int] = []
    for i, t in enumerate(taps):
        if t in keep:
            cols.extend(range(starts[i], starts[i] + widths[i]))
    cols.extend(range(starts[-1], starts[-1] + widths[-1]))
    return cols
