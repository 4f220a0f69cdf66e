"""The fast fine-tuning path: what one epoch iterates and which module, in which form, it trains.

:func:`fast_path` wires :mod:`.speed` (channels-last, autocast precision, compile;
measured once per machine and model) and :mod:`.prefix` (frozen prefix computed once
per augmented view) together for :func:`~graft.training.finetune.train.train_network`.
``GRAFT_PREFIX_CACHE=0`` turns the prefix cache off (always the plain path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graft.features.embedder import batches, collate_skip_failed
from graft.progress import Progress
from graft.training.finetune.loop import evaluate
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.prefix import PrefixCache, PrefixSplit, cache_views, split_backbone
from graft.training.finetune.speed import CompiledStep, SpeedPlan, plan_speed, prefix_precision

__all__ = ["FastPath", "fast_path", "plain_path"]

_PLAN_IMAGES = 8  # images per measured whole-net step or prefix pass: per-image speed, cheap on a small CPU
_PLAN_SUFFIX = 32  # suffix steps are cheap: measured at the real batch size (up to this), where speed differs


@dataclass
class FastPath:
    """What an epoch trains (``module``, called through ``forward``) and on what batches."""

    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    plan: SpeedPlan
    train_loader: DataLoader
    val_loader: DataLoader
    batch_size: int
    seed: int
    split: PrefixSplit | None = None
    cache: PrefixCache | None = None
    val_cache: PrefixCache | None = None
    epochs_run: int = 0
    prefix_precision: str = "fp32"

    @property
    def label(self) -> str:
        where = "whole net"
        if self.split and self.cache:
            where = f"suffix from block {self.split.k}; prefix {self.prefix_precision}, {self.cache.views} cached views"
        return f"{self.plan.label} ({where})"

    @property
    def channels_last(self) -> bool:
        return self.plan.channels_last

    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_loader))

    def train_batches(self) -> Iterable[Any]:
        """This epoch's batches: images, or prefix activations (stored as the epoch goes, or reused)."""
        epoch = self.epochs_run
        self.epochs_run += 1
        if self.split is None or self.cache is None:
            return self.train_loader
        if epoch < self.cache.views:
            return self._fill(self.split, self.train_loader, self.cache, epoch)
        g = torch.Generator().manual_seed(self.seed * 1009 + epoch)
        return self.cache.epoch(self.batch_size, g)

    def _fill(self, split: PrefixSplit, loader: DataLoader, cache: PrefixCache, view: int) -> Iterator[Any]:
        for idx, x, bad in batches(loader):
            if x is None:
                yield idx, None, bad
                continue
            acts = split.run_prefix(x, self._device(), self.prefix_precision)
            yield idx, cache.put(view, idx, acts), bad

    def _device(self) -> str:
        p = next(self.module.parameters())
        return str(p.device)

    def evaluate(self, net: nn.Module, labels: np.ndarray, device: str) -> tuple[float, float]:
        """Validation (loss, accuracy); with a split, the prefix runs once over the validation images."""
        prec = self.plan.precision
        if self.split is None or self.val_cache is None:
            return evaluate(net, self.val_loader, labels, device, prec, channels_last=self.channels_last)
        if self.val_cache.filled.any():
            batches_: Iterable[Any] = self.val_cache.ordered(self.batch_size * 2)
        else:
            batches_ = self._fill(self.split, self.val_loader, self.val_cache, 0)
        return evaluate(self.split.suffix, batches_, labels, device, prec, channels_last=self.channels_last)


def _example(loader: DataLoader, n: int) -> torch.Tensor | None:
    """``n`` images shaped as training batches (two decoded ones, repeated), without touching the run's RNG."""
    ds: Any = loader.dataset
    items = []
    with torch.random.fork_rng(devices=[]):
        for i in range(min(len(ds), 8)):
            item = ds[i]
            if item[2] is None:
                items.append(item)
            if len(items) == 2:
                break
    if not items:
        return None
    _, x, _ = collate_skip_failed(items)
    return None if x is None else x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]


def _model_name(backbone: nn.Module) -> str:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(backbone).__name__)


def fast_path(
    net: nn.Module,
    backbone: nn.Module,
    loaders: tuple[DataLoader, DataLoader],
    *,
    config: FineTuneConfig,
    epochs: int,
    env: TrainEnv,
    progress: Progress,
) -> FastPath:
    """Decide, for this run, the module that trains and how it runs (call after the policy froze the backbone).

    Args:
        config: its ``batch_size``, and ``prefix_views``: augmented prefix views to keep (0: no prefix cache).
        epochs: the epochs this run trains (what a compiled step would have to repay).
        env: ``device``, ``seed``, ``precision`` (``auto`` lets :func:`~.speed.plan_speed` measure).
    """
    train_loader, val_loader = loaders
    batch_size = config.batch_size
    device = env.device
    precision = env.precision
    n = len(train_loader.dataset)  # type: ignore[arg-type]
    example = _example(train_loader, min(batch_size, _PLAN_IMAGES))
    split = None
    if config.prefix_views > 0 and example is not None and os.environ.get("GRAFT_PREFIX_CACHE", "1") != "0":
        split = split_backbone(net, backbone)
    low = "fp32" if precision == "auto" else precision
    module: nn.Module = net
    cache = None
    val_cache = None
    name = _model_name(backbone)
    if split is not None and example is not None:
        low = prefix_precision(split.prefix, example, split.suffix, name=name, device=device, precision=precision)
        v = cache_views(split, n, config.prefix_views, example, device, low)
        if v >= 1:
            module = split.suffix
            acts = split.run_prefix(example, device, low).float()
            m = min(batch_size, _PLAN_SUFFIX)
            example = acts.repeat((m + len(acts) - 1) // len(acts), 1, 1, 1)[:m]
            dtype = torch.bfloat16 if low == "bf16" else torch.float16
            cache = PrefixCache(n, v, dtype)
            val_cache = PrefixCache(len(val_loader.dataset), 1, dtype)  # type: ignore[arg-type]
        else:
            split = None
    plan = SpeedPlan(precision=low)
    if example is not None:
        name += f"|suffix{split.k}" if split else "|whole"
        plan = plan_speed(module, example, name=name, device=device, precision=precision, work_images=n * epochs)
    if split is not None:
        split.prefix.to(memory_format=torch.channels_last)
    forward: Callable[[torch.Tensor], torch.Tensor] = module
    if plan.compile:
        forward = CompiledStep(module, warn=progress.warn)
    fp = FastPath(module, forward, plan, train_loader, val_loader, batch_size, env.seed, split, cache, val_cache)
    fp.prefix_precision = low
    progress.message(f"fine-tuning runs {fp.label}")
    return fp


def plain_path(
    module: nn.Module, train_loader: DataLoader, val_loader: DataLoader, batch_size: int, seed: int, *, precision: str
) -> FastPath:
    """The whole network as given (e.g. wrapped for DDP) at ``precision``: nothing measured, nothing cached."""
    return FastPath(module, module, SpeedPlan(precision=precision), train_loader, val_loader, batch_size, seed)
