"""Adversarial examples: an invisible perturbation that changes the prediction.

Iterative FGSM / projected gradient descent (Kurakin et al., 2016; Madry et al., 2017)
under an L-infinity budget in pixel space [0, 1] (before normalisation). Success is
judged on the image as it would be saved (rounded to uint8), not on floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from graft.explain.target import ExplainTarget, normalizer
from graft.validation import Interval, check_param, invalid_parameter

__all__ = ["AttackResult", "attack"]


@dataclass
class AttackResult:
    """Outcome of :func:`attack`.

    Attributes:
        original: the network's view of the image (uint8 H x W x 3).
        adversarial: the perturbed image (uint8, same shape).
        probs_before: class probabilities of ``original``.
        probs_after: class probabilities of ``adversarial``.
        source_index: the class predicted for ``original``.
        target_index: the class aimed for (None for an untargeted attack).
        success: targeted: ``adversarial`` is classified as the target; untargeted: its
            prediction differs from ``source_index``.
        linf: largest absolute pixel change actually used, in [0, 1] units.
        epsilon: the L-infinity budget.
        steps: iterations run (it stops once successful with the asked confidence).
    """

    original: np.ndarray
    adversarial: np.ndarray
    probs_before: np.ndarray
    probs_after: np.ndarray
    source_index: int
    target_index: int | None
    success: bool
    linf: float
    epsilon: float
    steps: int

    @property
    def predicted_after(self) -> int:
        return int(self.probs_after.argmax())

    @property
    def perturbation(self) -> np.ndarray:
        """Signed difference, float in [-epsilon, epsilon] (H x W x 3)."""
        return (self.adversarial.astype(np.float32) - self.original.astype(np.float32)) / 255.0

    def perturbation_image(self) -> np.ndarray:
        """The perturbation amplified to the full 0..255 range (mid-grey is no change), for pictures."""
        d = self.perturbation
        scale = float(np.abs(d).max()) or 1.0
        return (np.clip(0.5 + 0.5 * d / scale, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_attack(
    target: ExplainTarget, epsilon: float, steps: int, target_index: int | None
) -> tuple[float, int | None]:
    """(the budget on the 1/255 grid, the target index as an int) or an :class:`InvalidParameterError`."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 < epsilon <= 1.0:
        raise invalid_parameter(
            "epsilon", "attack", f"a number in the range (0, 1] (pixel units: 8/255 = {8 / 255:.4f})", epsilon
        )
    check_param("steps", steps, "attack", Interval(1, integer=True))
    if isinstance(target_index, np.integer):
        target_index = int(target_index)
    n_classes = len(target.classes)
    check_param("target_index", target_index, "attack", Interval(0, n_classes - 1, integer=True), None)
    # Images are saved as uint8: work on the 1/255 grid, budget rounded down onto it.
    budget = float(np.floor(epsilon * 255.0 + 1e-6) / 255.0)
    if budget <= 0:
        raise invalid_parameter("epsilon", "attack", f"at least one grey level (1/255 = {1 / 255:.4f})", epsilon)
    return budget, target_index


@dataclass
class _Fgsm:
    """One image's iterative FGSM: the network, the start image, the budget and the step."""

    net: torch.nn.Module
    norm: Callable[[torch.Tensor], torch.Tensor]
    x0: torch.Tensor
    budget: float
    alpha: float
    label: torch.Tensor
    #: targeted (-1): descend the loss of the target; untargeted (+1): ascend the loss of the source.
    direction: float

    def probs(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.net(self.norm(x)).float(), 1)[0].double().cpu().numpy()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One signed-gradient step from ``x``, rounded to the uint8 grid and projected into the budget."""
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(self.net(self.norm(x)).float(), self.label)
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = x + self.direction * self.alpha * grad.sign()
            x = torch.round(x * 255.0) / 255.0
            return torch.min(torch.max(x, self.x0 - self.budget), self.x0 + self.budget).clamp(
                0.0, 1.0
            )  # grid points stay on the grid

    def run(self, steps: int, done: Callable[[np.ndarray], bool]) -> tuple[torch.Tensor, np.ndarray, int]:
        """Step until ``done(probabilities)`` or ``steps`` run out: (the image, its probabilities, steps run)."""
        x = self.x0.clone()
        for step in range(1, steps + 1):
            x = self.step(x)
            after = self.probs(x)
            if done(after):
                return x, after, step  # stopped early
        return x, after, steps


def _succeeded(p: np.ndarray, source: int, target_index: int | None) -> bool:
    return int(p.argmax()) == target_index if target_index is not None else int(p.argmax()) != source


def attack(
    target: ExplainTarget,
    rgb: np.ndarray,
    *,
    target_index: int | None = None,
    epsilon: float = 8 / 255,
    steps: int = 40,
    step_size: float | None = None,
    confidence: float = 0.5,
) -> AttackResult:
    """Targeted (``target_index``) or untargeted iterative-FGSM attack on one image.

    Args:
        target: the network, preprocessing and classes.
        rgb: uint8 HWC image at the network input size (see ``prepare_image``).
        target_index: class to push the prediction to; None pushes it away from the
            currently predicted class.
        epsilon: L-infinity budget in [0, 1] pixel units (8/255 by default).
        steps: most iterations.
        step_size: per-step change; default ``epsilon / 10``, at least 1/255 (one grey
            level), so ``steps`` iterations can cross the budget several times.
        confidence: keep going after the prediction flips until the new class has at
            least this probability (or ``steps`` run out); 0 stops at the first flip.
    """
    budget, target_index = _check_attack(target, epsilon, steps, target_index)
    dev = target.device
    x0 = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(dev)
    norm = normalizer(target.preprocessing, dev)
    with torch.no_grad():
        before = torch.softmax(target.net(norm(x0)).float(), 1)[0].double().cpu().numpy()
    source = int(before.argmax())
    fgsm = _Fgsm(
        net=target.net,
        norm=norm,
        x0=x0,
        budget=budget,
        alpha=max(step_size if step_size is not None else epsilon / 10.0, 1.0 / 255.0),
        label=torch.tensor([source if target_index is None else target_index], device=dev),
        direction=-1.0 if target_index is not None else 1.0,
    )
    x, after, used = fgsm.run(steps, lambda p: _succeeded(p, source, target_index) and float(p.max()) >= confidence)
    adv = (x[0].permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    linf = float(np.abs(adv.astype(np.int16) - rgb.astype(np.int16)).max()) / 255.0
    return AttackResult(
        original=rgb,
        adversarial=adv,
        probs_before=before,
        probs_after=after,
        source_index=source,
        target_index=target_index,
        success=_succeeded(after, source, target_index),
        linf=linf,
        epsilon=float(epsilon),
        steps=used,
    )
