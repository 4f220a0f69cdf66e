"""'Unknown': an out-of-distribution score from the features the model already computes.

Relative Mahalanobis distance (Ren et al., 2021, "A simple fix to Mahalanobis distance
for improving near-OOD detection"): the distance of an image's features to the nearest
class mean under the shared within-class covariance, minus its distance to the mean
of all training features under their covariance. The second term cancels the
directions in which every photo varies (lighting, background), so what remains
measures how unlike the training classes an image is. It needs only class means and
two covariance matrices (shrunk with Ledoit-Wolf, since there are often fewer images
than feature dimensions) and runs as two matrix products: cheap in PyTorch and inside
the exported ONNX graph alike, and independent of the training set's size at
prediction time (a nearest-neighbour score would have to ship every training feature).

The threshold is the 95th percentile of the scores of held-out training images
(cross-validation folds): about 95% of images like the training data pass, and the
validation split is never looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["OOD_METHOD", "OODScorer", "OODFit", "fit_ood", "PASS_RATE"]

OOD_METHOD = "relative_mahalanobis"
PASS_RATE = 0.95
"""Share of held-out in-distribution training images the threshold lets through."""


class OODScorer(nn.Module):
    """Features (N, D) -> relative Mahalanobis scores (N,); higher is less like the training data."""

    means: torch.Tensor
    precision: torch.Tensor
    mean0: torch.Tensor
    precision0: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(n_classes, dim))
        self.register_buffer("precision", torch.zeros(dim, dim))
        self.register_buffer("mean0", torch.zeros(dim))
        self.register_buffer("precision0", torch.zeros(dim, dim))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        f = feats.float()
        # (x - m)^T P (x - m) = x^T P x - 2 x^T P m + m^T P m, for every class mean m at once.
        fp = f @ self.precision
        xpx = (fp * f).sum(1, keepdim=True)
        mpm = ((self.means @ self.precision) * self.means).sum(1)
        d_class = xpx - 2 * fp @ self.means.T + mpm
        c = f - self.mean0
        d0 = ((c @ self.precision0) * c).sum(1)
        return d_class.min(1).values - d0


@dataclass
class OODFit:
    """Result of :func:`fit_ood`: the scorer (threshold set) and the held-out scores behind it."""

    scorer: OODScorer
    threshold: float
    heldout_scores: np.ndarray


def _precision(X: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    return LedoitWolf(assume_centered=True).fit(X).precision_.astype(np.float32)


def _fit(X: np.ndarray, y: np.ndarray, n_classes: int) -> OODScorer:
    dim = X.shape[1]
    means = np.zeros((n_classes, dim), np.float64)
    for k in range(n_classes):
        rows = X[y == k]
        means[k] = rows.mean(0) if len(rows) else X.mean(0)
    within = X - means[y]
    mean0 = X.mean(0)
    scorer = OODScorer(n_classes, dim)
    with torch.no_grad():
        scorer.means.copy_(torch.from_numpy(means.astype(np.float32)))
        scorer.precision.copy_(torch.from_numpy(_precision(within)))
        scorer.mean0.copy_(torch.from_numpy(mean0.astype(np.float32)))
        scorer.precision0.copy_(torch.from_numpy(_precision(X - mean0)))
    return scorer.eval()


def fit_ood(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    groups: np.ndarray | None = None,
    folds: int = 5,
    seed: int = 0,
    pass_rate: float = PASS_RATE,
) -> OODFit:
    """Fit the scorer on all training features; set its threshold on held-out folds.

    Args:
        X, y: training features and labels (augmented views allowed: ``groups`` keeps
            the views of one image in one fold).
        pass_rate: share of held-out training images that should score below the threshold.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.int64)
    gid = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq = np.unique(gid)
    rng = np.random.default_rng(seed)
    fold_of_group = dict(zip(uniq.tolist(), rng.permutation(len(uniq)) % max(2, min(folds, len(uniq)))))
    fold = np.array([fold_of_group[g] for g in gid.tolist()])
    held = np.zeros(len(y), np.float64)
    for f in np.unique(fold):
        te, tr = fold == f, fold != f
        with torch.no_grad():
            part = _fit(X[tr], y[tr], n_classes)
            held[te] = part(torch.from_numpy(X[te].astype(np.float32))).double().numpy()
    threshold = float(np.quantile(held, pass_rate))
    scorer = _fit(X, y, n_classes)
    with torch.no_grad():
        scorer.threshold.fill_(threshold)
    return OODFit(scorer, threshold, held)
