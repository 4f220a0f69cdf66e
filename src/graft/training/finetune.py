"""Stage 2: fine-tune the top of the backbone (and the from-scratch baseline).

One loop serves both: a :class:`~graft.training.policy.FineTunePolicy` decides which
layers train. AdamW with discriminative learning rates, linear warm-up then cosine
(or one-cycle), bf16/fp16 autocast where the machine runs it fast, early stopping on
validation loss with the best weights restored, an atomic checkpoint after every
improvement and at the end of every epoch, and resume from the last one.

How each step runs is :mod:`.fast`'s choice: a speed plan measured once per machine
and model (channels-last, bf16, ``torch.compile``; :mod:`.speed`) and, when only the
last blocks train, the frozen prefix's activations cached per augmented view (:mod:`.prefix`).
This module wires the run together; the epoch itself is :mod:`.loop`'s
``train_one_epoch``/``evaluate``, early stopping and checkpoints are :mod:`.callbacks`.
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
from torch.utils.data import DataLoader

from graft import distributed
from graft.data.records import SkippedFile
from graft.features.embedder import ImageArrayDataset, collate_skip_failed, make_loader
from graft.progress import NullProgress, Progress, Task
from graft.training.callbacks import Checkpointer, EarlyStopping
from graft.training.ddp import DataParallel
from graft.training.fast import FastPath, fast_path, plain_path
from graft.training.loop import _lr_factor, train_one_epoch
from graft.training.policy import FineTunePolicy
from graft.validation import check_choice, check_number

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
    prefix_views: int = 2  # augmented views of the frozen prefix cached (0: recompute it every epoch)

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, ("cosine", "onecycle", "constant"), "FineTuneConfig")
        check_number("epochs", self.epochs, "FineTuneConfig", low=1, integer=True)
        check_number("prefix_views", self.prefix_views, "FineTuneConfig", low=0, integer=True)

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
    stopped_by_budget: bool = False  # ended before its planned epochs because the next would pass the deadline
    seconds: float = 0.0
    failed: list[SkippedFile] = field(default_factory=list)


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
    deadline: float | None = None,
    eval_name: str = "val",
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
        precision: ``fp32|bf16|fp16`` as given, or ``auto``: measured (see :mod:`.speed`).
        checkpoint_dir: where ``best/`` and ``last/`` checkpoints go (None: nowhere).
        resume: continue from ``checkpoint_dir/last`` if it exists.
        stage: name used in history records and progress bars.
        deadline: a ``time.perf_counter()`` value: after an epoch, stop if another epoch as long
            as the last one would end past it (a time budget is then overrun by less than one epoch).
        eval_name: what the ``val_paths`` images are called in progress lines.
    """
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    torch.manual_seed(seed)
    train_labels = np.asarray(train_labels, dtype=np.int64)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    net.to(device)
    optimizer = _head_optimizer(net, config)
    result, stopper = FitResult(), EarlyStopping(config.patience)
    ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir else None
    start_epoch = _start(
        net, backbone, optimizer, policy, config, result, stopper, ckpt if resume else None, progress, stage
    )
    ddp = DataParallel.from_env(config.batch_size, device, seed)  # None in a single process
    train_loader, val_loader = _loaders(
        train_paths, val_paths, train_transform, eval_transform, config, num_workers, device, seed, ddp
    )
    policy.train_mode(net, backbone)  # the speed plan is measured in training's module modes
    fast = _step_path(net, backbone, (train_loader, val_loader), ddp, policy, config, start_epoch, device,
                      precision, seed, progress)  # fmt: skip
    failed_paths: dict[str, str] = {}
    span = {"epochs": config.epochs}  # where the LR schedule ends; a deadline can bring it forward
    fit_epoch = _epoch_fn(fast, train_labels, train_paths, optimizer, config, device, class_weight, failed_paths, span)
    fit_epoch = fit_epoch if ddp is None else ddp.epoch_fn(fit_epoch)
    epoch = start_epoch
    while epoch <= span["epochs"]:
        e0 = time.perf_counter()
        policy.train_mode(net, backbone)
        task = progress.task(f"{stage} epoch {epoch}/{span['epochs']}", total=len(train_paths))
        stats = fit_epoch(epoch, task)
        task.close()
        val_loss, val_acc = fast.evaluate(net, val_labels, device)
        val_loss, val_acc = (val_loss, val_acc) if ddp is None else ddp.reduce_eval(val_loss, val_acc)
        rec = {
            "stage": stage, "epoch": epoch, **stats, "val_loss": val_loss, "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - e0, "best": False,
        }  # fmt: skip
        writer = ckpt if ddp is None or ddp.writes else None  # checkpoints: rank 0 only
        stop = _end_epoch(rec, net, optimizer, policy, config, result, stopper, writer, progress, on_epoch, eval_name)
        if not stop and deadline is not None and epoch < span["epochs"]:
            stop = _fit_deadline(span, epoch, rec["seconds"], deadline, ddp, result, progress, stage)
        if stop if ddp is None else ddp.agree(stop):
            break
        epoch += 1
    stopper.restore(net)
    net.eval()
    result.failed = [SkippedFile(p, r) for p, r in failed_paths.items()]
    result.seconds = time.perf_counter() - t0
    return result


def _fit_deadline(
    span: dict[str, int], epoch: int, epoch_s: float, deadline: float, ddp: DataParallel | None, result: FitResult,
    progress: Progress, stage: str,
) -> bool:  # fmt: skip
    """Bring the schedule's end forward to the epochs that still fit before ``deadline``; True: stop now.

    Epochs are assumed as long as the last one. Shortening the schedule (rather than
    cutting it) lets the learning rate still anneal to zero by the last epoch that fits.
    """
    fits = int(max(deadline - time.perf_counter(), 0.0) // max(epoch_s, 1e-6))
    end = min(span["epochs"], epoch + fits)
    end = end if ddp is None else int(distributed.broadcast_object(end))  # rank 0's clock decides
    if end >= span["epochs"]:
        return False
    result.stopped_by_budget = True
    if end <= epoch:
        progress.message(f"{stage}: stopped after epoch {epoch}: another epoch would pass the time budget")
        return True
    progress.message(f"{stage}: {end - epoch} more epoch(s) fit in the time budget; the schedule now ends at {end}")
    span["epochs"] = end
    return False


def _step_path(
    net: nn.Module, backbone: nn.Module, loaders: tuple[DataLoader, DataLoader], ddp: DataParallel | None,
    policy: FineTunePolicy, config: FineTuneConfig, start_epoch: int, device: str, precision: str, seed: int,
    progress: Progress,
) -> FastPath:  # fmt: skip
    """How each step runs: the measured fast path alone; under DDP the plain step, the same on every rank."""
    if ddp is None:
        return fast_path(
            net, backbone, *loaders, batch_size=config.batch_size, views=config.prefix_views,
            epochs=config.epochs - start_epoch + 1, device=device, precision=precision, seed=seed, progress=progress,
        )  # fmt: skip
    # No per-process measurement (ranks could disagree) and no prefix cache.
    prec = "fp32" if precision == "auto" else precision
    return plain_path(ddp.wrap(net, train_bn=policy.train_bn), *loaders, config.batch_size, seed, precision=prec)


def _head_optimizer(net: nn.Module, config: FineTuneConfig) -> torch.optim.AdamW:
    """AdamW over the head alone; the policy adds the backbone's groups (and their LRs) later."""
    head_params = list(net.head.parameters())  # type: ignore[union-attr]
    for p in head_params:
        p.requires_grad_(True)
    return torch.optim.AdamW(
        [{"params": head_params, "lr": config.lr, "name": "head"}], lr=config.lr, weight_decay=config.weight_decay
    )


def _start(
    net: nn.Module,
    backbone: nn.Module,
    optimizer: torch.optim.Optimizer,
    policy: FineTunePolicy,
    config: FineTuneConfig,
    result: FitResult,
    stopper: EarlyStopping,
    ckpt: Checkpointer | None,
    progress: Progress,
    stage: str,
) -> int:
    """Resume from ``ckpt``'s ``last/`` where there is one, else apply ``policy`` afresh; the first epoch to run.

    A resumed run carries its history and best scores on, so epochs number on and
    early stopping counts the epochs since the best one, as if never interrupted.
    """
    meta = (
        None
        if ckpt is None
        else ckpt.resume(net, optimizer, policy=policy, backbone=backbone, head_lr=config.lr, early_stopping=stopper)
    )
    for note in ckpt.notes if ckpt is not None else []:
        progress.warn(note)
    if ckpt is None or meta is None:
        policy.apply(backbone, optimizer, config.lr)
        return 1
    result.history = meta["history"]
    result.best_epoch, result.best_val_loss = stopper.best_epoch, stopper.best_val_loss
    result.best_val_acc = float(meta.get("best_val_acc", 0.0))
    start_epoch = int(meta["epoch"]) + 1
    progress.message(f"resumed {stage} from {ckpt.resumed_from} at epoch {start_epoch}")
    return start_epoch


def _loaders(
    train_paths: Sequence[str],
    val_paths: Sequence[str],
    train_transform: Callable,
    eval_transform: Callable,
    config: FineTuneConfig,
    num_workers: int,
    device: str,
    seed: int,
    ddp: DataParallel | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Shuffled (seeded) training loader and a plain validation loader at twice the batch size (DDP: this rank's)."""
    if ddp is not None:
        return ddp.loaders(train_paths, val_paths, train_transform, eval_transform, num_workers)
    train_ds = ImageArrayDataset(train_paths, train_transform)
    g = torch.Generator().manual_seed(seed)
    train_loader = make_loader(
        train_ds,
        batch_size=config.batch_size,
        shuffle=True,
        generator=g,
        drop_last=len(train_ds) > config.batch_size,
        num_workers=num_workers,
        collate_fn=collate_skip_failed,
        persistent_workers=num_workers > 0,
        pin_memory=device.startswith("cuda"),
    )
    val_loader = make_loader(
        ImageArrayDataset(val_paths, eval_transform),
        batch_size=config.batch_size * 2,
        num_workers=num_workers,
        collate_fn=collate_skip_failed,
        persistent_workers=num_workers > 0,
    )
    return train_loader, val_loader


def _epoch_fn(
    fast: FastPath,
    labels: np.ndarray,
    paths: Sequence[str],
    optimizer: torch.optim.Optimizer,
    config: FineTuneConfig,
    device: str,
    class_weight: np.ndarray | None,
    failed: dict[str, str],
    span: dict[str, int] | None = None,
) -> Callable[[int, Task], dict[str, float]]:
    """Bind what stays fixed across epochs: ``fn(epoch, task)`` runs :func:`train_one_epoch` on ``fast``'s batches.

    Call it once the policy has set the optimizer's groups: their LRs then are the
    schedule's base LRs. Undecodable images land in ``failed`` (path -> reason).
    """
    steps = fast.steps_per_epoch()
    span = span if span is not None else {"epochs": config.epochs}
    warmup = int(config.warmup_epochs * steps)

    def lr_at(step: int) -> float:  # reads the schedule's end each step: a deadline may move it
        return _lr_factor(step, total=steps * span["epochs"], warmup=warmup, schedule=config.schedule)

    base_lrs = [g["lr"] for g in optimizer.param_groups]
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)

    def on_skip(i: int, reason: str) -> None:
        failed[str(paths[i])] = reason

    def fit_epoch(epoch: int, task: Task) -> dict[str, float]:
        return train_one_epoch(
            fast.module,
            fast.train_batches(),
            labels,
            optimizer,
            base_lrs=base_lrs,
            lr_at=lr_at,
            step=(epoch - 1) * steps,
            device=device,
            precision=fast.plan.precision,
            class_weight=cw,
            label_smoothing=config.label_smoothing,
            task=task,
            on_skip=on_skip,
            forward=fast.forward,
            channels_last=fast.channels_last,
        )

    return fit_epoch


def _end_epoch(
    rec: dict[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    policy: FineTunePolicy,
    config: FineTuneConfig,
    result: FitResult,
    stopper: EarlyStopping,
    ckpt: Checkpointer | None,
    progress: Progress,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    eval_name: str = "val",
) -> bool:
    """Early stopping, history, ``on_epoch``, progress line and checkpoints for one epoch; True: stop."""
    improved = stopper.update(rec["epoch"], rec["val_loss"], net)
    if improved:
        result.best_val_loss, result.best_val_acc, result.best_epoch = rec["val_loss"], rec["val_acc"], rec["epoch"]
        rec["best"] = True
    result.history.append(rec)
    if on_epoch is not None:
        on_epoch(rec)
    progress.message(
        f"{rec['stage']} epoch {rec['epoch']}: train loss {rec['train_loss']:.3f} acc {rec['train_acc']:.3f} | "
        f"{eval_name} loss {rec['val_loss']:.3f} acc {rec['val_acc']:.3f}{'  (best)' if improved else ''}"
    )
    if ckpt is not None:
        meta = {
            "stage": rec["stage"],
            "epoch": rec["epoch"],
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "best_val_acc": result.best_val_acc,
            "policy": policy.state_dict(),
            "config": config.to_dict(),
        }
        ckpt.save(net, meta, optimizer, improved=improved)
    if stopper.should_stop and rec["epoch"] < config.epochs:  # at the last planned epoch nothing was cut short
        result.stopped_early = True
        progress.message(
            f"{rec['stage']}: early stop after epoch {rec['epoch']} "
            f"(no {eval_name}-loss gain for {stopper.bad_epochs} epochs)"
        )
    return stopper.should_stop
