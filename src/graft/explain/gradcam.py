"""Grad-CAM: where in the image the evidence for a class lies (Selvaraju et al., 2017).

A short hook-based implementation (no pytorch-grad-cam dependency): the gradient of
the class logit with respect to a feature map, averaged over space, weights the
map's channels; the ReLU of the weighted sum, upsampled to the input size, is the heat map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from graft.exceptions import InvalidParameterError
from graft.explain.layers import capture, default_feature_layer, frozen_parameters, get_layer
from graft.explain.target import ExplainTarget, predict_top_k, to_input
from graft.validation import Interval, check_param, invalid_parameter

__all__ = ["CamResult", "gradcam", "gradcam_batch", "overlay_heatmap", "explain_image"]


@dataclass
class CamResult:
    """Grad-CAM of one image.

    Attributes:
        image: the network's view of the image (uint8 H x W x 3, the centre crop).
        cam: heat map in [0, 1], same H x W as ``image``.
        class_index: the class explained.
        label: its name.
        probability: its probability for this image.
        top_k: (label, probability) of the most probable classes.
        layer: the layer whose activations were used.
    """

    image: np.ndarray
    cam: np.ndarray
    class_index: int
    label: str
    probability: float
    top_k: list[tuple[str, float]]
    layer: str


def gradcam(
    target: ExplainTarget, rgb: np.ndarray, *, class_index: int | None = None, layer: str | None = None, top_k: int = 3
) -> CamResult:
    """Grad-CAM heat map of ``rgb`` (uint8 HWC at the network input size) for one class.

    Args:
        target: the network, preprocessing and classes.
        rgb: the image as the network sees it (see :func:`~graft.explain.target.prepare_image`).
        class_index: class to explain; default the predicted one.
        layer: module name (``named_modules``); default :func:`default_feature_layer`.
        top_k: how many top predictions to return alongside.
    """
    return gradcam_batch(
        target, [rgb], class_indices=None if class_index is None else [class_index], layer=layer, top_k=top_k
    )[0]


def _check_class_indices(target: ExplainTarget, n_images: int, class_indices: Sequence[int] | None) -> None:
    if class_indices is None:
        return
    if len(class_indices) != n_images:
        raise invalid_parameter(
            "class_indices", "gradcam_batch", f"None or one class index per image ({n_images})", list(class_indices)
        )
    for k in class_indices:
        check_param(
            "class_index",
            int(k) if isinstance(k, np.integer) else k,
            "gradcam",
            Interval(0, len(target.classes) - 1, integer=True),
        )


def _unit_range(cam: np.ndarray) -> np.ndarray:
    """``cam`` scaled to [0, 1] (all zeros where it is flat)."""
    lo = float(cam.min())
    hi = float(cam.max())
    return (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)


def _chunk_cams(
    target: ExplainTarget, layer: str, chunk: Sequence[np.ndarray], class_indices: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch's (raw cams at the image size (B, H, W), probabilities (B, K), explained classes (B,))."""
    net = target.net
    x = torch.cat([to_input(im, target.preprocessing, target.device) for im in chunk])
    with torch.enable_grad(), frozen_parameters(net), capture(get_layer(net, layer), leaf=True) as store:
        logits = net(x).float()
    act = store.get("out")
    if act is None or act.dim() != 4:
        shape = None if act is None else tuple(act.shape[1:])
        raise InvalidParameterError(
            f"layer {layer!r} outputs shape {shape}; Grad-CAM needs a (C, H, W) feature map "
            "(see graft features MODEL --list-layers)"
        )
    probs = torch.softmax(logits.detach(), 1).double().cpu().numpy()
    idx = probs.argmax(1) if class_indices is None else np.asarray(class_indices, dtype=np.int64)
    picked = logits[torch.arange(len(chunk)), torch.from_numpy(idx).to(logits.device)]
    (grad,) = torch.autograd.grad(picked.sum(), act)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    raw = F.relu((weights * act.detach().float()).sum(1, keepdim=True))
    cams = F.interpolate(raw, size=chunk[0].shape[:2], mode="bilinear", align_corners=False)[:, 0].cpu().numpy()
    return cams, probs, idx


def gradcam_batch(
    target: ExplainTarget,
    images: Sequence[np.ndarray],
    *,
    class_indices: Sequence[int] | None = None,
    layer: str | None = None,
    top_k: int = 3,
    batch_size: int = 8,
) -> list[CamResult]:
    """Grad-CAM of several images, one forward/backward pass per batch (see :func:`gradcam`).

    The images are independent in eval mode, so the gradient of the sum of each image's
    class logit with respect to the batch's feature map is every image's own gradient.
    """
    _check_class_indices(target, len(images), class_indices)
    layer = layer or default_feature_layer(target.net, target.preprocessing.input_size)
    get_layer(target.net, layer)  # an unknown layer fails before any image runs
    results: list[CamResult] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        wanted = None if class_indices is None else class_indices[start : start + len(chunk)]
        cams, probs, idx = _chunk_cams(target, layer, chunk, wanted)
        for j, rgb in enumerate(chunk):
            k = int(idx[j])
            results.append(
                CamResult(
                    image=rgb,
                    cam=_unit_range(cams[j]).astype(np.float32),
                    class_index=k,
                    label=target.classes[k],
                    probability=float(probs[j, k]),
                    top_k=predict_top_k(probs[j], target.classes, top_k),
                    layer=layer,
                )
            )
    return results


def overlay_heatmap(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map (coloured with a matplotlib colormap) over a uint8 image."""
    from matplotlib import colormaps

    heat = colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3]
    out = (1.0 - alpha) * rgb.astype(np.float32) / 255.0 + alpha * heat
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def explain_image(
    target: ExplainTarget, path: str, *, class_index: int | None = None, layer: str | None = None, top_k: int = 3
) -> CamResult:
    """Decode ``path`` and compute its Grad-CAM (see :func:`gradcam`)."""
    from graft.explain.target import prepare_image

    return gradcam(target, prepare_image(path, target.preprocessing), class_index=class_index, layer=layer, top_k=top_k)
