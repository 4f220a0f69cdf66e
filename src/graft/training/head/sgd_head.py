"""MLP and flatten heads on cached features: AdamW, one-cycle LR, early stopping.

Unlike the linear probe these have no convex optimum to solve for, so they train
by mini-batch SGD and stop on the validation features, sharing
:class:`~graft.training.early_stopping.EarlyStopping` with the fine-tuning loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from graft.training.early_stopping import EarlyStopping
from graft.training.loss import classification_loss, n_correct

__all__ = ["SGDHeadConfig", "fit_sgd_head"]


@dataclass(frozen=True)
class SGDHeadConfig:
    """Training settings of the MLP and flatten heads: AdamW under a one-cycle schedule."""

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 10  # epochs without a validation-loss gain before stopping


def fit_sgd_head(
    head: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    config: SGDHeadConfig = SGDHeadConfig(),
    class_weight: np.ndarray | None = None,
    seed: int = 0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``head`` on features with AdamW; early stopping on validation loss.

    The best weights (lowest validation loss) are restored in place.

    Multi-label targets (a 0/1 matrix) train with binary cross-entropy, ``class_weight`` then
    being the per-label positive weight (:mod:`graft.training.loss`).

    Returns:
        One dict per epoch: epoch, train_loss, train_acc, val_loss, val_acc, best.
    """
    g = torch.Generator().manual_seed(seed)
    epochs, lr, batch_size = config.epochs, config.lr, config.batch_size
    Xt = torch.from_numpy(np.ascontiguousarray(train[0], dtype=np.float32))
    yt, yv = _targets(train[1]), _targets(val[1])
    Xv = torch.from_numpy(np.ascontiguousarray(val[0], dtype=np.float32))
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps = max(1, math.ceil(len(yt) / batch_size)) * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    stopper = EarlyStopping(config.patience)
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(yt), generator=g)
        train_loss, train_acc = _train_epoch(head, Xt, yt, perm, batch_size, opt, sched, cw)
        val_loss, val_acc = _validate(head, Xv, yv, cw)
        rec = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best": stopper.update(epoch, val_loss, head),
        }
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        if stopper.should_stop:
            break
    stopper.restore(head)
    head.eval()
    return history


def _targets(y: np.ndarray) -> torch.Tensor:
    """Class indices as int64; a multi-label 0/1 matrix as float32 (BCE)."""
    y = np.asarray(y)
    return torch.from_numpy(y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64))


def _train_epoch(
    head: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    perm: torch.Tensor,
    batch_size: int,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    class_weight: torch.Tensor | None,
) -> tuple[float, float]:
    """One pass over the rows in ``perm`` order, the scheduler stepped per batch: (mean loss, accuracy)."""
    head.train()
    tot_loss = 0.0
    tot_ok = 0
    for i in range(0, len(y), batch_size):
        idx = perm[i : i + batch_size]
        logits = head(X[idx])
        loss = classification_loss(logits, y[idx], class_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        tot_loss += float(loss.detach()) * len(idx)
        tot_ok += n_correct(logits, y[idx])
    return tot_loss / len(y), tot_ok / len(y)


def _validate(
    head: nn.Module, X: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None
) -> tuple[float, float]:
    """(loss, accuracy) on the validation features, both NaN without any (then no epoch counts as best)."""
    head.eval()
    with torch.no_grad():
        logits = head(X)
        val_loss = float(classification_loss(logits, y, class_weight)) if len(y) else math.nan
        val_acc = n_correct(logits, y) / len(y) if len(y) else math.nan
    return val_loss, val_acc
