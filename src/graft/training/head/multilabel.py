"""The multi-label linear head: one L2-regularised logistic regression per label, fitted together.

Same solver as the softmax head (:mod:`.linear_probe`: centred features in their principal
axes, full-batch L-BFGS in torch) with the labels' binary cross-entropies summed; C is chosen
by the same cross-validation and one-standard-error rule (score: mean average precision over
the labels, loss: mean BCE), folds stratified by each image's rarest label. On the held-out
(out-of-fold) logits of the chosen C it then fits one temperature per label and, on those
calibrated probabilities, the per-label F1-maximising decision thresholds: training images
only, never validation, so the validation metrics stay honest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from graft.metrics_multilabel import f1_thresholds
from graft.training.head.calibration import fit_label_temperatures
from graft.training.head.cross_validation import CVOptions, label_strata
from graft.training.head.linear_probe import LinearFit, Targets, solve_logistic

__all__ = ["MultiLabelFit", "fit_multilabel_head", "pos_weights_balanced"]


@dataclass
class MultiLabelFit(LinearFit):
    """:class:`LinearFit` (``cv_scores``: C -> mean CV AP; ``cv_losses``: mean CV BCE) plus calibration.

    ``weight``/``bias`` are the uncalibrated solve; ``temperatures`` (one per label) divide
    their rows; ``thresholds`` apply to ``sigmoid(logits / temperatures)``.
    """

    temperatures: np.ndarray | None = None
    thresholds: np.ndarray | None = None

    def calibrated(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) with the temperatures folded in: the layer a model ships."""
        t = np.ones(len(self.bias)) if self.temperatures is None else self.temperatures
        return (self.weight / t[:, None]).astype(np.float32), (self.bias / t).astype(np.float32)


def pos_weights_balanced(Y: np.ndarray) -> np.ndarray:
    """Per-label positive weights negatives / positives on the training rows (1 for a label without either)."""
    Y = np.asarray(Y) > 0.5
    pos = Y.sum(0).astype(np.float64)
    neg = len(Y) - pos
    w = np.divide(neg, pos, out=np.ones_like(pos), where=(pos > 0) & (neg > 0))
    return w.astype(np.float32)


def fit_multilabel_head(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    C: float | None = None,
    cv: CVOptions = CVOptions(),
    pos_weight: np.ndarray | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> MultiLabelFit:
    """Fit the per-label logistic regressions on features ``X`` (n, d) for 0/1 labels ``Y`` (n, labels).

    Args:
        C: a fixed inverse regularisation strength; None chooses it by cross-validation. Either
            way the folds run (at that C alone when given): the temperatures and thresholds need
            out-of-fold logits.
        pos_weight: per-label weight of the positives (:func:`pos_weights_balanced`).
        cv / seed / groups: as for :func:`~graft.training.head.linear_probe.fit_linear_head`.
    """
    Yf = np.ascontiguousarray(np.asarray(Y) > 0.5, dtype=np.float32)
    yt = torch.from_numpy(Yf)
    pw = torch.ones(Yf.shape[1]) if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
    weight = torch.where(yt > 0.5, pw[None, :], torch.ones(()))
    if C is not None:
        cv = dataclasses.replace(cv, C_grid=(float(C),))
    fit = solve_logistic(X, Targets(yt, weight, Yf.shape[1], label_strata(Yf)), cv=cv, seed=seed, groups=groups)
    out = MultiLabelFit(**vars(fit))
    if fit.oof_logits is None or fit.oof_labels is None:  # no fold could be formed
        out.temperatures = np.ones(Yf.shape[1])
        out.thresholds = np.full(Yf.shape[1], 0.5)
        return out
    out.temperatures = fit_label_temperatures(fit.oof_logits, fit.oof_labels)
    probs = 1.0 / (1.0 + np.exp(-np.asarray(fit.oof_logits, np.float64) / out.temperatures[None, :]))
    out.thresholds = f1_thresholds(fit.oof_labels, probs)
    return out
