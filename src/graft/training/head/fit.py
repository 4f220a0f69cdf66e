"""Training a head on cached features: seconds, not minutes.

The linear head is solved as a logistic regression (:mod:`.linear_probe`: L-BFGS,
C by cross-validation); MLP and flatten heads train by SGD with early stopping
(:mod:`.sgd_head`). This module picks between them for a head spec. The solvers'
names are re-exported so ``from graft.training.head.fit import fit_linear_head``
keeps working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from graft.features.dataset import SplitFeatures
from graft.training.head.calibration import fit_temperature
from graft.training.head.linear_probe import DEFAULT_C_GRID, LinearFit, fit_linear_head
from graft.training.head.sgd_head import fit_sgd_head

__all__ = ["DEFAULT_C_GRID", "LinearFit", "class_weights_balanced", "fit_linear_head", "fit_sgd_head", "train_head"]


def class_weights_balanced(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return (len(y) / (n_classes * counts)).astype(np.float32)


def train_head(
    spec: Any,
    train: SplitFeatures,
    val: SplitFeatures,
    *,
    C: float | None = None,
    class_weight: np.ndarray | None = None,
    seed: int = 0,
    linear_fit: Any = None,
) -> tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """Build the head ``spec`` (a :class:`~graft.heads.HeadSpec`) and train it on features.

    ``train``/``val``: their features, labels and (train) source-image groups.
    The linear head is fitted by :func:`fit_linear_head` (validation features unused:
    C comes from cross-validation on the training rows); the others by
    :func:`fit_sgd_head` with early stopping on the validation features. ``linear_fit``:
    a :class:`~graft.training.head.linear_probe.LinearFit` already made on (X, y), reused.
    A multi-label spec (``spec.multi_label``, ``train.y`` a 0/1 matrix) trains per-label
    logistic regressions; ``class_weight`` then is the per-label positive weight.

    Returns:
        (head in eval mode, summary for the run record, one history dict per C or epoch)
    """
    from graft.network import build_head

    head = build_head(spec)
    info: dict[str, Any] = {"type": spec.type}
    if getattr(spec, "multi_label", False):
        return _train_multilabel_head(
            head, spec, (train, val), C=C, pos_weight=class_weight, seed=seed, linear_fit=linear_fit
        )
    if spec.type == "linear":
        fit = linear_fit or fit_linear_head(
            train.X, train.y, spec.num_classes, C=C, class_weight=class_weight, seed=seed, groups=train.groups
        )
        # Temperature scaling on the out-of-fold logits, folded into the layer: every
        # predictor (PyTorch, the ONNX graph, the server) then gives calibrated probabilities.
        t = 1.0 if fit.oof_logits is None else fit_temperature(fit.oof_logits, fit.oof_labels)  # type: ignore[arg-type]
        lin: Any = head[-1]
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(fit.weight / t))
            lin.bias.copy_(torch.from_numpy(fit.bias / t))
        info.update(C=fit.C, temperature=t, cv_accuracy={str(k): v for k, v in fit.cv_scores.items()})
        if fit.oof_labels is not None:  # how many images the CV accuracy stands on (graft suggest's trust)
            info["cv_images"] = int(len(np.unique(train.groups)))
        history = [
            {"stage": "head", "C": float(c), "cv_acc": float(s), "cv_loss": float(fit.cv_losses[c])}
            for c, s in sorted(fit.cv_scores.items())
        ]
    else:
        history = fit_sgd_head(head, (train.X, train.y), (val.X, val.y), class_weight=class_weight, seed=seed)
        for r in history:
            r["stage"] = "head"
    return head.eval(), info, history


def _train_multilabel_head(
    head: Any,
    spec: Any,
    splits: tuple[SplitFeatures, SplitFeatures],
    *,
    C: float | None,
    pos_weight: np.ndarray | None,
    seed: int,
    linear_fit: Any,
) -> tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """:func:`train_head` for 0/1 label rows: per-label logistic regressions (linear), else SGD on BCE.

    ``info["thresholds"]``: the per-label decision thresholds, chosen on out-of-fold
    probabilities of the training rows (linear head); 0.5 for an SGD head, which has no
    held-out training logits to choose them on (validation is never used for that).
    """
    from graft.training.head.multilabel import fit_multilabel_head

    train, val = splits
    info: dict[str, Any] = {"type": spec.type, "multi_label": True}
    if spec.type != "linear":
        history = fit_sgd_head(head, (train.X, train.y), (val.X, val.y), class_weight=pos_weight, seed=seed)
        for r in history:
            r["stage"] = "head"
        info["thresholds"] = [0.5] * int(spec.num_classes)
        return head.eval(), info, history
    fit: Any = linear_fit or fit_multilabel_head(
        train.X, train.y, C=C, pos_weight=pos_weight, seed=seed, groups=train.groups
    )
    weight, bias = fit.calibrated()
    lin: Any = head[-1]
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(weight))
        lin.bias.copy_(torch.from_numpy(bias))
    info.update(
        C=fit.C,
        temperatures=[float(t) for t in fit.temperatures],
        thresholds=[float(t) for t in fit.thresholds],
        cv_map={str(k): v for k, v in fit.cv_scores.items()},
    )
    history = [
        {"stage": "head", "C": float(c), "cv_map": float(s), "cv_loss": float(fit.cv_losses[c])}
        for c, s in sorted(fit.cv_scores.items())
    ]
    return head.eval(), info, history
