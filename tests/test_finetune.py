"""Stage 2: the fine-tuning policy, the training loop, checkpoints and resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import graft
from conftest import TINY_BACKBONE
from graft.backbones import layer_groups
from graft.training.finetune.checkpoint import load_checkpoint
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FineTuneConfig, TrainEnv, train_network


def _fitted(synthetic_dataset: Path, tiny_weights: Path) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(synthetic_dataset)


def test_policy_freezes_all_but_last_group_and_adds_lower_lr_group(synthetic_dataset: Path, tiny_weights: Path) -> None:
    clf = _fitted(synthetic_dataset, tiny_weights)
    bb = clf.model_.backbone
    opt = torch.optim.AdamW([{"params": list(clf.model_.head.parameters()), "lr": 1e-3}])
    policy = FineTunePolicy(unfreeze=1, backbone_lr_ratio=0.1)
    params = policy.apply(bb, opt, head_lr=1e-3)
    groups = layer_groups(bb)
    assert policy.unfrozen_groups == [len(groups) - 1]
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == set(groups[-1]) and len(params) == len(trainable)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1e-4)]
    with pytest.raises(ValueError, match="unfreeze"):
        FineTunePolicy(unfreeze=0)


def _bn_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """running_mean / running_var / num_batches_tracked of every BatchNorm, by state-dict key."""
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k.rsplit(".", 1)[-1] in stats}


def test_fine_tune_keeps_frozen_bn_statistics_and_checkpoints(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path
) -> None:
    clf = _fitted(synthetic_dataset, tiny_weights)
    bb = clf.model_.backbone
    groups = layer_groups(bb)
    frozen_names = {n for g in groups[:-1] for n in g}
    bn_before = _bn_buffers(bb)
    assert any(k.endswith("running_var") for k in bn_before) and any(
        k.endswith("num_batches_tracked") for k in bn_before
    )
    frozen_before = {n: p.detach().clone() for n, p in bb.named_parameters() if n in frozen_names}
    trained_before = {n: p.detach().clone() for n, p in bb.named_parameters() if n in set(groups[-1])}
    ckpt = tmp_path / "ckpt"
    clf.fine_tune(epochs=2, unfreeze=1, lr=1e-3, backbone_lr_ratio=0.1, patience=5, checkpoint_dir=ckpt, batch_size=8)
    st = clf.stage_metrics_["fine_tune"]
    assert st["unfrozen_groups"] == [len(groups) - 1]
    assert (ckpt / "best" / "state.safetensors").exists() and (ckpt / "last" / "state.json").exists()
    # The weights as trained (the last epoch's checkpoint, written before any keep/rollback
    # decision): the unfrozen group moved, yet BatchNorm statistics everywhere (train_bn=False)
    # and the frozen groups' weights are exactly as before.
    trained, _, meta = load_checkpoint(ckpt / "last")
    assert any(not torch.equal(trained[f"backbone.{n}"], v) for n, v in trained_before.items()), "nothing was trained"
    for k, v in bn_before.items():
        torch.testing.assert_close(trained[f"backbone.{k}"], v, rtol=0, atol=0, msg=f"BN statistic {k} changed")
    for n, v in frozen_before.items():
        torch.testing.assert_close(trained[f"backbone.{n}"], v, rtol=0, atol=0, msg=f"frozen weight {n} changed")
    # And the model the classifier ends with, kept or rolled back.
    after = _bn_buffers(clf.model_.backbone)
    for k, v in bn_before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    for n, p in clf.model_.backbone.named_parameters():
        if n in frozen_before:
            torch.testing.assert_close(p.detach(), frozen_before[n], rtol=0, atol=0)
    assert meta["epoch"] == 2 and meta["policy"]["unfrozen_groups"] == [len(groups) - 1]
    assert len(clf.history_["fine_tune"]) == 2
    assert {"train_loss", "val_loss", "val_acc", "lr"} <= set(clf.history_["fine_tune"][0])


def test_default_fine_tune_trains_whole_backbone_at_one_lr(synthetic_dataset: Path, tiny_weights: Path) -> None:
    # The measured default (RESULTS.md): every group unfrozen, head and backbone at 1e-4.
    clf = _fitted(synthetic_dataset, tiny_weights)
    n_groups = len(layer_groups(clf.model_.backbone))
    bn_before = {k: v.clone() for k, v in clf.model_.backbone.state_dict().items() if "running_mean" in k}
    clf.fine_tune(epochs=1, batch_size=8)
    assert clf.stage_metrics_["fine_tune"]["unfrozen_groups"] == list(range(n_groups))
    cfg = clf.fine_tune_config_
    assert (cfg["lr"], cfg["backbone_lr_ratio"], cfg["augment"], cfg["unfreeze"]) == (1e-4, 1.0, "light", -1)
    for k, v in bn_before.items():  # BatchNorm statistics stay fixed even with everything unfrozen
        torch.testing.assert_close(clf.model_.backbone.state_dict()[k], v)


def test_resume_continues_without_refreezing(tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path) -> None:
    clf = _fitted(synthetic_dataset, tiny_weights)
    net, bb = clf.model_, clf.model_.backbone
    paths = [str(p) for p in sorted((synthetic_dataset / "train").rglob("*.png"))]
    labels = np.array([clf.classes_.index(Path(p).parent.name) for p in paths])
    from graft.transforms.train import build_train_transform

    transforms = (build_train_transform(clf.preprocessing_), clf.preprocessing_)
    env = TrainEnv(num_workers=0, checkpoint_dir=tmp_path / "ck")
    # "Interrupted" run: 1 of 3 epochs, with all groups unfrozen.
    pol = FineTunePolicy(unfreeze=-1)
    config = FineTuneConfig(epochs=1, batch_size=8)
    train_network(net, bb, (paths, labels), (paths, labels), transforms=transforms, config=config, policy=pol, env=env)
    # Resume with a policy that would, fresh, unfreeze only 1 group: the saved state wins.
    pol2 = FineTunePolicy(unfreeze=1)
    res = train_network(
        net,
        bb,
        (paths, labels),
        (paths, labels),
        transforms=transforms,
        config=FineTuneConfig(epochs=3, batch_size=8),
        policy=pol2,
        env=replace(env, resume=True),
    )
    assert pol2.unfrozen_groups == list(range(len(layer_groups(bb))))
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    _, optim, meta = load_checkpoint(tmp_path / "ck" / "last")
    assert meta["epoch"] == 3 and optim  # optimizer state saved too


def test_scratch_baseline_trains_same_architecture(synthetic_dataset: Path, tiny_weights: Path) -> None:
    from graft.training.fit.baseline import train_from_scratch

    clf = _fitted(synthetic_dataset, tiny_weights)
    paths = [str(p) for p in sorted((synthetic_dataset / "train").rglob("*.png"))]
    labels = np.array([clf.classes_.index(Path(p).parent.name) for p in paths])
    net, res = train_from_scratch(
        TINY_BACKBONE,
        3,
        clf.preprocessing_,
        (paths, labels),
        (paths, labels),
        config=FineTuneConfig(epochs=2, batch_size=8),
        env=TrainEnv(num_workers=0),
    )
    assert len(res.history) == 2 and res.history[0]["stage"] == "baseline"
    assert all(p.requires_grad for p in net.backbone.parameters())


@pytest.mark.parametrize(("planned", "cut_short"), [(2, False), (3, True)])
def test_early_stop_is_reported_only_when_epochs_were_left(planned: int, cut_short: bool) -> None:
    """Patience running out at the last planned epoch cut nothing short: no "stopped early" flag or line."""
    from graft.progress import NullProgress
    from graft.training.early_stopping import EarlyStopping
    from graft.training.finetune.train import _end_epoch, _Loop

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    config = FineTuneConfig(epochs=planned, patience=1)
    lines: list[str] = []

    class Lines(NullProgress):
        def message(self, text: str) -> None:
            lines.append(text)

    loop = _Loop(net, net, opt, FineTunePolicy(), config, TrainEnv(), Lines(), EarlyStopping(patience=1))
    result = loop.result
    stops = [
        _end_epoch(
            loop,
            {"stage": "fine-tune", "epoch": e, "train_loss": 0.5, "train_acc": 0.5, "val_loss": loss, "val_acc": 0.5},
        )
        for e, loss in ((1, 1.0), (2, 2.0))
    ]
    assert stops == [False, True]
    assert result.stopped_early is cut_short
    assert any("early stop" in line for line in lines) is cut_short
