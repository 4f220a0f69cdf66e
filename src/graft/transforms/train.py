"""Training augmentation and evaluation transforms built from a model's :class:`Preprocessing`.

Every transform is a module-level class (never a lambda) so it pickles into DataLoader
worker processes. Evaluation always goes through ``Preprocessing.__call__`` so that
training-time validation, predict, ONNX and the HTTP server see identical inputs.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from graft.transforms.eval import AUGMENT_STRENGTHS, PIL_INTERPOLATION, Preprocessing
from graft.validation import Interval, check_choice, check_param, invalid_parameter

__all__ = [
    "AUGMENT_STRENGTHS",
    "build_train_transform",
    "build_eval_transform",
    "build_feature_view_transform",
    "FeatureView",
    "AUTO_MIRROR_MAX_TRAIN",
    "resolve_augment_views",
]

"""Accepted values of ``strength`` in :func:`build_train_transform`."""

_TV_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}


class _EnsureRGB:
    """Convert to RGB (training images normally already are; this guards odd callers)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")


class _EvalTransform:
    """PIL image -> tensor, exactly ``torch.from_numpy(pre(img))``."""

    def __init__(self, pre: Preprocessing) -> None:
        self.pre = pre

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.pre(img))

    def __repr__(self) -> str:
        return f"EvalTransform({self.pre!r})"


def build_eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Evaluation transform: resize, centre-crop and normalise as ``pre`` does.

    Args:
        pre: the model's preprocessing spec.

    Returns:
        A picklable callable mapping a PIL image to a float32 ``(3, H, W)`` tensor
        equal to ``torch.from_numpy(pre(img))``.
    """
    return _EvalTransform(pre)


def build_train_transform(pre: Preprocessing, *, strength: str = "default") -> Callable[[Image.Image], torch.Tensor]:
    """Random augmentation for fine-tuning.

    ``"default"`` is the classic transfer-learning recipe: random resized crop (50-100 %
    of the area), horizontal flip, small rotation/shift/zoom (15 degrees, 10 %, 0.9-1.1)
    and mild colour jitter. ``"light"`` keeps only a gentler crop (70-100 %) and the flip;
    ``"none"`` is the evaluation transform.

    Args:
        pre: the model's preprocessing spec (input size, interpolation, mean, std).
        strength: one of :data:`AUGMENT_STRENGTHS`.

    Returns:
        A picklable callable mapping a PIL image to a normalised float32 tensor.

    Raises:
        InvalidParameterError: unknown ``strength`` (a ``ValueError``).
    """
    check_choice("strength", strength, AUGMENT_STRENGTHS, "build_train_transform")
    if strength == "none":
        return build_eval_transform(pre)
    interp = _TV_INTERPOLATION[pre.interpolation]
    size = tuple(pre.input_size)  # (height, width), as torchvision expects
    steps: list[Callable] = [_EnsureRGB()]
    if strength == "light":
        steps += [T.RandomResizedCrop(size, scale=(0.7, 1.0), interpolation=interp), T.RandomHorizontalFlip()]
    else:
        # Corners uncovered by the affine warp get the dataset mean, i.e. 0 after Normalize.
        fill = [int(round(m * 255)) for m in pre.mean]
        steps += [
            T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interp),
            T.RandomHorizontalFlip(),
            T.RandomAffine(
                degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation=InterpolationMode.BILINEAR, fill=fill
            ),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class FeatureView:
    """One fixed augmented view: the same crop box (relative) and flip for every image.

    Attributes:
        pre: preprocessing spec giving size, interpolation and normalisation.
        view: view number; 0 is plain evaluation preprocessing.
        flip: whether the view is mirrored.
        area: fraction of the image area kept by the crop.
        ratio: aspect ratio (width/height) of the crop.
        cx: horizontal position of the crop in [0, 1] (0 left, 1 right).
        cy: vertical position of the crop in [0, 1].
    """

    def __init__(self, pre: Preprocessing, view: int, seed: int) -> None:
        self.pre = pre
        self.view = int(view)
        rng = random.Random(f"graft-view:{seed}:{view}")  # str seeds are platform-stable
        # View 1 is the plain mirror; then crops alternate mirrored / not (2, 3, ...).
        self.flip = view == 1 or (view >= 2 and view % 2 == 0)
        self.area = rng.uniform(0.6, 1.0)
        self.ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        self.cx = rng.random()
        self.cy = rng.random()

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Crop box ``(left, top, right, bottom)`` for an image of this size."""
        target = self.area * width * height
        cw = min(width, max(1, int(round(math.sqrt(target * self.ratio)))))
        ch = min(height, max(1, int(round(math.sqrt(target / self.ratio)))))
        left = int(self.cx * (width - cw))
        top = int(self.cy * (height - ch))
        return left, top, left + cw, top + ch

    def __call__(self, img: Image.Image) -> np.ndarray:
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.view == 0:
            return self.pre(img)
        if self.view == 1:
            return self.pre.normalize(np.ascontiguousarray(self.pre.crop(img)[:, ::-1]))
        h_out, w_out = self.pre.input_size
        out = img.resize((w_out, h_out), PIL_INTERPOLATION[self.pre.interpolation], box=self.box(*img.size))
        if self.flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.pre.normalize(np.asarray(out, dtype=np.uint8))

    def __repr__(self) -> str:
        return (
            f"FeatureView(view={self.view}, flip={self.flip}, area={self.area:.3f}, "
            f"ratio={self.ratio:.3f}, cx={self.cx:.3f}, cy={self.cy:.3f})"
        )


def build_feature_view_transform(pre: Preprocessing, view: int, seed: int) -> Callable[[Image.Image], np.ndarray]:
    """Deterministic augmented view ``view`` for "augmented feature views".

    View 0 is plain evaluation preprocessing; view 1 is its mirror image (the one
    augmentation that measurably helps a linear probe on every shared dataset: +1.7
    points on sign_digits). View ``k >= 2`` applies one fixed random resized crop
    (60-100 % of the area, aspect 3/4-4/3, drawn from ``(seed, k)``) resized to the
    input size, mirrored when ``k`` is even, then the same numpy normalisation as ``pre``. The same ``(seed, view)`` gives the same view on any machine and in any
    worker process, so cached features stay valid.

    Args:
        pre: the model's preprocessing spec.
        view: view number, 0 or more.
        seed: seed shared by all views of a run.

    Returns:
        A picklable callable mapping a PIL image to a float32 ``(3, H, W)`` array.

    Raises:
        InvalidParameterError: negative ``view`` (a ``ValueError``).
    """
    check_param(
        "view",
        int(view) if isinstance(view, np.integer) else view,
        "build_feature_view_transform",
        Interval(0, integer=True),
    )
    return FeatureView(pre, view, seed)


#: Below this many training images, ``augment_views="auto"`` adds the mirror view.
AUTO_MIRROR_MAX_TRAIN = 2000


def resolve_augment_views(augment_views: int | str, n_train: int) -> int:
    """Number of extra feature views: ``"auto"`` is 1 (the mirror) on small training sets."""
    if augment_views == "auto":
        return 1 if n_train < AUTO_MIRROR_MAX_TRAIN else 0
    if isinstance(augment_views, str) and augment_views.isdigit():
        return int(augment_views)
    if isinstance(augment_views, bool) or not isinstance(augment_views, (int, np.integer)) or augment_views < 0:
        raise invalid_parameter("augment_views", "resolve_augment_views", "'auto' or an int >= 0", augment_views)
    return int(augment_views)
