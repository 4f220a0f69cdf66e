"""Train only the suffix: the frozen prefix's activations computed once per augmented view, then reused.

When fine-tuning unfreezes only the last block groups, most of every step is the
frozen prefix's forward pass, and it gives the same output for the same input: frozen
BatchNorm runs on fixed statistics and the prefix has no dropout or stochastic depth
(else no split is offered). So the first ``views`` epochs run the prefix on freshly
augmented images, as the plain loop would, and keep its output (fp16/bf16, in memory,
capped); later epochs train the suffix + head on a randomly chosen stored view of
each image and decode no image at all. Validation runs the prefix once. What trains
(suffix parameters, head, optimizer, schedule) is exactly what the plain path
trains; only the augmentation sampling of the later epochs differs.

The split is offered for timm EfficientNet-family backbones (``conv_stem, bn1,
blocks[:k]`` | ``blocks[k:], conv_head, bn2, global_pool``); anything else trains on
the plain path.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graft.training.finetune.speed import autocast

__all__ = ["PrefixCache", "PrefixSplit", "cache_budget_bytes", "split_backbone"]

_STOCHASTIC = ("DropPath", "Dropout", "Dropout2d", "AlphaDropout")


class PrefixNet(nn.Module):
    """``conv_stem, bn1, blocks[:k]`` of an EfficientNet (shares its modules)."""

    def __init__(self, backbone: Any, k: int) -> None:
        super().__init__()
        self.conv_stem = backbone.conv_stem
        self.bn1 = backbone.bn1
        self.blocks = nn.Sequential(*list(backbone.blocks)[:k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


class SuffixNet(nn.Module):
    """``blocks[k:], conv_head, bn2`` then pooling (or flattening) and graft's head (shares modules)."""

    def __init__(self, backbone: Any, k: int, head: nn.Module, spatial: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(backbone.blocks)[k:])
        self.conv_head = backbone.conv_head
        self.bn2 = backbone.bn2
        self.global_pool = backbone.global_pool
        self.drop_rate = float(getattr(backbone, "drop_rate", 0.0))
        self.head = head
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(x)))
        if self.spatial:
            return self.head(x.flatten(1))
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.head.training)  # follows net.train()
        return self.head(x)


class PrefixSplit:
    """A network cut at block ``k``: ``suffix(prefix(x)) == net(x)``."""

    def __init__(self, backbone: Any, k: int, head: nn.Module, spatial: bool) -> None:
        self.k = k
        self.prefix = PrefixNet(backbone, k)
        self.suffix = SuffixNet(backbone, k, head, spatial)

    @torch.no_grad()
    def run_prefix(self, x: torch.Tensor, device: str, precision: str) -> torch.Tensor:
        """Prefix output of images ``x`` (eval mode: frozen BN, as in training), channels-last."""
        was = self.prefix.training
        self.prefix.eval()
        try:
            with autocast(device, precision):
                return self.prefix(x.to(device).contiguous(memory_format=torch.channels_last))
        finally:
            self.prefix.train(was)


def split_backbone(net: nn.Module, backbone: nn.Module) -> PrefixSplit | None:
    """Where ``backbone``'s trainable part starts, as a prefix/suffix split; None when it cannot be split.

    Not splittable: multi-depth features (``net.taps``), not an EfficientNet-like layout, the stem trains, nothing before the
    first trainable block (k = 0), or the prefix has dropout/stochastic depth.
    """
    bb: Any = backbone
    if getattr(net, "taps", ()):  # multi-depth features read blocks inside the prefix: not split
        return None
    if not all(hasattr(bb, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")):
        return None
    if not isinstance(bb.blocks, nn.Sequential) or getattr(bb, "grad_checkpointing", False):
        return None
    if any(p.requires_grad for m in (bb.conv_stem, bb.bn1) for p in m.parameters()):
        return None
    trains = [any(p.requires_grad for p in b.parameters()) for b in bb.blocks]
    k = trains.index(True) if True in trains else len(trains)
    if k == 0:
        return None
    full: Any = net
    split = PrefixSplit(bb, k, full.head, bool(getattr(net, "spatial", False)))
    for m in split.prefix.modules():
        if type(m).__name__ in _STOCHASTIC and float(getattr(m, "p", getattr(m, "drop_prob", 0.0)) or 0.0) > 0:
            return None
    return split


def cache_budget_bytes() -> int:
    """Memory the activation cache may take: ``GRAFT_PREFIX_CACHE_MB``, else a quarter of RAM (at most 4 GB)."""
    env = os.environ.get("GRAFT_PREFIX_CACHE_MB")
    if env:
        return int(float(env) * 2**20)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return int(min(ram // 4, 4 * 2**30))


class PrefixCache:
    """Prefix activations of ``n`` images x ``views`` augmented views, filled as epochs run.

    Stored as fp16 (bf16 where the prefix runs in bf16), channels-last; an image whose
    file could not be decoded simply has no stored view.
    """

    def __init__(self, n: int, views: int, dtype: torch.dtype = torch.float16) -> None:
        self.n = n
        self.views = views
        self.dtype = dtype
        self.data: torch.Tensor | None = None
        self.filled = torch.zeros((views, n), dtype=torch.bool)

    def put(self, view: int, idx: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Store ``acts`` of images ``idx`` as view ``view``; returns them as stored (rounded), float32."""
        stored = acts.detach().to("cpu", self.dtype)
        if self.dtype == torch.float16 and not torch.isfinite(stored).all():
            self._widen()
            stored = acts.detach().to("cpu", self.dtype)
        if self.data is None:
            self.data = torch.empty((self.views, self.n, *stored.shape[1:]), dtype=self.dtype)
        self.data[view, idx] = stored
        self.filled[view, idx] = True
        return stored.float()

    def _widen(self) -> None:
        """fp16 overflowed: keep float32 from now on (rare; prefix outputs are normalised)."""
        self.dtype = torch.float32
        if self.data is not None:
            self.data = self.data.float()

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        """Shuffled ``(indices, activations, [])`` batches, one random stored view per image.

        The last partial batch is dropped when there is more than one batch, as the
        image loader does.
        """
        have = self.filled.any(0).nonzero().flatten()
        if self.data is None or len(have) == 0:
            return
        order = have[torch.randperm(len(have), generator=generator)]
        stop = len(order) - len(order) % batch_size if len(order) > batch_size else len(order)
        for s in range(0, stop, batch_size):
            idx = order[s : s + batch_size]
            choice = torch.multinomial(self.filled[:, idx].T.float(), 1, generator=generator).flatten()
            yield idx, self.data[choice, idx].float(), []

    def ordered(self, batch_size: int, view: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        """``(indices, activations, [])`` of view ``view`` in index order (evaluation)."""
        have = self.filled[view].nonzero().flatten()
        if self.data is None:
            return
        for s in range(0, len(have), batch_size):
            idx = have[s : s + batch_size]
            yield idx, self.data[view, idx].float(), []


def cache_views(split: PrefixSplit, n: int, views: int, example: torch.Tensor, device: str, precision: str) -> int:
    """How many views of ``n`` images fit the memory budget (0: none, train on the plain path)."""
    out = split.run_prefix(example[:1], device, precision)
    per_view = int(np.prod(out.shape[1:])) * 2 * max(n, 1)
    return int(min(views, cache_budget_bytes() // max(per_view, 1)))
