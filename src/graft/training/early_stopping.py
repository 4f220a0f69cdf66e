"""Early stopping with the best weights kept: shared by the fine-tuning loop and the feature-head SGD loop."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["EarlyStopping"]


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
            self.best_val_loss = val_loss
            self.best_epoch = epoch
            self.bad_epochs = 0
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
