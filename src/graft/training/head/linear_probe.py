"""The linear probe: a logistic-regression head on cached features, in seconds.

The linear head is a multinomial logistic regression fitted full-batch with L-BFGS
(torch's, on an analytic gradient: no autograd overhead) on centred features scaled
to unit RMS. Per-feature standardisation was dropped: it amplifies near-silent
feature dimensions and cost 1-1.5 points on sign_digits. The L2 strength is chosen
by stratified k-fold cross-validation on the training features (no images are
touched), warm-started along the regularisation path; where a fold has fewer
samples than dimensions the fit runs in the fold's row space (exact, by the
representer theorem: the optimal weights lie in the span of the training rows).
The scaling is folded back, so the saved head is a plain ``Linear`` on raw features.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from graft.training.head.cross_validation import DEFAULT_C_GRID, CVOptions, _choose_C
from graft.training.head.logreg import Problem, Rows, _Centred, _lbfgs_logreg, _principal_axes

__all__ = [
    "DEFAULT_C_GRID",
    "CVOptions",
    "LinearFit",
    "Targets",
    "fit_linear_head",
    "solve_logistic",
    "fits_on_one_thread",
    "torch_threads",
]


#: Below this many feature values a fit runs on one thread: its matmuls are too small to
#: repay the barrier waits of several, above all on busy CPUs.
ONE_THREAD_MAX_VALUES = 4_000_000


def fits_on_one_thread(n_rows: int, n_columns: int) -> bool:
    """Whether :func:`fit_linear_head` fits features this size on one thread."""
    return n_rows * n_columns < ONE_THREAD_MAX_VALUES


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, restored after."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


#: Above this many feature values (64 MB of float32) the centred, scaled copy of the
#: features is never materialised: products run over row chunks centred on the fly, so a
#: fit holds the caller's matrix and tens of MB besides, whatever the dataset size. Below
#: it (every shared dataset) the copy is faster: 16,000 x 1,904 features fitted in 4.9 s
#: materialised vs 7.7 s in chunks, noise next to the 2.5 minutes of embedding behind them.
_MATERIALISE_MAX = 16_000_000


def _centre(Xt: torch.Tensor) -> tuple[Rows, torch.Tensor, float]:
    """(centred features scaled to unit RMS, the mean, the scale): a copy for small X, chunks for large X."""
    mu = Xt.mean(0)
    if Xt.numel() <= _MATERIALISE_MAX or Xt.shape[0] < Xt.shape[1]:  # an SVD needs the matrix
        Z = Xt - mu
        g = 1.0 / max(float(Z.pow(2).mean().sqrt()), 1e-12)  # one global scale: C transfers across backbones
        return Z.mul_(g), mu, g
    lazy = _Centred(Xt, mu, 1.0)
    sq = sum(float(c.square_().sum(dtype=torch.float64)) for _, c in lazy.chunks())
    lazy.g = 1.0 / max(math.sqrt(sq / Xt.numel()), 1e-12)
    return lazy, mu, lazy.g


@dataclass
class LinearFit:
    """Result of :func:`fit_linear_head`."""

    weight: np.ndarray  # (n_classes, dim), for raw (un-scaled) features
    bias: np.ndarray  # (n_classes,)
    C: float
    cv_scores: dict[float, float] = field(default_factory=dict)  # C -> mean CV accuracy
    cv_losses: dict[float, float] = field(default_factory=dict)  # C -> mean CV log-loss
    seconds: float = 0.0
    oof_logits: np.ndarray | None = None  # held-out logits of the CV rows at the chosen C (calibration)
    oof_labels: np.ndarray | None = None
    oof_rows: np.ndarray | None = None  # which rows of X those are (large sets are subsampled)

    def logits(self, X: np.ndarray) -> np.ndarray:
        return X @ self.weight.T + self.bias


def _as_float32(X: np.ndarray) -> torch.Tensor:
    """``X`` as a float32 tensor; a column slice of a larger matrix stays a strided view (no copy before centring)."""
    X = np.asarray(X)
    return torch.from_numpy(X if X.dtype == np.float32 and all(st >= 0 for st in X.strides) else X.astype(np.float32))


def fit_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    C: float | None = None,
    cv: CVOptions = CVOptions(),
    class_weight: np.ndarray | None = None,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> LinearFit:
    """Fit a multinomial logistic-regression head, choosing C by cross-validation.

    Args:
        X: (n, dim) training features.
        y: (n,) integer labels.
        n_classes: number of classes (some may be absent from a CV fold).
        C: fixed inverse regularisation strength; None chooses it by cross-validation (``cv``).
        class_weight: per-class loss weights (e.g. :func:`class_weights_balanced`).
        cv: the grid of C, the folds and the subsample size of that choice.
        seed: fold assignment seed.
        groups: optional (n,) source-image ids: rows sharing an id (augmented views of
            one image) always fall in the same fold, so CV never scores a view of a
            training image.
    """
    y = np.asarray(y, dtype=np.int64)
    yt = torch.from_numpy(y)
    cw = torch.ones(n_classes) if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    return solve_logistic(X, Targets(yt, cw[yt], n_classes, y), C=C, cv=cv, seed=seed, groups=groups)


@dataclass(frozen=True)
class Targets:
    """What a logistic regression fits ``X`` to: labels, their loss weights, how many outputs, CV strata.

    ``y``: (n,) class indices, or a (n, labels) 0/1 float matrix (one binary regression per
    label); ``weight``: per row, or per (row, label); ``strata``: one integer per row the
    cross-validation folds are stratified by.
    """

    y: torch.Tensor
    weight: torch.Tensor
    n_outputs: int
    strata: np.ndarray


def solve_logistic(
    X: np.ndarray,
    targets: Targets,
    *,
    C: float | None = None,
    cv: CVOptions = CVOptions(),
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> LinearFit:
    """:func:`fit_linear_head`'s solve for any :class:`Targets`: centre, rotate, choose C, solve, fold back."""
    t0 = time.perf_counter()
    Xt = _as_float32(X)
    Z, mu, g = _centre(Xt)
    n, d = Z.shape
    threads = 1 if fits_on_one_thread(n, d) else torch.get_num_threads()

    with torch_threads(threads):
        problem, axes = _in_principal_axes(Z, targets.y, targets.weight, targets.n_outputs)
        del Z  # the rotated copy replaces it
        C, W, b, cv_result = _fit_at_C(problem, targets.strata, C, cv, (seed, groups))
        if problem.axes is None:
            W = W @ axes
    W_raw = W * g  # the scaling folded back: a plain linear layer on raw features
    b_raw = b - (W_raw * mu).sum(1)
    scores, losses, oof = cv_result
    oof_logits, oof_labels, oof_rows = oof if oof else (None, None, None)
    seconds = time.perf_counter() - t0
    return LinearFit(W_raw.numpy(), b_raw.numpy(), float(C), scores, losses, seconds, oof_logits, oof_labels, oof_rows)


def _in_principal_axes(Z: Rows, yt: torch.Tensor, sw: torch.Tensor, n_classes: int) -> tuple[Problem, torch.Tensor]:
    """The fit's problem in the principal axes of the centred rows ``Z``, and those axes.

    Rotate the features once (n r d) rather than the weights at every step (2 k r d per
    L-BFGS evaluation, thousands of them). Measured on 2 cores: sign_digits' feature choice
    and head (3,302 x 1,904 features) 30.4 -> 19.9 s. Rows too large to hold twice stay
    unrotated (``Problem.axes`` set) and the weights are rotated instead.
    """
    axes, var = _principal_axes(Z)
    if isinstance(Z, torch.Tensor):
        return Problem(Z @ axes.T, yt, sw, var, None, n_classes), axes
    return Problem(Z, yt, sw, var, axes, n_classes), axes


def _fit_at_C(
    problem: Problem, strata: np.ndarray, C: float | None, cv: CVOptions, split: tuple[int, np.ndarray | None]
) -> tuple[float, torch.Tensor, torch.Tensor, Any]:
    """Choose C by cross-validation (folds stratified by ``strata``) unless given (``split``: its seed and groups), then solve at it.

    Returns (C, W, b, (CV accuracies, CV losses, out-of-fold logits/labels/rows or None)).
    """
    scores: dict[float, float] = {}
    losses: dict[float, float] = {}
    oof: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if C is None:
        C, scores, losses, oof = _choose_C(problem, strata, cv, *split)
    W, b = _lbfgs_logreg(problem, float(C))
    return float(C), W, b, (scores, losses, oof)
