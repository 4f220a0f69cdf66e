"""Small objects the training loops share, one per concern (as Lightning's callbacks).

:class:`EarlyStopping` keeps the best weights and the patience count, for the
fine-tuning loop and the feature-head SGD loop alike; :class:`Checkpointer` owns the
``best/`` and ``last/`` checkpoint folders and resuming from them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from graft.training.checkpoint import load_checkpoint, optimizer_from_flat, save_checkpoint
from graft.training.policy import FineTunePolicy

__all__ = ["Checkpointer", "EarlyStopping"]


class EarlyStopping:
    """Stop when validation loss has not improved for ``patience`` epochs; keep the best weights.

    An epoch improves when its loss beats the best by more than ``min_delta`` (noise
    on a flat plateau should not reset patience). The best state dict is copied in
    memory (``best_state``), so :meth:`restore` needs no disk.
    """

    def __init__(self, patience: int, min_delta: float = 1e-6) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_loss: float, module: nn.Module) -> bool:
        """Record ``epoch``'s validation loss; copy ``module``'s weights if it is the best so far."""
        improved = val_loss < self.best_val_loss - self.min_delta
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self, module: nn.Module) -> bool:
        """Load the best weights into ``module``; False (and nothing done) if none were kept."""
        if self.best_state is None:
            return False
        module.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The counters a resumed run needs (the weights travel in the ``best/`` checkpoint)."""
        return {"best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_epoch = int(state["best_epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.bad_epochs = int(state.get("bad_epochs", 0))


class Checkpointer:
    """Writes ``folder/best`` on improvement and ``folder/last`` every epoch; resumes from them.

    ``best/`` holds weights only (what the run keeps); ``last/`` adds the optimizer
    state, so a run continues where it stopped rather than from the best epoch.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.notes: list[str] = []  # what :meth:`resume` found damaged and what it did instead
        self.resumed_from: Path | None = None

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
        into them. The best weights come back from ``best/`` where it exists. A ``last/``
        that is truncated or damaged falls back to ``best/`` (the optimizer state then starts
        afresh), and two damaged checkpoints to a fresh start; :attr:`notes` says which.

        Returns:
            The meta (epoch, history, ...) of the checkpoint resumed from, or None if there is none.
        """
        self.notes, self.resumed_from = [], None
        found = self._read(self.last, net)
        source = self.last
        if found is None:
            found, source = self._read(self.best, net), self.best
            if found is None:
                if self.notes:
                    self.notes.append("no intact checkpoint is left: fine-tuning starts again from the stage-1 model")
                return None
            self.notes.append(f"continuing from {self.best} (epoch {found[2]['epoch']}); the optimizer starts afresh")
        model_sd, optim_t, meta = found
        policy.load_state_dict(meta["policy"])  # keeps what it had unfrozen
        net.load_state_dict(model_sd)
        policy.apply(backbone, optimizer, head_lr)
        if source == self.last:
            optimizer_from_flat(optimizer, optim_t, meta["optimizer"])
        self.resumed_from = source
        if early_stopping is not None:
            self._resume_stopper(early_stopping, meta, model_sd if source == self.best else None, net)
        return meta

    def _resume_stopper(
        self, stopper: EarlyStopping, meta: Mapping[str, Any], best_sd: dict[str, torch.Tensor] | None, net: nn.Module
    ) -> None:
        """The early-stopping counters, and the best weights (from ``best/``, or ``best_sd`` when resuming from it)."""
        best_epoch = int(meta["best_epoch"])
        stopper.load_state_dict(
            {
                "best_epoch": best_epoch,
                "best_val_loss": meta["best_val_loss"],
                "bad_epochs": int(meta["epoch"]) - best_epoch if meta["history"] else 0,
            }
        )
        if best_sd is None and self.best.exists():
            best = self._read(self.best, net)
            best_sd = best[0] if best is not None else None
            if best is None:  # the best weights so far are lost: the epochs to come decide afresh
                stopper.best_val_loss = math.inf
                self.notes.append("the best weights so far are lost; the epochs to come choose the kept one")
        if best_sd is not None:
            stopper.best_state = best_sd

    def _read(
        self, folder: Path, net: nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]] | None:
        """A checkpoint that reads back whole and fits ``net``; None where there is none or it is damaged (noted)."""
        if not folder.exists():
            return None
        try:
            model_sd, optim_t, meta = load_checkpoint(folder)
            ref = net.state_dict()
            if model_sd.keys() != ref.keys() or any(model_sd[k].shape != ref[k].shape for k in ref):
                raise ValueError("its tensors do not fit the network")
            _check_meta(meta, with_optimizer=folder == self.last)
        except Exception as e:  # noqa: BLE001 - truncated, garbage or foreign: safetensors, JSON and key errors alike
            reason = (str(e).strip().splitlines() or [""])[0][:160]
            self.notes.append(f"checkpoint {folder} is damaged ({type(e).__name__}: {reason})")
            return None
        return model_sd, optim_t, meta


def _check_meta(meta: Mapping[str, Any], with_optimizer: bool) -> None:
    """Raise where a field a resume reads is missing or of the wrong type (before anything is loaded)."""
    FineTunePolicy().load_state_dict(meta["policy"])
    fields: list[tuple[str, Any]] = [("epoch", int), ("best_epoch", int), ("best_val_loss", float), ("history", list)]
    for key, kind in fields + ([("optimizer", dict)] if with_optimizer else []):
        kind(meta[key])
