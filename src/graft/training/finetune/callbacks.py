"""The fine-tuning loop's checkpoints, as a callback: :class:`Checkpointer` owns the ``best/``
and ``last/`` checkpoint folders and resuming from them (early stopping: :mod:`graft.training.early_stopping`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from graft.training.early_stopping import EarlyStopping
from graft.training.finetune.checkpoint import load_checkpoint, optimizer_from_flat, save_checkpoint
from graft.training.finetune.policy import FineTunePolicy

__all__ = ["Checkpointer"]


class Checkpointer:
    """Writes ``folder/best`` on improvement and ``folder/last`` every epoch; resumes from them.

    ``best/`` holds weights only (what the run keeps); ``last/`` adds the optimizer
    state, so a run continues where it stopped rather than from the best epoch.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @property
    def best(self) -> Path:
        return self.folder / "best"

    @property
    def last(self) -> Path:
        return self.folder / "last"

    def save(
        self, net: nn.Module, meta: Mapping[str, Any], optimizer: torch.optim.Optimizer, *, improved: bool
    ) -> None:
        """Checkpoint one finished epoch (``best/`` first: ``last/`` then never points past it)."""
        if improved:
            save_checkpoint(self.best, net, meta)
        save_checkpoint(self.last, net, meta, optimizer)

    def resume(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        policy: FineTunePolicy,
        backbone: nn.Module,
        head_lr: float,
        early_stopping: EarlyStopping | None = None,
    ) -> dict[str, Any] | None:
        """Restore ``net``, ``policy``, ``optimizer`` (and ``early_stopping``) from ``last/``.

        The saved policy wins over the one passed in, so a resumed run keeps the groups it
        had unfrozen; its parameter groups are rebuilt before the optimizer state is loaded
        into them. The best weights come back from ``best/`` where it exists.

        Returns:
            The ``last/`` checkpoint's meta (epoch, history, ...), or None if there is none.
        """
        if not self.last.exists():
            return None
        model_sd, optim_t, meta = load_checkpoint(self.last)
        policy.load_state_dict(meta["policy"])  # keeps what it had unfrozen
        net.load_state_dict(model_sd)
        policy.apply(backbone, optimizer, head_lr)
        optimizer_from_flat(optimizer, optim_t, meta["optimizer"])
        if early_stopping is not None:
            best_epoch = int(meta["best_epoch"])
            early_stopping.load_state_dict(
                {
                    "best_epoch": best_epoch,
                    "best_val_loss": meta["best_val_loss"],
                    "bad_epochs": int(meta["epoch"]) - best_epoch if meta["history"] else 0,
                }
            )
            if self.best.exists():
                early_stopping.best_state = load_checkpoint(self.best)[0]
        return meta
