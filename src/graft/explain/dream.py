"""Class visualisation: the "ideal" image of a class by gradient ascent on the input.

Start from noise and climb the class's log-probability, with a total-variation
penalty (neighbouring pixels alike) and random shifts every step (jitter), so the
result is smooth instead of high-frequency adversarial noise (Simonyan et al., 2013;
Mordvintsev et al., 2015).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graft.explain.target import ExplainTarget, normalizer
from graft.validation import Interval, check_choice, check_param

__all__ = ["DreamOptions", "DreamResult", "dream", "total_variation"]


@dataclass
class DreamResult:
    """Outcome of :func:`dream`.

    Attributes:
        image: the optimised image, uint8 H x W x 3 at the network input size.
        start_image: the noise it started from.
        class_index: the class optimised for.
        label: its name.
        start_probability: the class probability of the starting noise.
        probability: the class probability of the final (saved, uint8) image.
        steps: optimisation steps run.
        history: class probability every 10 steps (jittered views, for curves).
    """

    image: np.ndarray
    start_image: np.ndarray
    class_index: int
    label: str
    start_probability: float
    probability: float
    steps: int
    history: list[float] = field(default_factory=list)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of (N, C, H, W)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class DreamOptions:
    """How :func:`dream` optimises the image.

    Attributes:
        steps: Adam steps on the image.
        lr: Adam learning rate (on the image's logit-space parameters).
        tv_weight: weight of the total-variation penalty (higher: smoother, less detail).
        jitter: largest random shift in pixels, per axis and step.
        blur_every: apply a light 3x3 blur every this many steps (0: never), more smoothing.
        noise: standard deviation of the starting noise around mid-grey (in [0, 1] pixel units).
        objective: ``"logit"`` climbs the raw class score (keeps sharpening features after the
            probability saturates: more vivid images); ``"logprob"`` climbs the log-probability.
        seed: seed of the starting noise and the jitter.
    """

    steps: int = 100
    lr: float = 0.1
    tv_weight: float = 4.0
    jitter: int = 8
    blur_every: int = 4
    noise: float = 0.05
    objective: str = "logit"
    seed: int = 0


def _start_image(shape: tuple[int, int], noise: float, g: torch.Generator) -> torch.Tensor:
    """Mid-grey noise (1, 3, H, W), rounded to uint8 levels as it would be saved."""
    h, w = shape
    start = (0.5 + noise * torch.randn(1, 3, h, w, generator=g)).clamp(0.02, 0.98)
    return _from_uint8(_to_uint8(start))


def _from_uint8(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def _blur_kernel(dev: torch.device | str) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=dev) / 16.0
    return kernel.expand(3, 1, 3, 3).contiguous()


def _ascend(
    target: ExplainTarget, class_index: int, start: torch.Tensor, opts: DreamOptions, g: torch.Generator
) -> tuple[torch.Tensor, list[float]]:
    """Climb the class score from ``start``; (the final image in [0, 1], probability history)."""
    net = target.net
    dev = target.device
    norm = normalizer(target.preprocessing, dev)
    # Optimise p with x = sigmoid(p): pixels stay in [0, 1] without clipping dead zones.
    p = torch.logit(start.clamp(1e-3, 1 - 1e-3)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=opts.lr)
    kernel = _blur_kernel(dev)
    history: list[float] = []
    with torch.enable_grad():
        for step in range(opts.steps):
            x = torch.sigmoid(p)
            if opts.jitter:
                dy, dx = (int(v) for v in torch.randint(-opts.jitter, opts.jitter + 1, (2,), generator=g))
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            logits = net(norm(x)).float()
            logp = F.log_softmax(logits, 1)[0, class_index]
            score = logits[0, class_index] if opts.objective == "logit" else logp
            loss = -score + opts.tv_weight * total_variation(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if opts.blur_every and (step + 1) % opts.blur_every == 0 and step + 1 < opts.steps:
                with torch.no_grad():  # blur in image space, then back to p
                    xb = F.conv2d(F.pad(torch.sigmoid(p), (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
                    p.copy_(torch.logit(xb.clamp(1e-4, 1 - 1e-4)))
            if step % 10 == 0:
                history.append(float(logp.detach().exp()))
    return torch.sigmoid(p), history


def dream(target: ExplainTarget, class_index: int, options: DreamOptions | None = None, **settings: Any) -> DreamResult:
    """Optimise an input image so the network calls it ``class_index``.

    Args:
        target: the network, preprocessing and classes.
        class_index: the class to visualise.
        options: how to optimise (default :class:`DreamOptions`).
        **settings: :class:`DreamOptions` fields overriding ``options``, e.g. ``steps=15, seed=0``.
    """
    opts = replace(options or DreamOptions(), **settings)
    if isinstance(class_index, np.integer):
        class_index = int(class_index)
    check_param("class_index", class_index, "dream", Interval(0, len(target.classes) - 1, integer=True))
    check_param("steps", opts.steps, "dream", Interval(1, integer=True))
    check_choice("objective", opts.objective, ("logit", "logprob"), "dream")
    dev = target.device
    g = torch.Generator().manual_seed(opts.seed)
    start = _start_image(target.preprocessing.input_size, opts.noise, g)
    image, history = _ascend(target, class_index, start, opts, g)
    final = _to_uint8(image)
    with torch.no_grad():
        xs = torch.cat([start.to(dev), _from_uint8(final).to(dev)])
        logits = target.net(normalizer(target.preprocessing, dev)(xs)).float()
        probs = torch.softmax(logits, 1)[:, class_index].cpu().numpy()
    return DreamResult(
        image=final,
        start_image=_to_uint8(start),
        class_index=class_index,
        label=target.classes[class_index],
        start_probability=float(probs[0]),
        probability=float(probs[1]),
        steps=opts.steps,
        history=history,
    )
