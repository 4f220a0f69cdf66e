"""Stage 2: fine-tune the top of the backbone (and the from-scratch baseline).

One loop serves both: a :class:`~graft.training.policy.FineTunePolicy` decides which
layers train. AdamW with discriminative learning rates, linear warm-up then cosine
(or one-cycle), bf16/fp16 autocast where the machine runs it fast, early stopping on
validation loss with the best weights restored, an atomic checkpoint after every
improvement and at the end of every epoch, and resume from the last one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..data.records import SkippedFile
from ..features.runtime import ImageArrayDataset, collate_skip_failed
from ..progress import NullProgress, Progress
from .checkpoint import load_checkpoint, optimizer_from_flat, save_checkpoint
from .policy import FineTunePolicy

__all__ = ["FineTuneConfig", "FitResult", "train_network"]


@dataclass
class FineTuneConfig:
    """Hyper-parameters of a fine-tuning (or from-scratch) run."""

    epochs: int = 4
    lr: float = 1e-4  # head learning rate; the backbone gets lr * backbone_lr_ratio
    weight_decay: float = 0.01
    batch_size: int = 32
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.5
    patience: int = 3
    label_smoothing: float = 0.1
    augment: str = "light"  # light | default | none

    def __post_init__(self) -> None:
        if self.schedule not in {"cosine", "onecycle", "constant"}:
            raise ValueError(f"schedule must be cosine, onecycle or constant, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What a training stage did."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_acc: float = 0.0
    stopped_early: bool = False
    seconds: float = 0.0
    failed: list[SkippedFile] = field(default_factory=list)


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if schedule == "constant":
        return 1.0 if step >= warmup else (step + 1) / max(1, warmup)
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "onecycle":  # linear decay after the warm-up peak
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _autocast(device: str, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _evaluate(net: nn.Module, loader: DataLoader, labels: np.ndarray, device: str, precision: str) -> tuple[float, float]:
    net.eval()
    tot_loss, ok, n = 0.0, 0, 0
    with torch.inference_mode():
        for idx, x, _bad in loader:
            if x is None:
                continue
            y = torch.from_numpy(labels[idx.numpy()]).to(device)
            with _autocast(device, precision):
                logits = net(x.to(device)).float()
            tot_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            ok += int((logits.argmax(1) == y).sum())
            n += len(y)
    return tot_loss / max(n, 1), ok / max(n, 1)


def train_network(
    net: nn.Module,
    backbone: nn.Module,
    train_paths: Sequence[str],
    train_labels: np.ndarray,
    val_paths: Sequence[str],
    val_labels: np.ndarray,
    *,
    train_transform: Callable,
    eval_transform: Callable,
    policy: FineTunePolicy,
    config: FineTuneConfig,
    device: str = "cpu",
    precision: str = "fp32",
    num_workers: int = 1,
    class_weight: np.ndarray | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    stage: str = "fine_tune",
    progress: Progress | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``net`` (backbone + head); the best weights end up in ``net``.

    Args:
        net: the full network (its ``head`` always trains).
        backbone: the backbone inside ``net`` that ``policy`` partly unfreezes.
        train_paths, train_labels: training images and integer labels.
        val_paths, val_labels: validation images (early stopping, best checkpoint).
        train_transform: PIL -> tensor with augmentation.
        eval_transform: PIL -> array/tensor without augmentation.
        policy: which backbone groups train, at which LR ratio.
        config: epochs, LRs, schedule, patience...
        checkpoint_dir: where ``best/`` and ``last/`` checkpoints go (None: nowhere).
        resume: continue from ``checkpoint_dir/last`` if it exists.
        stage: name used in history records and progress bars.
    """
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    torch.manual_seed(seed)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    net.to(device)

    head_params = list(net.head.parameters())  # type: ignore[union-attr]
    for p in head_params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": head_params, "lr": config.lr, "name": "head"}], lr=config.lr, weight_decay=config.weight_decay
    )
    result = FitResult()
    start_epoch = 1
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    best_state: dict[str, torch.Tensor] | None = None
    if resume and ckpt is not None and (ckpt / "last").exists():
        model_sd, optim_t, meta = load_checkpoint(ckpt / "last")
        policy.load_state_dict(meta["policy"])  # keeps what it had unfrozen
        net.load_state_dict(model_sd)
        policy.apply(backbone, optimizer, config.lr)
        optimizer_from_flat(optimizer, optim_t, meta["optimizer"])
        result.history = meta["history"]
        result.best_epoch = int(meta["best_epoch"])
        result.best_val_loss = float(meta["best_val_loss"])
        result.best_val_acc = float(meta.get("best_val_acc", 0.0))
        start_epoch = int(meta["epoch"]) + 1
        if (ckpt / "best").exists():
            best_state = load_checkpoint(ckpt / "best")[0]
        progress.message(f"resumed {stage} from {ckpt / 'last'} at epoch {start_epoch}")
    else:
        policy.apply(backbone, optimizer, config.lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    train_ds = ImageArrayDataset(train_paths, train_transform)
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_ds, batch_size=config.batch_size, shuffle=True, generator=g, drop_last=len(train_ds) > config.batch_size,
        num_workers=num_workers, collate_fn=collate_skip_failed, persistent_workers=num_workers > 0,
        pin_memory=device.startswith("cuda"),
    )
    val_loader = DataLoader(
        ImageArrayDataset(val_paths, eval_transform), batch_size=config.batch_size * 2,
        num_workers=num_workers, collate_fn=collate_skip_failed, persistent_workers=num_workers > 0,
    )
    steps_per_epoch = max(1, len(train_loader))
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)
    bad_epochs = 0 if not result.history else sum(1 for _ in ())  # recomputed below
    if result.history:
        bad_epochs = start_epoch - 1 - result.best_epoch
    failed_paths: dict[str, str] = {}

    for epoch in range(start_epoch, config.epochs + 1):
        e0 = time.perf_counter()
        policy.train_mode(net, backbone)
        task = progress.task(f"{stage} epoch {epoch}/{config.epochs}", total=len(train_ds))
        tot_loss, tot_ok, n = 0.0, 0, 0
        step = (epoch - 1) * steps_per_epoch
        for idx, x, bad in train_loader:
            for i, reason in bad:
                failed_paths[str(train_paths[i])] = reason
            if x is None:
                continue
            f = _lr_factor(step, total_steps, warmup, config.schedule)
            for grp, base in zip(optimizer.param_groups, base_lrs):
                grp["lr"] = base * f
            y = torch.from_numpy(train_labels[idx.numpy()]).to(device)
            with _autocast(device, precision):
                logits = net(x.to(device)).float()
            loss = F.cross_entropy(logits, y, weight=cw, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            tot_loss += loss.item() * len(y)
            tot_ok += int((logits.argmax(1) == y).sum())
            n += len(y)
            task.advance(len(idx) + len(bad))
            task.update(info=f"loss {tot_loss / max(n, 1):.3f}")
        task.close()
        val_loss, val_acc = _evaluate(net, val_loader, val_labels, device, precision)
        rec = {
            "stage": stage,
            "epoch": epoch,
            "train_loss": tot_loss / max(n, 1),
            "train_acc": tot_ok / max(n, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - e0,
            "best": False,
        }
        improved = val_loss < result.best_val_loss - 1e-6
        if improved:
            result.best_val_loss, result.best_val_acc, result.best_epoch = val_loss, val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            rec["best"] = True
            bad_epochs = 0
        else:
            bad_epochs += 1
        result.history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        progress.message(
            f"{stage} epoch {epoch}: train loss {rec['train_loss']:.3f} acc {rec['train_acc']:.3f} | "
            f"val loss {val_loss:.3f} acc {val_acc:.3f}{'  (best)' if improved else ''}"
        )
        if ckpt is not None:
            meta = {
                "stage": stage,
                "epoch": epoch,
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "best_val_acc": result.best_val_acc,
                "policy": policy.state_dict(),
                "config": config.to_dict(),
            }
            if improved:
                save_checkpoint(ckpt / "best", net, meta)
            save_checkpoint(ckpt / "last", net, meta, optimizer)
        if bad_epochs >= config.patience:
            result.stopped_early = True
            progress.message(f"{stage}: early stop after epoch {epoch} (no val-loss gain for {bad_epochs} epochs)")
            break

    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    result.failed = [SkippedFile(p, r) for p, r in failed_paths.items()]
    result.seconds = time.perf_counter() - t0
    return result
