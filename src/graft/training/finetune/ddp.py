"""Fine-tuning over several processes (DistributedDataParallel), with one process's semantics.

:func:`~graft.training.finetune.train.train_network` asks :meth:`DataParallel.from_env` once;
in a single process it gets None and nothing changes. In a job of N processes:

* **Batch and learning rate.** ``--ft-batch-size`` stays the *global* batch: each rank
  takes ``batch_size / N`` images per step and DDP averages the gradients, so a step
  sees the same number of images and the same mean gradient as one process, and the
  learning rate, warm-up and schedule (steps per epoch) are unchanged. No scaling rule
  is applied because none is needed: the global batch does not grow with N.
* **Sampling.** A seeded :class:`~torch.utils.data.DistributedSampler` (reshuffled per
  epoch) splits the training images; validation is split rank ``r``, ``r+N``, ... and
  the loss and accuracy are all-reduced, weighted by share size, to the full-set figures.
* **BatchNorm.** With the default policy BatchNorm statistics are frozen and identical on
  every rank (DDP broadcasts rank 0's weights and buffers when it wraps the network);
  with ``train_bn`` DDP also broadcasts rank 0's running statistics before every step,
  so all ranks keep one set of statistics.
* **Decisions.** Early stopping is taken from rank 0 and broadcast, so every rank stops
  after the same epoch; checkpoints are written by rank 0 alone and hold nothing
  rank-specific, so ``--resume`` continues them with any number of processes.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from graft import distributed
from graft.features.embedder import ImageArrayDataset, collate_skip_failed, make_loader
from graft.progress import Task
from graft.validation import invalid_parameter

__all__ = ["DataParallel"]

_DDP_ARGS = set(inspect.signature(DistributedDataParallel.__init__).parameters)


class DataParallel:
    """The DDP wiring of one fine-tuning run (see the module docstring for the semantics)."""

    def __init__(self, batch_size: int, device: str, seed: int) -> None:
        self.world = distributed.world_size()
        self.rank = distributed.rank()
        if batch_size % self.world:
            raise invalid_parameter(
                "ft_batch_size",
                "train_network",
                f"a multiple of the {self.world} processes (the global batch)",
                batch_size,
            )
        self.global_batch = batch_size
        self.local_batch = batch_size // self.world
        self.device = device
        self.seed = seed
        self.sampler: DistributedSampler | None = None
        self.n_val = 0

    @classmethod
    def from_env(cls, batch_size: int, device: str, seed: int) -> DataParallel | None:
        """The wiring for this job, or None in a single process."""
        if not distributed.is_distributed():
            return None
        distributed.init(device)
        return cls(batch_size, device, seed)

    def loaders(
        self,
        train_paths: Sequence[str],
        val_paths: Sequence[str],
        train_transform: Callable,
        eval_transform: Callable,
        num_workers: int,
    ) -> tuple[DataLoader, DataLoader]:
        """This rank's training loader (its share of each global batch) and its share of validation."""
        train_ds = ImageArrayDataset(train_paths, train_transform)
        self.sampler = DistributedSampler(
            train_ds, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=False
        )
        common: dict[str, Any] = dict(
            num_workers=num_workers, collate_fn=collate_skip_failed, persistent_workers=num_workers > 0
        )
        train_loader = make_loader(
            train_ds,
            batch_size=self.local_batch,
            sampler=self.sampler,
            drop_last=len(train_ds) > self.global_batch,  # as one process decides it, on the global batch
            pin_memory=self.device.startswith("cuda"),
            **common,
        )
        # A Subset keeps the dataset's own indices, so labels are looked up in the full list.
        share = list(range(self.rank, len(val_paths), self.world))
        self.n_val = len(val_paths)
        val_ds = Subset(ImageArrayDataset(val_paths, eval_transform), share)
        return train_loader, make_loader(val_ds, batch_size=self.local_batch * 2, **common)

    def wrap(self, net: nn.Module, *, train_bn: bool = False) -> nn.Module:
        """``net`` in DDP (gradient all-reduce); call after the policy has frozen what stays frozen."""
        ids = [torch.cuda.current_device()] if self.device.startswith("cuda") else None
        # Rank 0's weights and buffers are copied to every rank when wrapping, whatever the flag.
        sync = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_ARGS else "broadcast_buffers"
        kwargs: dict[str, Any] = {sync: train_bn}
        # Depthwise kernels (C, 1, k, k) get gradients whose stride on the size-1 dim differs from
        # DDP's bucket view: the same memory layout, reported by a warning in every process.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(net, device_ids=ids, **kwargs)

    def epoch_fn(self, fit_epoch: Callable[[int, Task], dict[str, float]]) -> Callable[[int, Task], dict[str, float]]:
        """``fit_epoch`` with the sampler reseeded per epoch and the training figures averaged over ranks."""

        def run(epoch: int, task: Task) -> dict[str, float]:
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            stats = fit_epoch(epoch, task)
            keys = sorted(stats)
            t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
            torch.distributed.all_reduce(t)
            return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

        return run

    def reduce_eval(self, val_loss: float, val_acc: float) -> tuple[float, float]:
        """This rank's validation means -> the means over the whole validation set."""
        n = len(range(self.rank, self.n_val, self.world))
        t = torch.tensor([val_loss * n, val_acc * n, float(n)], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        total = max(float(t[2]), 1.0)
        return float(t[0]) / total, float(t[1]) / total

    @staticmethod
    def agree(decision: bool) -> bool:
        """Rank 0's decision (stop now, keep the result) on every rank."""
        return bool(distributed.broadcast_object(decision))

    @property
    def writes(self) -> bool:
        """Whether this rank writes checkpoints (rank 0)."""
        return self.rank == 0
