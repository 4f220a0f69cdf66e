"""Using unlabelled images in the linear head fit, kept only where cross-validation on labelled images says so.

Two well-known ways to turn unlabelled features into training rows, both on the cached features:

* ``self_training``: the labelled-only head (temperature-scaled, so its probabilities are honest)
  labels each unlabelled image; those at or above :data:`CONFIDENCE` join the fit as pseudo-labelled rows.
* ``label_spreading``: scikit-learn's ``LabelSpreading`` on a k-nearest-neighbour graph of the
  centred, unit-length features of the labelled and unlabelled images (Zhou et al. 2004); the
  unlabelled images whose spread label distribution is at least :data:`CONFIDENCE` sure join the fit.
  ``alpha`` = :data:`SPREAD_ALPHA` = 0.99, the value of Zhou et al. (and of Iscen et al. 2019 on
  network features), not scikit-learn's default 0.2: a label's weight after h hops of the graph is
  about alpha^h, so at 0.2 labels reach one or two neighbours (little more than a nearest-neighbour
  vote of the labelled images, which the linear head already does better) while at 0.99 they follow
  a cluster of the graph as far as it goes, which is what the cluster assumption behind it needs.

Pseudo-labelled rows weigh together at most as much as the labelled rows (each ``n_labelled /
n_pseudo`` when there are more of them), so a large unlabelled pool cannot drown the labels.
Which of ``none``, ``self_training`` and ``label_spreading`` is used is decided by K-fold
cross-validation on the labelled training images only, at the labelled-only head's C: each fold's
held-out images are scored by heads fitted on the other folds, with the unlabelled images labelled
from those other folds only. A method is kept only when its mean gain over labelled-only beats one
standard error of the per-fold gains (the rule graft's C choice uses): where it does not clearly
help, the head is the labelled-only head. Validation images are never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from graft.training.head.calibration import fit_temperature
from graft.training.head.linear_probe import LinearFit, Targets, solve_logistic

__all__ = ["CONFIDENCE", "FOLDS", "METHODS", "SPREAD_ALPHA", "SemiFit", "fit_with_unlabeled", "pseudo_labels"]

METHODS = ("self_training", "label_spreading")
CONFIDENCE = 0.9  # calibrated probability (or spread label mass) a pseudo-label needs
FOLDS = 5
SPREAD_ALPHA = 0.99  # label spreading: how far labels travel along the graph (Zhou et al. 2004)
_NEIGHBOURS = 10


@dataclass
class SemiFit:
    """The head to keep (``fit``) and the record of how it was chosen (``info``, for metrics.json)."""

    fit: LinearFit
    info: dict[str, Any] = field(default_factory=dict)


def _unit(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    Z = np.asarray(X, np.float32) - mean
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def pseudo_labels(
    method: str, base: LinearFit, T: float, lab: tuple[np.ndarray, np.ndarray], X_u: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``X_u`` that get a label, their labels) by ``method``, from the labelled rows ``lab`` = (X, y)."""
    if method == "self_training":
        z = base.logits(X_u) / T
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
    else:
        from sklearn.semi_supervised import LabelSpreading
        from threadpoolctl import threadpool_limits

        X_l, y_l = lab
        mean = np.concatenate([X_l, X_u]).mean(0).astype(np.float32)
        Z = np.concatenate([_unit(X_l, mean), _unit(X_u, mean)])
        y = np.concatenate([y_l, np.full(len(X_u), -1)])
        k = min(_NEIGHBOURS, len(Z) - 1)
        with threadpool_limits(1):  # OpenMP/BLAS threads spinning on a busy machine: 6.7 s -> 0.7 s (1,600 rows)
            # error shrinks as alpha^iterations: 1,000 iterations at 0.99 leave 4e-5 (sparse products: fast)
            ls = LabelSpreading(kernel="knn", n_neighbors=k, alpha=SPREAD_ALPHA, max_iter=1000).fit(Z, y)
        dist = np.zeros((len(Z), n_classes))
        dist[:, ls.classes_[ls.classes_ >= 0]] = ls.label_distributions_
        p = dist[len(X_l) :]
    keep = np.flatnonzero(p.max(1) >= CONFIDENCE)
    return keep, p[keep].argmax(1)


def _solve(X: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, C: float, seed: int) -> LinearFit:
    yt = torch.from_numpy(np.asarray(y, np.int64))
    return solve_logistic(X, Targets(yt, torch.from_numpy(w.astype(np.float32)), n_classes, y), C=C, seed=seed)


def _fit_method(
    method: str,
    lab: tuple[np.ndarray, np.ndarray, np.ndarray],
    X_u: np.ndarray,
    base: LinearFit,
    ctx: tuple[int, float, float, int],
) -> tuple[LinearFit, int]:
    """(the head fitted on the labelled rows ``lab`` = (X, y, weights) plus ``method``'s pseudo-labelled rows, how many)."""
    n_classes, C, T, seed = ctx
    X, y, w = lab
    rows, labels = pseudo_labels(method, base, T, (X, y), X_u, n_classes)
    if len(rows) == 0:
        return base, 0
    pw = np.full(len(rows), min(1.0, len(X) / len(rows)), np.float32) * float(w.mean())
    fit = _solve(
        np.concatenate([X, X_u[rows]]), np.concatenate([y, labels]), np.concatenate([w, pw]), n_classes, C, seed
    )
    return fit, len(rows)


def _folds(y_img: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y_img):
        idx = np.flatnonzero(y_img == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            out[j % k].append(int(i))
    return [np.array(sorted(f), np.int64) for f in out if f]


def fit_with_unlabeled(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    X_u: np.ndarray,
    base: LinearFit,
    n_classes: int,
    class_weight: np.ndarray | None = None,
    seed: int = 0,
) -> SemiFit:
    """Cross-validate labelled-only against each of :data:`METHODS`; refit with the winner where it clearly helps.

    Args:
        train: labelled training rows (X, y, groups): views of one image share a group and a fold.
        X_u: unlabelled features (copies of validation/test images already removed by the caller).
        base: the labelled-only fit (its C is kept; its out-of-fold logits give the temperature).
    """
    X, y, groups = train
    cw = np.ones(n_classes, np.float32) if class_weight is None else np.asarray(class_weight, np.float32)
    w = cw[y]
    T = 1.0 if base.oof_logits is None else fit_temperature(base.oof_logits, base.oof_labels)  # type: ignore[arg-type]
    ctx = (n_classes, base.C, T, seed)
    img, first = np.unique(groups, return_index=True)
    k = int(min(FOLDS, np.bincount(y[first], minlength=n_classes)[np.unique(y)].min()))
    info: dict[str, Any] = {"images": int(len(X_u)), "confidence": CONFIDENCE, "C": base.C, "folds": k}
    if k < 2 or len(X_u) == 0:
        return SemiFit(base, {**info, "method": "none", "why": "too few labelled images per class to cross-validate"})
    scores: dict[str, list[float]] = {"none": [], **{m: [] for m in METHODS}}
    for te_img in _folds(y[first], k, seed):
        te = np.isin(groups, img[te_img])
        tr = ~te
        fold_base = _solve(X[tr], y[tr], w[tr], n_classes, base.C, seed)
        scores["none"].append(float((fold_base.logits(X[te]).argmax(1) == y[te]).mean()))
        for m in METHODS:
            fit, _ = _fit_method(m, (X[tr], y[tr], w[tr]), X_u, fold_base, ctx)
            scores[m].append(float((fit.logits(X[te]).argmax(1) == y[te]).mean()))
    return _choose(scores, (X, y, w), X_u, base, ctx, info)


def _choose(
    scores: dict[str, list[float]],
    lab: tuple[np.ndarray, np.ndarray, np.ndarray],
    X_u: np.ndarray,
    base: LinearFit,
    ctx: tuple[int, float, float, int],
    info: dict[str, Any],
) -> SemiFit:
    """The best method if its per-fold gain over labelled-only beats one standard error; else labelled-only."""
    none = np.array(scores["none"])
    gains = {m: np.array(scores[m]) - none for m in METHODS}
    best = max(METHODS, key=lambda m: (gains[m].mean(), m))
    g = gains[best]
    se = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("inf")
    info["cv_accuracy"] = {m: round(float(np.mean(s)), 4) for m, s in scores.items()}
    info["kept_if_gain_over"] = round(se, 4)
    if g.mean() <= 0 or g.mean() <= se:
        return SemiFit(base, {**info, "method": "none", "why": f"cross-validation: {best} did not clearly help"})
    fit, used = _fit_method(best, lab, X_u, base, ctx)
    fit.oof_logits, fit.oof_labels, fit.oof_rows = base.oof_logits, base.oof_labels, base.oof_rows
    return SemiFit(fit, {**info, "method": best, "pseudo_labelled": used})
