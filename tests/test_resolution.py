"""The embedding-resolution rule (FixRes for detailed photos, native for small images)."""

from __future__ import annotations

import pytest
import timm

from graft.backbones import feature_preprocessing
from graft.transforms.eval import Preprocessing


def _base(model) -> Preprocessing:
    return Preprocessing.from_timm_config(timm.data.resolve_data_config({}, model=model))


def test_auto_grows_size_only_for_detailed_images() -> None:
    m = timm.create_model("test_efficientnet", num_classes=0)
    base = _base(m)
    big = feature_preprocessing(m, base, "auto", image_short_side=400)
    assert big.input_size == (192, 192) and big.crop_pct == 1.0
    small = feature_preprocessing(m, base, "auto", image_short_side=100)
    assert small == base
    assert feature_preprocessing(m, base, "auto") == base  # unknown sizes: stay native
    # EfficientNet-Lite0's 224 px grows to FixRes' 288 px, only for images that large.
    at224 = Preprocessing((224, 224), 0.875)
    assert feature_preprocessing(m, at224, "auto", image_short_side=369).input_size == (288, 288)
    assert feature_preprocessing(m, at224, "auto", image_short_side=250) == at224


def test_explicit_sizes_and_errors() -> None:
    m = timm.create_model("test_efficientnet", num_classes=0)
    base = _base(m)
    assert feature_preprocessing(m, base, "native") == base
    p = feature_preprocessing(m, base, 224, crop_pct=0.9)
    assert p.input_size == (224, 224) and p.crop_pct == 0.9
    assert feature_preprocessing(m, base, "256").input_size == (256, 256)
    with pytest.raises(ValueError, match="input_size"):
        feature_preprocessing(m, base, "huge")
    with pytest.raises(ValueError, match="at least 32"):
        feature_preprocessing(m, base, 8)


def test_fixed_size_models_keep_their_size() -> None:
    m = timm.create_model("test_vit", num_classes=0)
    base = _base(m)
    assert feature_preprocessing(m, base, "auto", image_short_side=1000) == base
