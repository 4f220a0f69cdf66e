"""Which input resolution to embed at: the backbone's own, or a larger test size.

Networks trained with random-resized crops see objects larger during training than a
centre crop at the same size shows them at test time ("FixRes", Touvron et al. 2019).
Embedding at a larger input, uncropped, recovers part of that gap. FixRes found the
best test size for a 224 px-trained network near 288 px; for EfficientNet-Lite0 on
hymenoptera (photos of small insects) 288 px full frame gives 0.961 against 0.941 at
224 px / 0.875 crop, and cats_dogs_filtered stays above 0.99 (see RESULTS.md). timm configs that name a ``test_input_size`` are used as given.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from torch import nn

from graft.transforms.eval import Preprocessing
from graft.validation import Interval, check_param, invalid_parameter

__all__ = ["feature_preprocessing", "FIXRES_SCALE"]

#: Test-size growth of the ``auto`` rule (FixRes, Touvron et al. 2019: 224 -> 288).
FIXRES_SCALE = 1.3


_INPUT_SIZE_EXPECTED = "'auto', 'native' or a number of pixels, at least 32"


def _is_pixels(value: object) -> bool:
    """A whole number of pixels: an int, a finite float or a string of digits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())


def feature_preprocessing(
    model: nn.Module,
    base: Preprocessing,
    input_size: int | str | None = "auto",
    crop_pct: float | None = None,
    image_short_side: float | None = None,
) -> Preprocessing:
    """The preprocessing to extract features (and predict) with.

    Args:
        model: the timm backbone (its ``pretrained_cfg`` is read).
        base: the backbone's own eval preprocessing.
        input_size: ``"auto"`` (the FixRes rule below), ``"native"``/None (the backbone's
            own size), or a number of pixels (square input).
        crop_pct: centre-crop fraction; default 1.0 at a changed size, else the backbone's.
        image_short_side: median shorter side of the training images, in pixels.

    The ``auto`` rule: a model whose config fixes the input size keeps it; a config with
    ``test_input_size`` uses that (and ``test_crop_pct``); otherwise the size grows by
    about 30 % (rounded to a multiple of 32: 224 -> 288) with the whole frame kept —
    but only where the images have that much detail (median shorter side at least the
    larger size). Upsampling small images (100 px hand signs, 128 px flowers) further
    measured worse than the native crop, so they keep the backbone's own preprocessing.
    """
    cfg: Mapping[str, Any] = getattr(model, "pretrained_cfg", None) or {}
    if input_size in (None, "native"):
        size = base.input_size
        crop = base.crop_pct
    elif input_size == "auto":
        if cfg.get("fixed_input_size"):
            size = base.input_size
            crop = base.crop_pct
        elif cfg.get("test_input_size"):
            t = cfg["test_input_size"]
            size = (int(t[-2]), int(t[-1]))
            crop = float(cfg.get("test_crop_pct") or base.crop_pct)
        else:
            side = int(round(min(base.input_size) * FIXRES_SCALE / 32.0) * 32)
            if image_short_side is not None and image_short_side >= side:
                size = (side, side)
                crop = 1.0
            else:
                size = base.input_size
                crop = base.crop_pct
    elif _is_pixels(input_size):
        side = int(input_size)
        if side < 32:
            raise invalid_parameter("input_size", "feature_preprocessing", _INPUT_SIZE_EXPECTED, input_size)
        size = (side, side)
        crop = 1.0 if side != min(base.input_size) else base.crop_pct
    else:
        raise invalid_parameter("input_size", "feature_preprocessing", _INPUT_SIZE_EXPECTED, input_size)
    if crop_pct is not None:
        crop = float(check_param("crop_pct", crop_pct, "feature_preprocessing", Interval(0, 1, closed="right")))
    return Preprocessing(size, crop, base.interpolation, base.mean, base.std, base.crop_mode)
