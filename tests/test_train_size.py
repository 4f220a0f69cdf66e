"""``FineTuneConfig.train_size``: train on smaller crops, score and serve at the model's input size."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import graft
from conftest import TINY_BACKBONE
from graft.exceptions import InvalidParameterError
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.transforms.eval import Preprocessing
from graft.transforms.train import build_train_transform

TRAIN = 64  # below test_efficientnet's 160 px input size


@pytest.mark.parametrize("bad", [0, 31, -224, 224.0, "224", True])
def test_an_invalid_train_size_is_refused(bad: object) -> None:
    with pytest.raises(InvalidParameterError, match="train_size"):
        FineTuneConfig(train_size=bad)  # type: ignore[arg-type]


def test_train_size_round_trips_and_an_old_dict_means_the_input_size() -> None:
    cfg = FineTuneConfig(train_size=224)
    assert FineTuneConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["train_size"] == 224
    old = {k: v for k, v in FineTuneConfig().to_dict().items() if k != "train_size"}  # a model saved before
    assert FineTuneConfig.from_dict(old).train_size is None


@pytest.mark.parametrize("strength", ["default", "light", "none"])
def test_training_crops_are_made_at_train_size(strength: str, make_image: Any, tmp_path: Path) -> None:
    from PIL import Image

    pre = Preprocessing(input_size=(288, 288))
    img = Image.open(make_image(tmp_path / "a.png", size=(400, 300)))
    assert FineTuneConfig().train_preprocessing(pre) is pre
    low = FineTuneConfig(train_size=224).train_preprocessing(pre)
    assert low.input_size == (224, 224) and (low.mean, low.std, low.interpolation) == (pre.mean, pre.std, "bicubic")
    assert tuple(build_train_transform(low, strength=strength)(img).shape) == (3, 224, 224)


def _fitted(data: Path, weights: Path) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, weights=weights, num_workers=0, precision="fp32").fit(data)


def test_fine_tune_trains_at_train_size_and_validates_and_saves_at_the_input_size(
    synthetic_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    clf = _fitted(synthetic_dataset, tiny_weights)
    size = clf.preprocessing_.input_size
    assert size == (160, 160)
    seen: list[tuple[bool, int, int]] = []  # (with gradients, height, width) of each batch into the stem

    def record(_m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        h, w = args[0].shape[-2:]
        seen.append((torch.is_grad_enabled(), int(h), int(w)))

    hook = clf.model_.backbone.conv_stem.register_forward_pre_hook(record)
    try:  # the whole backbone trains: every training step runs the stem with gradients
        clf.fine_tune(epochs=1, batch_size=8, train_size=TRAIN)
    finally:
        hook.remove()
    assert {(h, w) for grad, h, w in seen if grad} == {(TRAIN, TRAIN)}, seen
    assert (False, *size) in seen  # validation (and scoring) at the input size
    assert clf.fine_tune_config_["train_size"] == TRAIN
    assert clf.preprocessing_.input_size == size
    back = graft.load(clf.save(tmp_path / "m"))
    assert back.preprocessing_.input_size == size
    probs, _ok, _bad = back.predict_proba(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=2e-4)


def test_the_ladders_cached_prefix_holds_train_size_views_and_held_out_stays_at_the_input_size(
    synthetic_dataset: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft.training.finetune import prefix
    from graft.training.fit import rungs

    monkeypatch.setenv("GRAFT_COMPILE", "0")
    clf = _fitted(synthetic_dataset, tiny_weights)
    puts: list[tuple[int, tuple[int, ...]]] = []  # (views of the cache, activation shape) of every store
    real_put = prefix.PrefixCache.put

    def put(self: prefix.PrefixCache, view: int, idx: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        puts.append((self.views, tuple(acts.shape[-2:])))
        return real_put(self, view, idx, acts)

    monkeypatch.setattr(prefix.PrefixCache, "put", put)
    paths = [str(p) for p in sorted((synthetic_dataset / "train").rglob("*.png"))]
    classes = sorted({Path(p).parent.name for p in paths})
    y = np.array([classes.index(Path(p).parent.name) for p in paths])
    cfg = dataclasses.replace(
        rungs.LADDER_CONFIG, epochs=3, batch_size=8, unfreeze=2, train_size=TRAIN, prefix_views=2
    )  # two views: the training cache is told from the held-out one (one view) by its views
    fit = rungs._train(
        clf.model_,
        (paths[::2], y[::2]),
        (paths[1::2], y[1::2]),
        cfg,
        cfg.policy(),
        TrainEnv(num_workers=0, precision="fp32"),
        clf.preprocessing_,
    )
    assert len(fit.history) == 3
    train_hw = {hw for views, hw in puts if views == cfg.prefix_views}
    held_hw = {hw for views, hw in puts if views == 1}
    assert len(train_hw) == 1 and len(held_hw) == 1, puts
    (th, tw), (hh, hw) = train_hw.pop(), held_hw.pop()
    assert th < hh and tw < hw  # the same stride from 64 px crops and 160 px held-out images
