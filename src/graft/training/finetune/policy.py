"""Which backbone layers train, at which learning rate: the fine-tuning policy.

Modelled on Lightning's ``BaseFinetuning``: freezing turns off gradients *and* keeps
BatchNorm statistics fixed; unfreezing adds a parameter group at a lower learning
rate (discriminative LRs); the state is saved in checkpoints so a resumed run
re-applies exactly what it had unfrozen and never re-freezes.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import torch
from torch import nn

from graft.backbones import layer_groups
from graft.validation import Interval, check_param, invalid_parameter

__all__ = ["FineTunePolicy"]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class FineTunePolicy:
    """Unfreeze the last ``unfreeze`` layer groups of the backbone.

    Args:
        unfreeze: number of backbone layer groups (from the output end) to train;
            ``-1`` or a number >= the group count trains the whole backbone.
        backbone_lr_ratio: backbone learning rate as a fraction of the head's.
        train_bn: let BatchNorm layers inside unfrozen groups update their running
            statistics. Off by default: with small datasets, batch statistics are
            noisy and updating them is the most common way fine-tuning loses accuracy
            (Keras' transfer-learning guide keeps BN in inference mode too).
    """

    def __init__(self, unfreeze: int = 1, backbone_lr_ratio: float = 0.1, train_bn: bool = False) -> None:
        if isinstance(unfreeze, bool) or not isinstance(unfreeze, numbers.Integral) or unfreeze == 0 or unfreeze < -1:
            raise invalid_parameter(
                "unfreeze", "FineTunePolicy", "a positive number of block groups or -1 (all)", unfreeze
            )
        check_param("backbone_lr_ratio", backbone_lr_ratio, "FineTunePolicy", Interval(0, 10, closed="right"))
        self.unfreeze: int = int(unfreeze)
        self.backbone_lr_ratio: float = float(backbone_lr_ratio)
        self.train_bn: bool = bool(train_bn)
        self.unfrozen_groups: list[int] = []

    # ------------------------------------------------------------------ freezing
    @staticmethod
    def freeze(module: nn.Module) -> None:
        """No gradients, and normalisation layers in eval mode (fixed statistics)."""
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, _BN_TYPES):
                m.eval()

    def groups_to_unfreeze(self, backbone: nn.Module) -> list[int]:
        n = len(layer_groups(backbone))
        k = n if self.unfreeze == -1 else min(self.unfreeze, n)
        return list(range(n - k, n))

    def apply(self, backbone: nn.Module, optimizer: torch.optim.Optimizer, head_lr: float) -> list[nn.Parameter]:
        """Freeze the backbone, then unfreeze the chosen groups into a new param group.

        Groups already recorded in :attr:`unfrozen_groups` (a resumed run) are kept.
        Returns the parameters that now train.
        """
        self.freeze(backbone)
        groups = layer_groups(backbone)
        if not self.unfrozen_groups:
            self.unfrozen_groups = self.groups_to_unfreeze(backbone)
        names = {n for g in self.unfrozen_groups for n in groups[g]}
        params = [p for n, p in backbone.named_parameters() if n in names]
        for p in params:
            p.requires_grad_(True)
        if params:
            optimizer.add_param_group({"params": params, "lr": head_lr * self.backbone_lr_ratio, "name": "backbone"})
        return params

    def train_mode(self, net: nn.Module, backbone: nn.Module) -> None:
        """``net.train()``, except normalisation layers whose statistics stay fixed."""
        net.train()
        trainable_mods = set()
        if self.train_bn:
            groups = layer_groups(backbone)
            names = {n.rsplit(".", 1)[0] for g in self.unfrozen_groups for n in groups[g]}
            trainable_mods = {m for n, m in backbone.named_modules() if n in names}
        for m in backbone.modules():
            if isinstance(m, _BN_TYPES) and m not in trainable_mods:
                m.eval()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "unfreeze": self.unfreeze,
            "backbone_lr_ratio": self.backbone_lr_ratio,
            "train_bn": self.train_bn,
            "unfrozen_groups": list(self.unfrozen_groups),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.unfreeze = int(state["unfreeze"])
        self.backbone_lr_ratio = float(state["backbone_lr_ratio"])
        self.train_bn = bool(state.get("train_bn", False))
        self.unfrozen_groups = [int(g) for g in state.get("unfrozen_groups", [])]
