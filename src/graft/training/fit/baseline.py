"""The from-scratch baseline: same architecture, random init, same budget."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from graft.network import GraftNet, HeadSpec, build_head
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FitResult, train_network
from graft.transforms.eval import Preprocessing
from graft.transforms.train import build_train_transform

__all__ = ["train_from_scratch"]


def train_from_scratch(
    architecture: str,
    num_classes: int,
    preprocessing: Preprocessing,
    train: tuple[Sequence[str], np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    *,
    config: FineTuneConfig,
    env: TrainEnv,
) -> tuple[GraftNet, FitResult]:
    """Train ``architecture`` from random initialisation, every layer at the head's LR.

    This is the control for "does transfer learning help here?": the same network,
    data, augmentation, epochs and schedule as fine-tuning, without ImageNet weights.
    """
    import timm
    import torch

    torch.manual_seed(env.seed)
    backbone: Any = timm.create_model(architecture, pretrained=False, num_classes=0)
    dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
    head = build_head(HeadSpec("linear", dim, num_classes, dropout=0.2))
    net = GraftNet(backbone, head)
    policy = FineTunePolicy(unfreeze=-1, backbone_lr_ratio=1.0, train_bn=True)
    transforms = (
        build_train_transform(config.train_preprocessing(preprocessing), strength=config.augment),
        preprocessing,
    )
    res = train_network(
        net,
        backbone,
        train,
        val,
        transforms=transforms,
        config=config,
        policy=policy,
        env=dataclasses.replace(env, stage="baseline"),
    )
    return net, res
