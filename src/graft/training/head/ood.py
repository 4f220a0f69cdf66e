"""Fitting the "unknown" score: reference rows from the training features, the threshold from held-out folds.

The scorer itself (what a saved model runs) is :class:`graft.network.ood.OODScorer`; the
method and its measurements are described there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from graft.network.ood import K_NEIGHBOURS, MAX_REFERENCE, PASS_RATE, OODScorer

__all__ = ["OODFit", "fit_ood"]


@dataclass
class OODFit:
    """Result of :func:`fit_ood`: the scorer (threshold set) and the held-out scores behind it."""

    scorer: OODScorer
    threshold: float
    heldout_scores: np.ndarray


def _scorer(reference: np.ndarray, k: int) -> OODScorer:
    scorer = OODScorer(len(reference), reference.shape[1], k)
    with torch.no_grad():  # one copy of the reference rows, normalised in place
        ref = scorer.reference.copy_(torch.from_numpy(np.asarray(reference, np.float32)))
        ref.div_(ref.norm(dim=1, keepdim=True).clamp_min_(1e-12))
    return scorer.eval()


def fit_ood(
    X: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    k: int = K_NEIGHBOURS,
    folds: int = 5,
    seed: int = 0,
    pass_rate: float = PASS_RATE,
    max_reference: int = MAX_REFERENCE,
) -> OODFit:
    """Reference rows from the training features; the threshold from held-out folds of them.

    Args:
        X: training features (augmented views allowed: ``groups`` keeps the views of one
            image in one fold, so no image is its own neighbour when scored).
        pass_rate: share of held-out training images that should score below the threshold.
    """
    rng = np.random.default_rng(seed)
    X = np.asarray(X, np.float32)
    gid = np.arange(len(X)) if groups is None else np.asarray(groups)
    if len(X) > max_reference:
        keep = np.sort(rng.choice(len(X), max_reference, replace=False))
        X = X[keep]
        gid = gid[keep]
    uniq = np.unique(gid)
    n_folds = max(2, min(folds, len(uniq)))
    fold_of = dict(zip(uniq.tolist(), (rng.permutation(len(uniq)) % n_folds).tolist()))
    fold = np.array([fold_of[g] for g in gid.tolist()])
    held = np.zeros(len(X), np.float64)
    with torch.no_grad():
        for f in range(n_folds):
            te = fold == f
            if te.any() and (~te).sum() >= 1:
                held[te] = _scorer(X[~te], k)(torch.from_numpy(X[te])).double().numpy()
    threshold = float(np.quantile(held, pass_rate))
    scorer = _scorer(X, k)
    with torch.no_grad():
        scorer.threshold.fill_(threshold)
    return OODFit(scorer, threshold, held)
