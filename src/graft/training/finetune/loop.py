"""One training epoch and one evaluation pass over an image loader.

In the spirit of torchvision's ``references/classification/train.py``: the epoch
loop of :func:`~graft.training.finetune.train.train_network` lives here so that it reads
as setup, ``train_one_epoch``, ``evaluate`` and callbacks, each small enough to check.
Loaders yield ``(indices, images or None, skipped)`` batches (see
``graft.features.embedder.collate_skip_failed``); labels are looked up by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graft.features.embedder import batches
from graft.progress import Task
from graft.training.finetune.speed import autocast
from graft.training.loss import classification_loss, n_correct

__all__ = ["Stepper", "evaluate", "train_one_epoch"]


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LRs at ``step``: linear warm-up, then cosine, linear decay or flat."""
    if schedule == "constant":
        return 1.0 if step >= warmup else (step + 1) / max(1, warmup)
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "onecycle":  # linear decay after the warm-up peak
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _autocast(device: str, precision: str) -> torch.autocast:
    """bf16/fp16 autocast for ``precision``; a disabled context for fp32."""
    return autocast(device, precision)


def _iter(loader: DataLoader | Iterable[Any]) -> Iterable[Any]:
    return batches(loader) if isinstance(loader, DataLoader) else loader


def _to_device(x: torch.Tensor, device: str, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@dataclass
class Stepper:
    """What every optimizer step of an epoch uses besides its batch.

    Attributes:
        optimizer / base_lrs / lr_at: each step sets the groups' LRs to ``lr_at(step)`` times ``base_lrs``.
        device / precision: where the step runs, and its autocast precision.
        class_weight / label_smoothing: the loss's settings.
        forward: replaces ``net(x)`` (a compiled step; None: ``net``).
        channels_last: convert inputs to channels-last.
    """

    optimizer: torch.optim.Optimizer
    base_lrs: Sequence[float]
    lr_at: Callable[[int], float]
    device: str = "cpu"
    precision: str = "fp32"
    class_weight: torch.Tensor | None = None
    label_smoothing: float = 0.0
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    channels_last: bool = False


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader | Iterable[Any],
    labels: np.ndarray,
    stepper: Stepper,
    *,
    step: int,
    task: Task | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``, the LR set per step from ``stepper.lr_at(step)`` times its ``base_lrs``.

    The schedule is per optimizer step (not per epoch) so warm-up works with few, large
    epochs; ``step`` is the global step of the epoch's first batch. ``net`` must already
    be in the train mode the caller wants (a policy may keep frozen BatchNorm in eval).
    ``on_skip(index, reason)`` hears of every image the loader could not decode.
    ``loader`` may be any iterable of such batches (cached prefix activations);

    Returns:
        ``{"train_loss": mean loss, "train_acc": accuracy}`` over the decoded images.
    """
    optimizer = stepper.optimizer
    device = stepper.device
    tot_loss = 0.0
    tot_ok = 0
    n = 0
    for idx, x, bad in _iter(loader):
        if on_skip is not None:
            for i, reason in bad:
                on_skip(i, reason)
        if x is None:
            continue
        f = stepper.lr_at(step)
        for grp, base in zip(optimizer.param_groups, stepper.base_lrs):
            grp["lr"] = base * f
        y = torch.from_numpy(labels[idx.numpy()]).to(device)
        with _autocast(device, stepper.precision):
            logits = (stepper.forward or net)(_to_device(x, device, stepper.channels_last)).float()
        loss = classification_loss(logits, y, stepper.class_weight, stepper.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        tot_loss += loss.item() * len(y)
        tot_ok += n_correct(logits, y)
        n += len(y)
        if task is not None:
            task.advance(len(idx) + len(bad))
            task.update(info=f"loss {tot_loss / max(n, 1):.3f}")
    return {"train_loss": tot_loss / max(n, 1), "train_acc": tot_ok / max(n, 1)}


def evaluate(
    net: nn.Module,
    loader: DataLoader | Iterable[Any],
    labels: np.ndarray,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``net`` on ``loader``, unweighted and unsmoothed (multi-label: BCE, subset accuracy).

    Plain loss on purpose: early stopping compares epochs, and class weights or label
    smoothing would only shift that scale. Leaves ``net`` in eval mode.
    """
    net.eval()
    tot_loss = 0.0
    ok = 0
    n = 0
    with torch.inference_mode():
        for idx, x, _bad in _iter(loader):
            if x is None:
                continue
            y = torch.from_numpy(labels[idx.numpy()]).to(device)
            with _autocast(device, precision):
                logits = net(_to_device(x, device, channels_last)).float()
            tot_loss += float(classification_loss(logits, y, reduction="sum"))
            ok += n_correct(logits, y)
            n += len(y)
    return tot_loss / max(n, 1), ok / max(n, 1)
