"""The training loss and the count of right answers, for single-label (class indices) and multi-label (0/1 rows) targets.

One place decides it from the targets' shape, so the head solvers, the fine-tuning loop and
its evaluation agree: class indices train with softmax cross-entropy, a 0/1 matrix with
per-label binary cross-entropy (``weight`` then is the per-label positive weight), and a
multi-label image counts as right only when every label is (subset accuracy at 0.5).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["classification_loss", "n_correct"]


def classification_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy for class indices ``y``; mean binary cross-entropy per image for a 0/1 matrix ``y``.

    Multi-label: ``weight`` weighs each label's positives (BCE's ``pos_weight``); the per-image
    loss is the mean over labels, so ``reduction="sum"`` sums images, as for cross-entropy.
    Label smoothing applies to single-label targets only.
    """
    if y.dim() == 2:
        per = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=weight, reduction="none")
        per = per.mean(1)
        return per.sum() if reduction == "sum" else per if reduction == "none" else per.mean()
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing, reduction=reduction)


def n_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    """How many rows are right: the argmax for class indices, every label (logit >= 0) for a 0/1 matrix."""
    if y.dim() == 2:
        return int(((logits >= 0) == (y > 0.5)).all(1).sum())
    return int((logits.argmax(1) == y).sum())
