"""Fast fine-tuning: prefix/suffix split, cached-prefix training, speed plan and its cache, compile fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch

from conftest import TINY_BACKBONE
from graft.backbones import layer_groups
from graft.network import GraftNet, HeadSpec, build_head
from graft.progress import NullProgress
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.prefix import PrefixCache, split_backbone
from graft.training.finetune.speed import CompiledStep, cache_path, plan_speed
from graft.training.finetune.train import FineTuneConfig, TrainEnv, train_network


def _net(unfreeze: int = 1, spatial: bool = False) -> tuple[GraftNet, torch.nn.Module, FineTunePolicy]:
    torch.manual_seed(0)
    bb = timm.create_model(TINY_BACKBONE, num_classes=0)
    dim = bb.num_features * (25 if spatial else 1)
    net = GraftNet(bb, build_head(HeadSpec("flatten" if spatial else "linear", dim, 3)), spatial=spatial)
    opt = torch.optim.AdamW(net.head.parameters())
    policy = FineTunePolicy(unfreeze=unfreeze)
    policy.apply(bb, opt, 1e-3)
    policy.train_mode(net, bb)
    return net, bb, policy


@pytest.mark.parametrize("spatial", [False, True])
def test_split_output_equals_full_forward(spatial: bool) -> None:
    net, bb, _ = _net(unfreeze=2, spatial=spatial)
    split = split_backbone(net, bb)
    assert split is not None and split.k == len(bb.blocks) - 2  # groups: stem, blocks.0 .. blocks.4 (+ conv_head, bn2)
    net.eval()
    x = torch.randn(4, 3, 160, 160)
    with torch.no_grad():
        full = net(x)
        part = split.suffix(split.run_prefix(x, "cpu", "fp32"))
    torch.testing.assert_close(part, full, rtol=1e-4, atol=1e-4)


def test_no_split_when_stem_trains_or_not_efficientnet() -> None:
    net, bb, _ = _net(unfreeze=-1)
    assert split_backbone(net, bb) is None
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    assert split_backbone(net, seq) is None


def _train_paths(root: Path) -> tuple[list[str], np.ndarray]:
    paths = sorted(str(p) for p in (root / "train").rglob("*.png"))
    classes = sorted({Path(p).parent.name for p in paths})
    return paths, np.array([classes.index(Path(p).parent.name) for p in paths])


def _bn_stats(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    keep = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v.clone() for k, v in m.state_dict().items() if k.endswith(keep)}


def test_cached_prefix_training_trains_only_the_suffix(synthetic_dataset: Path, monkeypatch: Any) -> None:
    from graft.transforms.eval import Preprocessing
    from graft.transforms.train import build_train_transform

    monkeypatch.setenv("GRAFT_COMPILE", "0")
    net, bb, _ = _net(unfreeze=1)
    for p in bb.parameters():
        p.requires_grad_(True)  # train_network's policy freezes afresh
    groups = layer_groups(bb)
    frozen = {n: p.detach().clone() for n, p in bb.named_parameters() if n not in set(groups[-1])}
    last = {n: p.detach().clone() for n, p in bb.named_parameters() if n in set(groups[-1])}
    bn = _bn_stats(bb)
    paths, y = _train_paths(synthetic_dataset)
    pre = Preprocessing(input_size=(64, 64), crop_pct=1.0)
    msgs: list[str] = []

    class Rec(NullProgress):
        def message(self, text: str) -> None:
            msgs.append(text)

    res = train_network(
        net,
        bb,
        (paths, y),
        (paths, y),
        transforms=(build_train_transform(pre), pre),
        config=FineTuneConfig(epochs=4, batch_size=8, lr=1e-2, prefix_views=2),
        policy=FineTunePolicy(unfreeze=1),
        env=TrainEnv(num_workers=0, progress=Rec()),
    )
    assert any("cached views" in m for m in msgs), msgs
    assert len(res.history) == 4 and all(np.isfinite(r["train_loss"]) for r in res.history)
    for n, p in bb.named_parameters():
        if n in frozen:
            torch.testing.assert_close(p.detach(), frozen[n], rtol=0, atol=0)
    assert any(not torch.equal(p.detach(), last[n]) for n, p in bb.named_parameters() if n in last)
    for k, v in _bn_stats(bb).items():
        torch.testing.assert_close(v, bn[k], rtol=0, atol=0)


def test_prefix_cache_epoch_samples_filled_views_only() -> None:
    cache = PrefixCache(n=10, views=2)
    cache.put(0, torch.arange(10), torch.ones(10, 2, 3, 3))
    cache.put(1, torch.arange(5), torch.full((5, 2, 3, 3), 2.0))
    seen = []
    for idx, x, bad in cache.epoch(4, torch.Generator().manual_seed(0)):
        assert bad == [] and x.shape == (4, 2, 3, 3)
        for i, xi in zip(idx.tolist(), x):
            assert float(xi[0, 0, 0]) in ((1.0, 2.0) if i < 5 else (1.0,))
        seen += idx.tolist()
    assert len(seen) == 8 and len(set(seen)) == 8  # drop_last, no repeats


def test_speed_plan_cached_once_and_reused(monkeypatch: Any) -> None:
    monkeypatch.setenv("GRAFT_COMPILE", "0")
    net, _, _ = _net()
    x = torch.randn(4, 3, 64, 64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plan = plan_speed(net, x, name="tiny", precision="auto")
    assert not plan.cached and plan.images_per_s and cache_path().is_file()
    for k, v in net.state_dict().items():  # measuring changed nothing
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in net.parameters())
    written = json.loads(cache_path().read_text())
    mtime = cache_path().stat().st_mtime_ns
    again = plan_speed(net, x, name="tiny", precision="auto")
    assert again.cached and again.to_dict() == plan.to_dict()
    assert cache_path().stat().st_mtime_ns == mtime and json.loads(cache_path().read_text()) == written


def test_compile_falls_back_to_eager_when_compile_raises(monkeypatch: Any) -> None:
    net, _, _ = _net()
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    warnings: list[str] = []

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", boom)
    step = CompiledStep(net, warn=warnings.append)
    torch.testing.assert_close(step(x), net(x))
    assert not step.active and len(warnings) == 1

    def broken(*a: Any, **k: Any) -> Any:  # compiling succeeds, the first call fails (lazy compile)
        return lambda *args: (_ for _ in ()).throw(RuntimeError("inductor failed"))

    monkeypatch.setattr(torch, "compile", broken)
    step = CompiledStep(net, warn=warnings.append)
    torch.testing.assert_close(step(x), net(x))
    torch.testing.assert_close(step(x), net(x))
    assert not step.active and len(warnings) == 2


def test_plan_with_compile_forced_survives_a_failing_compiler(monkeypatch: Any) -> None:
    monkeypatch.setenv("GRAFT_COMPILE", "1")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("nope")))
    net, _, _ = _net()
    plan = plan_speed(net, torch.randn(2, 3, 64, 64), name="tiny", precision="fp32")
    assert not plan.compile and plan.precision == "fp32"


def test_compile_is_tried_only_where_the_eager_run_is_long(monkeypatch: Any) -> None:
    """The rule is time, not images: eager images/s is measured first, then compiling is tried only
    for a run of at least COMPILE_MIN_SECONDS, and its verdict is cached on its own."""
    from graft.training.finetune import speed

    monkeypatch.delenv("GRAFT_COMPILE", raising=False)
    duels: list[str] = []

    def duel(module: Any, x: Any, device: str, eager: Any, progress: Any) -> dict[str, Any]:
        duels.append(eager.label)
        return {"compile": True, "images_per_s": {eager.label + "-compiled": 1.0}}

    monkeypatch.setattr(speed, "_measure_compile", duel)
    net, _, _ = _net()
    x = torch.randn(2, 3, 64, 64)
    short = plan_speed(net, x, name="tiny", precision="fp32", work_images=1)
    rate = short.images_per_s[short.label]
    assert not short.compile and duels == []
    just_short = int(rate * speed.COMPILE_MIN_SECONDS * 0.5)
    assert not plan_speed(net, x, name="tiny", precision="fp32", work_images=just_short).compile and duels == []
    long = plan_speed(net, x, name="tiny", precision="fp32", work_images=int(rate * speed.COMPILE_MIN_SECONDS * 2))
    assert long.compile and long.cached and duels == [short.label]  # eager plan from the cache, compile measured
    again = plan_speed(net, x, name="tiny", precision="fp32", work_images=10**9)
    assert again.compile and duels == [short.label]  # the verdict is cached too
    assert not plan_speed(net, x, name="tiny", precision="fp32", work_images=1).compile  # a short run never compiles


def test_channels_last_gives_same_logits() -> None:
    net, _, _ = _net()
    net.eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        ref = net(x)
        net.to(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_cached_validation_matches_the_plain_evaluation(synthetic_dataset: Path, monkeypatch: Any) -> None:
    from graft.features.embedder import ImageArrayDataset, collate_skip_failed
    from graft.training.finetune.fast import fast_path
    from graft.training.finetune.loop import evaluate
    from graft.transforms.eval import Preprocessing

    monkeypatch.setenv("GRAFT_COMPILE", "0")
    net, bb, _ = _net(unfreeze=1)
    paths, y = _train_paths(synthetic_dataset)
    pre = Preprocessing(input_size=(64, 64), crop_pct=1.0)
    loader = torch.utils.data.DataLoader(
        ImageArrayDataset(paths, pre), batch_size=8, collate_fn=collate_skip_failed, num_workers=0
    )
    config = FineTuneConfig(batch_size=8, prefix_views=1)
    env = TrainEnv(device="cpu", precision="fp32", seed=0)
    fast = fast_path(net, bb, (loader, loader), config=config, epochs=1, env=env, progress=NullProgress())
    assert fast.split is not None and fast.module is fast.split.suffix
    ref = evaluate(net, loader, y)
    first = fast.evaluate(net, y, "cpu")  # runs the prefix and fills the validation cache
    again = fast.evaluate(net, y, "cpu")  # suffix only, from the cache
    assert fast.val_cache is not None and bool(fast.val_cache.filled.all())
    for got in (first, again):
        assert got[1] == ref[1] and got[0] == pytest.approx(ref[0], rel=1e-2)
