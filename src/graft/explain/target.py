"""What the explain tools look at: a network (images -> logits), its preprocessing and class names.

Two sources: a graft model directory (the :class:`~graft.heads.GraftNet`) or a
pretrained timm backbone with its 1000-class ImageNet head (``--imagenet``), so a
user can look inside a network before training anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from graft.config import resolve_device
from graft.exceptions import InvalidParameterError
from graft.predict.results import top_k_results
from graft.predict.torch import probabilities
from graft.transforms.eval import Preprocessing

__all__ = [
    "ExplainTarget",
    "load_target",
    "resolve_class",
    "prepare_image",
    "to_input",
    "normalizer",
    "probabilities",
    "predict_top_k",
]


@dataclass
class ExplainTarget:
    """A classifier to explain.

    Attributes:
        net: module mapping normalised images (N, 3, H, W) to logits, in eval mode.
        preprocessing: the eval preprocessing the network expects.
        classes: class names in logit order (short names for ImageNet).
        name: what the user asked for (model directory or backbone name), for titles.
        full_names: long class descriptions (ImageNet synonyms) for matching; defaults to ``classes``.
    """

    net: nn.Module
    preprocessing: Preprocessing
    classes: list[str]
    name: str
    full_names: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def load_target(
    model: str | os.PathLike[str],
    *,
    imagenet: bool = False,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> ExplainTarget:
    """Load a graft model directory, or (``imagenet=True``) a pretrained backbone with its ImageNet head.

    Args:
        model: a model directory (``RUN_DIR/model`` or ``RUN_DIR``), or with ``imagenet`` a
            backbone name such as ``efficientnet_lite0``.
        imagenet: treat ``model`` as a timm backbone name and keep its 1000-class head.
        weights: weights file for the ImageNet backbone (default: graft's offline lookup).
        device: torch device.
    """
    device = resolve_device(device)
    if imagenet:
        from graft.backbones import create_backbone, imagenet_class_names

        bb = create_backbone(str(model), weights=weights, keep_classifier=True)
        if bb.num_classes != 1000:
            raise InvalidParameterError(
                f"backbone {model!r} has a {bb.num_classes}-class head, not ImageNet's 1000 classes; "
                "--imagenet needs an ImageNet-1k classifier"
            )
        return ExplainTarget(
            bb.model.eval().to(device),
            bb.preprocessing,
            imagenet_class_names(short=True),
            str(model),
            full_names=imagenet_class_names(),
        )
    from graft.predict.open import open_predictor
    from graft.predict.torch import TorchPredictor

    pred = open_predictor(model, "torch", device=device)
    if not isinstance(pred, TorchPredictor):  # open_predictor gives an .onnx file to ONNX Runtime
        raise InvalidParameterError(f"{model}: explain needs a model folder (PyTorch), not an exported ONNX file")
    return ExplainTarget(pred.net.eval(), pred.preprocessing, pred.classes, Path(model).name or str(model))


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


def resolve_class(classes: Sequence[str], spec: str | int, full_names: Sequence[str] | None = None) -> int:
    """Class index from an index, an exact name or an unambiguous partial name.

    Matching order: exact class name; integer index; case-insensitive exact match of a
    name or of one of its comma-separated synonyms (ImageNet: ``"tabby"``, ``"tabby cat"``);
    then a unique case-insensitive substring. ``"cat"`` matching several classes is an
    error listing the candidates.

    Raises:
        InvalidParameterError: no class or several classes match (a ``ValueError``).
    """
    names = list(full_names or classes)
    s = str(spec)
    if s in classes:
        return list(classes).index(s)
    if re.fullmatch(r"\d+", s.strip()):
        i = int(s)
        if 0 <= i < len(classes):
            return i
        raise InvalidParameterError(
            f"class index {i} is out of range: the model has {len(classes)} classes (0..{len(classes) - 1})"
        )
    q = _norm(s)
    exact = [i for i, n in enumerate(names) if q in {_norm(p) for p in n.split(",")} or q == _norm(classes[i])]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [i for i, n in enumerate(names) if q in _norm(n)]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        shown = ", ".join(list(classes)[:10]) + (", ..." if len(classes) > 10 else "")
        raise InvalidParameterError(
            f"no class matches {s!r}; classes are: {shown} (or pass an index 0..{len(classes) - 1})"
        )
    cands = "; ".join(f"{i}: {names[i]}" for i in partial[:8]) + ("; ..." if len(partial) > 8 else "")
    raise InvalidParameterError(f"{s!r} matches {len(partial)} classes ({cands}); pass a longer name or the index")


def prepare_image(path: str | os.PathLike[str], preprocessing: Preprocessing) -> np.ndarray:
    """Decode ``path`` and return the network's view of it: the resized, centre-cropped uint8 HWC RGB image."""
    from graft.data.decode import load_image

    img = load_image(path, draft_size=preprocessing.decode_size)
    return preprocessing.crop(img)


def to_input(rgb: np.ndarray, preprocessing: Preprocessing, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 HWC RGB (already at the input size) -> normalised (1, 3, H, W) float tensor."""
    return torch.from_numpy(preprocessing.normalize(rgb)).unsqueeze(0).to(device)


def normalizer(preprocessing: Preprocessing, device: torch.device | str = "cpu"):
    """A differentiable ``x in [0, 1] (N,3,H,W) -> normalised`` function (attack, dream)."""
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def predict_top_k(probs: np.ndarray, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable (label, probability) pairs of one probability vector."""
    row = top_k_results(np.asarray(probs)[None], classes, k)[0]
    return [(t["label"], t["probability"]) for t in row["top_k"]]
