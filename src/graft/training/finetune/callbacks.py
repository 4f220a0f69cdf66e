"""The fine-tuning loop's checkpoints, as a callback: :class:`Checkpointer` owns the ``best/``
and ``last/`` checkpoint folders and resuming from them (early stopping: :mod:`graft.training.early_stopping`).
"""

from __future__ import annotations

import math
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
