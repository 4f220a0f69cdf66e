"""Tests for graft.transforms.train: train augmentation, eval parity, feature views."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from graft.transforms.eval import Preprocessing
from graft.transforms.train import build_eval_transform, build_feature_view_transform, build_train_transform


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:180, 0:260]
    arr = np.stack([xx % 256, yy % 256, (xx * yy) % 256], -1) + rng.integers(0, 20, (180, 260, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


PRE = Preprocessing(input_size=(96, 112), crop_pct=0.9)


def test_eval_transform_equals_preprocessing(photo: Image.Image) -> None:
    t = build_eval_transform(PRE)
    out = t(photo)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 96, 112)
    assert np.array_equal(out.numpy(), PRE(photo))
    assert np.array_equal(t(photo.convert("L")).numpy(), PRE(photo.convert("L")))
    assert pickle.loads(pickle.dumps(t))(photo).equal(out)


@pytest.fixture(scope="module")
def embedder():
    """An Embedder for PRE around the tiny timm network (only its bulk normalisation is used)."""
    import timm

    from graft.features import Embedder
    from graft.features.options import EmbedOptions

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    return Embedder(net, PRE, EmbedOptions(device="cpu", precision="fp32", num_workers=0))


@pytest.mark.parametrize("size", [(260, 180), (180, 260), (70, 41), (40, 30)])
def test_bulk_normalised_crop_equals_preprocessing(photo: Image.Image, embedder, size: tuple[int, int]) -> None:
    """Every path crops with ``Preprocessing.crop``; the embedder only normalises the uint8 crops in bulk.

    So features, fine-tuning, predict, ONNX and the server see the same pixels: the bulk
    (torch) normalisation matches the numpy one up to float32 rounding (measured: 7e-7 in
    normalised units, 4e-5 grey levels), not "a few grey levels".
    """
    img = photo if photo.size == size else photo.resize(size, Image.Resampling.BILINEAR)
    crop = PRE.crop(img)
    assert crop.dtype == np.uint8 and crop.shape == (96, 112, 3)
    ref = PRE(img)
    assert np.array_equal(ref, PRE.normalize(crop))
    got = embedder.normalize(torch.from_numpy(crop.copy())[None])
    torch.testing.assert_close(got, torch.from_numpy(ref)[None], rtol=0, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)
    nchw = embedder.normalize(torch.from_numpy(crop.copy())[None], channels_last=False)  # what ONNX Runtime takes
    assert nchw.is_contiguous() and torch.equal(nchw, got)
    # resize_crop (resize the whole image, then crop: torchvision's order) is now only the
    # reference geometry; the box resize stays within one grey level of it (measured max 1).
    diff = np.abs(np.asarray(PRE.resize_crop(img), np.int16) - crop.astype(np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.parametrize("strength", ["default", "light"])
def test_train_transform_shapes_and_randomness(photo: Image.Image, strength: str) -> None:
    t = build_train_transform(PRE, strength=strength)
    torch.manual_seed(0)
    a, b = t(photo), t(photo)
    assert a.shape == b.shape == (3, 96, 112) and a.dtype == torch.float32
    assert not torch.equal(a, b), "augmentation must be random"
    torch.manual_seed(0)
    assert torch.equal(t(photo), a), "augmentation must follow torch's seed"
    assert abs(float(a.mean())) < 3.0  # normalised, not raw 0..1 or 0..255
    t2 = pickle.loads(pickle.dumps(t))  # DataLoader workers need picklable transforms
    assert t2(photo.convert("RGBA")).shape == (3, 96, 112)


def test_default_recipe_contents() -> None:
    text = repr(build_train_transform(PRE))
    for piece in (
        "RandomResizedCrop",
        "scale=(0.5, 1.0)",
        "RandomHorizontalFlip",
        "RandomAffine",
        "degrees=[-15.0, 15.0]",
        "ColorJitter",
        "Normalize",
    ):
        assert piece in text, piece
    light = repr(build_train_transform(PRE, strength="light"))
    assert "scale=(0.7, 1.0)" in light and "RandomAffine" not in light and "ColorJitter" not in light
    assert "bicubic" in text.lower()


def test_train_none_is_eval(photo: Image.Image) -> None:
    assert np.array_equal(build_train_transform(PRE, strength="none")(photo).numpy(), PRE(photo))


def test_bad_strength() -> None:
    with pytest.raises(ValueError, match="default"):
        build_train_transform(PRE, strength="heavy")


def test_feature_view_zero_is_eval(photo: Image.Image) -> None:
    assert np.array_equal(build_feature_view_transform(PRE, 0, seed=1)(photo), PRE(photo))


def test_feature_views_deterministic(photo: Image.Image) -> None:
    v1 = build_feature_view_transform(PRE, 1, seed=7)
    out = v1(photo)
    assert out.dtype == np.float32 and out.shape == (3, 96, 112)
    assert np.array_equal(out, build_feature_view_transform(PRE, 1, seed=7)(photo))
    assert np.array_equal(out, pickle.loads(pickle.dumps(v1))(photo))
    v2 = build_feature_view_transform(PRE, 2, seed=7)
    assert not np.array_equal(v2(photo), build_feature_view_transform(PRE, 2, seed=8)(photo))
    assert not np.array_equal(out, v2(photo))
    assert not np.array_equal(out, PRE(photo))


def test_feature_view_one_is_the_mirror(photo: Image.Image) -> None:
    assert np.array_equal(build_feature_view_transform(PRE, 1, seed=3)(photo), PRE(photo)[:, :, ::-1])


def test_feature_view_flip_and_box(photo: Image.Image) -> None:
    v1, v2, v3 = (build_feature_view_transform(PRE, k, 0) for k in (1, 2, 3))
    assert v1.flip and v2.flip and not v3.flip
    for v in (v2, v3):
        left, top, right, bottom = v.box(260, 180)
        assert 0 <= left < right <= 260 and 0 <= top < bottom <= 180
        assert 0.55 <= (right - left) * (bottom - top) / (260 * 180) <= 1.0
    # A uniform image looks the same whatever the crop and flip.
    sym = Image.new("RGB", (64, 64), (10, 200, 30))
    assert np.allclose(v1(sym), v1(sym)[:, :, ::-1])


def test_feature_view_rejects_negative() -> None:
    with pytest.raises(ValueError):
        build_feature_view_transform(PRE, -1, 0)
