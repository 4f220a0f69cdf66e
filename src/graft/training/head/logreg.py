"""The linear probe's solver: L2-regularised multinomial logistic regression by L-BFGS on an analytic gradient.

It runs on centred features, materialised or centred on the fly in row chunks
(:class:`_Centred`), in the principal axes of the features (:func:`_principal_axes`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Union

import torch

_CHUNK_VALUES = 4_000_000  # values per on-the-fly chunk (16 MB)


class _Centred:
    """``(X - mu) * g`` without a copy of ``X``: row chunks are centred when a product needs them.

    Same arithmetic per element as the materialised matrix (centre, then multiply), so
    results agree with it to float32 summation order, not to a cancellation error.
    """

    def __init__(self, X: torch.Tensor, mu: torch.Tensor, g: float) -> None:
        self.X = X
        self.mu = mu
        self.g = g
        self.shape = X.shape
        self.step = max(1, _CHUNK_VALUES // max(int(X.shape[1]), 1))

    def chunks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        for i in range(0, int(self.shape[0]), self.step):
            sl = slice(i, i + self.step)
            yield sl, (self.X[sl] - self.mu).mul_(self.g)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return (self.X[torch.as_tensor(idx)] - self.mu).mul_(self.g)

    def __len__(self) -> int:
        return int(self.shape[0])


Rows = Union[torch.Tensor, _Centred]


def _addmm(b: torch.Tensor, R: Rows, M: torch.Tensor) -> torch.Tensor:
    """``b + R @ M``."""
    if isinstance(R, torch.Tensor):
        return torch.addmm(b, R, M)
    return torch.cat([torch.addmm(b, c, M) for _, c in R.chunks()])


def _t_matmul(P: torch.Tensor, R: Rows) -> torch.Tensor:
    """``P.T @ R``."""
    if isinstance(R, torch.Tensor):
        return P.T @ R
    out = torch.zeros(P.shape[1], int(R.shape[1]))
    for sl, c in R.chunks():
        out.addmm_(P[sl].T, c)
    return out


@dataclass(frozen=True)
class Problem:
    """One logistic-regression fit's data in the solver's basis.

    Attributes:
        R: the centred, scaled feature rows; ``axes`` None: already in the principal axes.
        y / sample_w: integer labels and per-row loss weights; or, multi-label, a (n, labels) 0/1
            float matrix and per-(row, label) weights (one binary logistic regression per label).
        var / axes: the features' variances along their principal axes, and those axes (r, d).
        n_classes: number of classes (some may be absent from ``y``).
    """

    R: Rows
    y: torch.Tensor
    sample_w: torch.Tensor
    var: torch.Tensor
    axes: torch.Tensor | None
    n_classes: int

    def rows(self, idx: Any) -> Problem:
        """The same problem on rows ``idx`` (a cross-validation fold)."""
        return replace(self, R=self.R[idx], y=self.y[idx], sample_w=self.sample_w[idx])


def _lbfgs_logreg(
    problem: Problem,
    C: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 300,
    gtol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise (C * sum_i w_i CE_i + 0.5 ||W||^2) / n: scikit-learn's objective, scaled.

    A 2-D ``problem.y`` (multi-label) replaces the softmax cross-entropy by the sum of the
    labels' binary cross-entropies (weights per row and label): one L2-regularised logistic
    regression per label, all solved together. Its Hessian's diagonal is also below var/4.

    The solver runs on ``U`` with ``W = (U * D) @ axes``: weights in the principal
    axes of the features (variances ``var``), diagonally preconditioned by
    ``D = (var/4 + reg)^-1/2``, an estimate of the Hessian's diagonal there. Same
    minimiser, far fewer iterations. ``axes=None``: ``R`` is already in that basis (the
    linear probe rotates a materialised matrix once); otherwise the (small) weights are
    rotated at each step, so a lazily centred matrix is never copied. Returns (W, b) in ``R``'s basis.
    """
    R = problem.R
    y = problem.y
    sample_w = problem.sample_w
    axes = problem.axes
    n, _ = R.shape
    d = len(problem.var)
    k = problem.n_classes
    scale = 1.0 / n
    reg = 1.0 / (C * n)
    D = (0.25 * problem.var + reg).rsqrt()
    if init is None:
        theta = torch.zeros(k * d + k)
    else:
        theta = torch.cat([((init[0] if axes is None else init[0] @ axes.T) / D).reshape(-1), init[1]])
    theta.requires_grad_(False)

    def closure() -> torch.Tensor:
        # Analytic loss and gradient: no autograd graph, a few matmuls per call.
        Wr = theta[: k * d].view(k, d) * D
        b = theta[k * d :]
        loss, P = _loss_and_dlogits(_addmm(b, R, (Wr if axes is None else Wr @ axes).T), y, sample_w)
        loss = loss * scale + 0.5 * reg * (Wr * Wr).sum()
        P.mul_(scale)
        G = _t_matmul(P, R)
        theta.grad = torch.cat([(((G if axes is None else G @ axes.T) + reg * Wr) * D).reshape(-1), P.sum(0)])
        return loss

    # torch's L-BFGS: SciPy's L-BFGS-B spent ~0.1 s per step on 12k variables.
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=gtol,
        tolerance_change=1e-10,
    )
    opt.step(closure)
    W = theta[: k * d].view(k, d) * D
    return (W if axes is None else W @ axes), theta[k * d :].clone()


def _loss_and_dlogits(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted loss summed over rows, its gradient in the logits ``z``): softmax CE, or BCE for a 2-D ``y``."""
    if y.dim() == 2:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=w, reduction="sum")
        return loss, torch.sigmoid(z).sub_(y).mul_(w)
    rows = torch.arange(len(y))
    logp = torch.log_softmax(z, 1)
    loss = -(logp[rows, y] * w).sum()
    P = logp.exp_()
    P[rows, y] -= 1.0
    return loss, P.mul_(w[:, None])


def _principal_axes(Z: Rows, max_rows: int = 8000) -> tuple[torch.Tensor, torch.Tensor]:
    """(axes (r, d), variances (r,)) of centred Z.

    Rotating is free for an L2 penalty. With fewer rows than dimensions the axes come
    from an SVD and directions without variance are dropped (exact: the optimum has
    no weight there), shrinking the problem to the row space. Otherwise all axes are
    kept and estimated on at most ``max_rows`` rows: they only precondition.
    """
    n, d = Z.shape
    if n < d and isinstance(Z, torch.Tensor):  # fewer rows than columns: always materialised
        _, S, Vh = torch.linalg.svd(Z, full_matrices=False)
        var = S * S / n
        keep = var > var[0].clamp_min(1e-30) * 1e-9
        return Vh[keep].contiguous(), var[keep]
    if n <= max_rows and isinstance(Z, torch.Tensor):
        sub = Z
    else:
        sub = Z[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_rows]]
    var, V = torch.linalg.eigh((sub.T @ sub) / len(sub))
    return V.T.flip(0).contiguous(), var.flip(0).clamp_min(0)
