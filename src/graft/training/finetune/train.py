"""Stage 2: fine-tune the top of the backbone (and the from-scratch baseline).

One loop serves both: a :class:`~graft.training.finetune.policy.FineTunePolicy` decides which
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
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graft import distributed
from graft.data.records import SkippedFile
from graft.features.embedder import ImageArrayDataset, collate_skip_failed, make_loader
from graft.progress import NullProgress, Progress, Task
from graft.training.early_stopping import EarlyStopping
from graft.training.finetune.callbacks import Checkpointer
from graft.training.finetune.ddp import DataParallel
from graft.training.finetune.fast import FastPath, fast_path, plain_path
from graft.training.finetune.loop import Stepper, _lr_factor, train_one_epoch
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy

__all__ = ["FineTuneConfig", "FitResult", "TrainEnv", "train_network"]


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


@dataclass
class _Loop:
    """One run's state, shared by the steps of :func:`train_network`.

    ``epochs`` is where the LR schedule ends (a deadline can bring it forward); ``ddp``
    is None in a single process; ``ckpt`` is None when nothing is checkpointed.
    """

    net: nn.Module
    backbone: nn.Module
    optimizer: torch.optim.Optimizer
    policy: FineTunePolicy
    config: FineTuneConfig
    env: TrainEnv
    progress: Progress
    stopper: EarlyStopping
    result: FitResult = field(default_factory=FitResult)
    ckpt: Checkpointer | None = None
    ddp: DataParallel | None = None
    epochs: int = 0

    @property
    def writer(self) -> Checkpointer | None:
        """The checkpointer this process writes with: rank 0 only."""
        return self.ckpt if self.ddp is None or self.ddp.writes else None


def train_network(
    net: nn.Module,
    backbone: nn.Module,
    train: tuple[Sequence[str], np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    *,
    transforms: tuple[Callable, Callable],
    config: FineTuneConfig,
    policy: FineTunePolicy,
    env: TrainEnv,
) -> FitResult:
    """Train ``net`` (backbone + head); the best weights end up in ``net``.

    Args:
        net: the full network (its ``head`` always trains).
        backbone: the backbone inside ``net`` that ``policy`` partly unfreezes.
        train: training images and integer labels.
        val: validation images and labels (early stopping, best checkpoint).
        transforms: (training: PIL -> tensor with augmentation, evaluation: PIL -> array without);
            the training one at ``config.train_preprocessing(pre)``'s size, which the caller builds.
        config: epochs, LRs, schedule, patience...
        policy: which backbone groups train, at which LR ratio (it records what it unfroze).
        env: device, precision (``auto``: measured, see :mod:`.speed`), checkpoints, resume,
            deadline, names and progress (:class:`~graft.training.finetune.options.TrainEnv`).
    """
    t0 = time.perf_counter()
    train_paths, train_labels = _as_set(train)
    val_labels = _as_set(val)[1]
    loop = _new_loop(net, backbone, config, policy, env)
    start_epoch = _start(loop)
    loop.ddp = DataParallel.from_env(config.batch_size, env.device, env.seed)  # None in a single process
    loaders = _loaders(loop, train_paths, list(val[0]), transforms)
    policy.train_mode(net, backbone)  # the speed plan is measured in training's module modes
    fast = _step_path(loop, loaders, start_epoch)
    failed_paths: dict[str, str] = {}
    fit_epoch = _epoch_fn(loop, fast, train_labels, train_paths, failed_paths)
    fit_epoch = fit_epoch if loop.ddp is None else loop.ddp.epoch_fn(fit_epoch)
    epoch = start_epoch
    while epoch <= loop.epochs:
        rec = _run_epoch(loop, epoch, fit_epoch, fast, val_labels, len(train_paths))
        stop = _end_epoch(loop, rec)
        if not stop and env.deadline is not None and epoch < loop.epochs:
            stop = _fit_deadline(loop, epoch, rec["seconds"])
        if stop if loop.ddp is None else loop.ddp.agree(stop):
            break
        epoch += 1
    loop.stopper.restore(net)
    net.eval()
    loop.result.failed = [SkippedFile(p, r) for p, r in failed_paths.items()]
    loop.result.seconds = time.perf_counter() - t0
    return loop.result


def _as_set(pair: tuple[Sequence[str], np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(paths, labels) as a list and an int64 array (multi-label: a float32 0/1 matrix, trained with BCE)."""
    y = np.asarray(pair[1])
    return list(pair[0]), y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)


def _new_loop(
    net: nn.Module, backbone: nn.Module, config: FineTuneConfig, policy: FineTunePolicy, env: TrainEnv
) -> _Loop:
    """Seed, move ``net`` to the device, and set up the head's optimizer, early stopping and checkpoints."""
    torch.manual_seed(env.seed)
    net.to(env.device)
    return _Loop(
        net,
        backbone,
        _head_optimizer(net, config),
        policy,
        config,
        env,
        progress=env.progress or NullProgress(),
        stopper=EarlyStopping(config.patience),
        ckpt=Checkpointer(env.checkpoint_dir) if env.checkpoint_dir else None,
        epochs=config.epochs,
    )


def _run_epoch(
    loop: _Loop,
    epoch: int,
    fit_epoch: Callable[[int, Task], dict[str, float]],
    fast: FastPath,
    val_labels: np.ndarray,
    n_train: int,
) -> dict[str, Any]:
    """Train one epoch and validate: the epoch's history record (not yet marked best)."""
    e0 = time.perf_counter()
    stage = loop.env.stage
    loop.policy.train_mode(loop.net, loop.backbone)
    task = loop.progress.task(f"{stage} epoch {epoch}/{loop.epochs}", total=n_train)
    stats = fit_epoch(epoch, task)
    task.close()
    val_loss, val_acc = fast.evaluate(loop.net, val_labels, loop.env.device)
    if loop.ddp is not None:
        val_loss, val_acc = loop.ddp.reduce_eval(val_loss, val_acc)
    return {
        "stage": stage,
        "epoch": epoch,
        **stats,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": loop.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - e0,
        "best": False,
    }


def _fit_deadline(loop: _Loop, epoch: int, epoch_s: float) -> bool:
    """Bring the schedule's end forward to the epochs that still fit before the deadline; True: stop now.

    Epochs are assumed as long as the last one. Shortening the schedule (rather than
    cutting it) lets the learning rate still anneal to zero by the last epoch that fits.
    """
    deadline = loop.env.deadline
    if deadline is None:  # no budget: the schedule runs as planned
        return False
    stage = loop.env.stage
    fits = int(max(deadline - time.perf_counter(), 0.0) // max(epoch_s, 1e-6))
    end = min(loop.epochs, epoch + fits)
    end = end if loop.ddp is None else int(distributed.broadcast_object(end))  # rank 0's clock decides
    if end >= loop.epochs:
        return False
    loop.result.stopped_by_budget = True
    if end <= epoch:
        loop.progress.message(f"{stage}: stopped after epoch {epoch}: another epoch would pass the time budget")
        return True
    loop.progress.message(
        f"{stage}: {end - epoch} more epoch(s) fit in the time budget; the schedule now ends at {end}"
    )
    loop.epochs = end
    return False


def _step_path(loop: _Loop, loaders: tuple[DataLoader, DataLoader], start_epoch: int) -> FastPath:
    """How each step runs: the measured fast path alone; under DDP the plain step, the same on every rank."""
    config = loop.config
    env = loop.env
    if loop.ddp is None:
        epochs = config.epochs - start_epoch + 1
        return fast_path(
            loop.net, loop.backbone, loaders, config=config, epochs=epochs, env=env, progress=loop.progress
        )
    # No per-process measurement (ranks could disagree) and no prefix cache.
    prec = "fp32" if env.precision == "auto" else env.precision
    module = loop.ddp.wrap(loop.net, train_bn=loop.policy.train_bn)
    return plain_path(module, *loaders, config.batch_size, env.seed, precision=prec)


def _head_optimizer(net: nn.Module, config: FineTuneConfig) -> torch.optim.AdamW:
    """AdamW over the head alone; the policy adds the backbone's groups (and their LRs) later."""
    head_params = list(net.head.parameters())  # type: ignore[union-attr]
    for p in head_params:
        p.requires_grad_(True)
    return torch.optim.AdamW(
        [{"params": head_params, "lr": config.lr, "name": "head"}], lr=config.lr, weight_decay=config.weight_decay
    )


def _start(loop: _Loop) -> int:
    """Resume from the checkpoint's ``last/`` where asked and there is one, else apply the policy afresh.

    Returns the first epoch to run. A resumed run carries its history and best scores on,
    so epochs number on and early stopping counts the epochs since the best one, as if
    never interrupted.
    """
    ckpt = loop.ckpt if loop.env.resume else None
    stopper = loop.stopper
    meta = (
        None
        if ckpt is None
        else ckpt.resume(
            loop.net,
            loop.optimizer,
            policy=loop.policy,
            backbone=loop.backbone,
            head_lr=loop.config.lr,
            early_stopping=stopper,
        )
    )
    for note in ckpt.notes if ckpt is not None else []:
        loop.progress.warn(note)
    if ckpt is None or meta is None:
        loop.policy.apply(loop.backbone, loop.optimizer, loop.config.lr)
        return 1
    result = loop.result
    result.history = meta["history"]
    result.best_epoch = stopper.best_epoch
    result.best_val_loss = stopper.best_val_loss
    result.best_val_acc = float(meta.get("best_val_acc", 0.0))
    start_epoch = int(meta["epoch"]) + 1
    loop.progress.message(f"resumed {loop.env.stage} from {ckpt.resumed_from} at epoch {start_epoch}")
    return start_epoch


def _loaders(
    loop: _Loop, train_paths: Sequence[str], val_paths: Sequence[str], transforms: tuple[Callable, Callable]
) -> tuple[DataLoader, DataLoader]:
    """Shuffled (seeded) training loader and a plain validation loader at twice the batch size (DDP: this rank's)."""
    train_transform, eval_transform = transforms
    env = loop.env
    batch_size = loop.config.batch_size
    num_workers = 1 if env.num_workers is None else env.num_workers
    if loop.ddp is not None:
        return loop.ddp.loaders(train_paths, val_paths, train_transform, eval_transform, num_workers)
    train_ds = ImageArrayDataset(train_paths, train_transform)
    g = torch.Generator().manual_seed(env.seed)
    train_loader = make_loader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        generator=g,
        drop_last=len(train_ds) > batch_size,
        num_workers=num_workers,
        collate_fn=collate_skip_failed,
        persistent_workers=num_workers > 0,
        pin_memory=env.device.startswith("cuda"),
    )
    val_loader = make_loader(
        ImageArrayDataset(val_paths, eval_transform),
        batch_size=batch_size * 2,
        num_workers=num_workers,
        collate_fn=collate_skip_failed,
        persistent_workers=num_workers > 0,
    )
    return train_loader, val_loader


def _epoch_fn(
    loop: _Loop, fast: FastPath, labels: np.ndarray, paths: Sequence[str], failed: dict[str, str]
) -> Callable[[int, Task], dict[str, float]]:
    """Bind what stays fixed across epochs: ``fn(epoch, task)`` runs :func:`train_one_epoch` on ``fast``'s batches.

    Call it once the policy has set the optimizer's groups: their LRs then are the
    schedule's base LRs. Undecodable images land in ``failed`` (path -> reason).
    """
    config = loop.config
    device = loop.env.device
    steps = fast.steps_per_epoch()
    warmup = int(config.warmup_epochs * steps)

    def lr_at(step: int) -> float:  # reads the schedule's end each step: a deadline may move it
        return _lr_factor(step, total=steps * loop.epochs, warmup=warmup, schedule=config.schedule)

    class_weight = loop.env.class_weight
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=device)
    stepper = Stepper(
        loop.optimizer,
        base_lrs=[g["lr"] for g in loop.optimizer.param_groups],
        lr_at=lr_at,
        device=device,
        precision=fast.plan.precision,
        class_weight=cw,
        label_smoothing=config.label_smoothing,
        forward=fast.forward,
        channels_last=fast.channels_last,
    )

    def on_skip(i: int, reason: str) -> None:
        failed[str(paths[i])] = reason

    def fit_epoch(epoch: int, task: Task) -> dict[str, float]:
        return train_one_epoch(
            fast.module, fast.train_batches(), labels, stepper, step=(epoch - 1) * steps, task=task, on_skip=on_skip
        )

    return fit_epoch


def _end_epoch(loop: _Loop, rec: dict[str, Any]) -> bool:
    """Early stopping, history, ``on_epoch``, progress line and checkpoints for one epoch; True: stop."""
    result = loop.result
    stopper = loop.stopper
    eval_name = loop.env.eval_name
    improved = stopper.update(rec["epoch"], rec["val_loss"], loop.net)
    if improved:
        result.best_val_loss = rec["val_loss"]
        result.best_val_acc = rec["val_acc"]
        result.best_epoch = rec["epoch"]
        rec["best"] = True
    result.history.append(rec)
    if loop.env.on_epoch is not None:
        loop.env.on_epoch(rec)
    loop.progress.message(
        f"{rec['stage']} epoch {rec['epoch']}: train loss {rec['train_loss']:.3f} acc {rec['train_acc']:.3f} | "
        f"{eval_name} loss {rec['val_loss']:.3f} acc {rec['val_acc']:.3f}{'  (best)' if improved else ''}"
    )
    writer = loop.writer
    if writer is not None:
        meta = {
            "stage": rec["stage"],
            "epoch": rec["epoch"],
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "best_val_acc": result.best_val_acc,
            "policy": loop.policy.state_dict(),
            "config": loop.config.to_dict(),
        }
        writer.save(loop.net, meta, loop.optimizer, improved=improved)
    if stopper.should_stop and rec["epoch"] < loop.config.epochs:  # at the last planned epoch nothing was cut short
        result.stopped_early = True
        loop.progress.message(
            f"{rec['stage']}: early stop after epoch {rec['epoch']} "
            f"(no {eval_name}-loss gain for {stopper.bad_epochs} epochs)"
        )
    return stopper.should_stop
