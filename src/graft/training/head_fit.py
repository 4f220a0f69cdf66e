"""Training a head on cached features: seconds, not minutes.

The linear head is a multinomial logistic regression fitted full-batch with L-BFGS
on standardised features; its L2 strength is chosen by stratified k-fold
cross-validation on the training features (cheap: no images are touched). The
standardisation is folded back into the weights, so the saved head is a plain
``Linear`` on raw backbone features. MLP and flatten heads train with AdamW and
early stopping on the validation features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "LinearFit",
    "fit_linear_head",
    "fit_sgd_head",
    "class_weights_balanced",
    "DEFAULT_C_GRID",
]

#: Inverse regularisation strengths tried by cross-validation (scikit-learn's C).
DEFAULT_C_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def class_weights_balanced(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return (len(y) / (n_classes * counts)).astype(np.float32)


def _lbfgs_logreg(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    C: float,
    sample_w: torch.Tensor,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise C * sum_i w_i CE_i + 0.5 ||W||^2 (scikit-learn's objective), scaled by 1/n."""
    n, d = X.shape
    W = torch.zeros(n_classes, d, dtype=X.dtype) if init is None else init[0].clone()
    b = torch.zeros(n_classes, dtype=X.dtype) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9,
    )
    reg = 0.5 / (C * n)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.cross_entropy(X @ W.T + b, y, reduction="none") * sample_w).sum() / n
        loss = loss + reg * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.array(sorted(f), dtype=np.int64) for f in folds]


@dataclass
class LinearFit:
    """Result of :func:`fit_linear_head`."""

    weight: np.ndarray  # (n_classes, dim), for raw (un-standardised) features
    bias: np.ndarray  # (n_classes,)
    C: float
    cv_scores: dict[float, float] = field(default_factory=dict)  # C -> mean CV accuracy
    cv_losses: dict[float, float] = field(default_factory=dict)  # C -> mean CV log-loss
    seconds: float = 0.0

    def logits(self, X: np.ndarray) -> np.ndarray:
        return X @ self.weight.T + self.bias


def fit_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    C: float | None = None,
    C_grid: Sequence[float] = DEFAULT_C_GRID,
    class_weight: np.ndarray | None = None,
    cv_folds: int = 5,
    max_cv_samples: int = 20000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> LinearFit:
    """Fit a multinomial logistic-regression head, choosing C by cross-validation.

    Args:
        X: (n, dim) training features.
        y: (n,) integer labels.
        n_classes: number of classes (some may be absent from a CV fold).
        C: fixed inverse regularisation strength; None chooses it from ``C_grid``.
        class_weight: per-class loss weights (e.g. :func:`class_weights_balanced`).
        cv_folds: folds for choosing C (fewer when a class has fewer samples).
        max_cv_samples: CV runs on a stratified subsample this large (big datasets).
        seed: fold assignment seed.
        groups: optional (n,) source-image ids: rows sharing an id (augmented views of
            one image) always fall in the same fold, so CV never scores a view of a
            training image.
    """
    t0 = time.perf_counter()
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    mu = Xt.mean(0)
    sd = Xt.std(0).clamp_min(1e-6)
    Z = (Xt - mu) / sd
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    cw = torch.ones(n_classes) if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    sw = cw[yt]

    scores: dict[float, float] = {}
    losses: dict[float, float] = {}
    if C is None:
        min_count = int(np.bincount(y, minlength=n_classes)[np.bincount(y, minlength=n_classes) > 0].min())
        k = max(2, min(cv_folds, min_count))
        gid = np.arange(len(y)) if groups is None else np.asarray(groups)
        # Folds are drawn over source images, stratified by their label.
        uniq, first, inv = np.unique(gid, return_index=True, return_inverse=True)
        sel = np.arange(len(uniq))
        if len(uniq) > max_cv_samples:
            sel = np.sort(np.random.default_rng(seed).choice(len(uniq), max_cv_samples, replace=False))
        fold_u = np.full(len(uniq), -1)
        for f, members in enumerate(_stratified_folds(y[first[sel]], k, seed)):
            fold_u[sel[members]] = f
        fold_of = fold_u[inv]
        correct = {c: 0.0 for c in C_grid}
        nll = {c: 0.0 for c in C_grid}
        total = 0
        for f in range(k):
            te = np.flatnonzero(fold_of == f)
            tr = np.flatnonzero((fold_of != f) & (fold_of >= 0))
            if not len(te) or not len(tr):
                continue
            init = None
            # Warm-start along the path from strong to weak regularisation.
            for c in sorted(C_grid):
                init = _lbfgs_logreg(Z[tr], yt[tr], n_classes, c, sw[tr], init=init, max_iter=100)
                logits = Z[te] @ init[0].T + init[1]
                correct[c] += float((logits.argmax(1) == yt[te]).float().sum())
                nll[c] += float(F.cross_entropy(logits, yt[te], reduction="sum"))
            total += len(te)
        scores = {c: correct[c] / max(total, 1) for c in C_grid}
        losses = {c: nll[c] / max(total, 1) for c in C_grid}
        # Held-out log-loss picks C: unlike accuracy it has no ties, and it rewards
        # calibrated probabilities (what reports and thresholds rely on).
        C = min(C_grid, key=lambda c: (losses[c], -scores[c]))

    W, b = _lbfgs_logreg(Z, yt, n_classes, float(C), sw)
    W_raw = W / sd
    b_raw = b - (W_raw * mu).sum(1)
    return LinearFit(W_raw.numpy(), b_raw.numpy(), float(C), scores, losses, time.perf_counter() - t0)


def fit_sgd_head(
    head: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    patience: int = 10,
    class_weight: np.ndarray | None = None,
    seed: int = 0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``head`` on features with AdamW; early stopping on validation loss.

    The best weights (lowest validation loss) are restored in place.

    Returns:
        One dict per epoch: epoch, train_loss, train_acc, val_loss, val_acc, best.
    """
    g = torch.Generator().manual_seed(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    Xv = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32))
    yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64))
    cw = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, math.ceil(len(yt) / batch_size)) * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best_loss, best_state, bad_epochs = math.inf, None, 0
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(yt), generator=g)
        tot_loss, tot_ok = 0.0, 0
        for i in range(0, len(yt), batch_size):
            idx = perm[i : i + batch_size]
            logits = head(Xt[idx])
            loss = F.cross_entropy(logits, yt[idx], weight=cw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss) * len(idx)
            tot_ok += int((logits.argmax(1) == yt[idx]).sum())
        head.eval()
        with torch.no_grad():
            lv = head(Xv)
            val_loss = float(F.cross_entropy(lv, yv, weight=cw)) if len(yv) else math.nan
            val_acc = float((lv.argmax(1) == yv).float().mean()) if len(yv) else math.nan
        rec = {
            "epoch": epoch,
            "train_loss": tot_loss / len(yt),
            "train_acc": tot_ok / len(yt),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best": False,
        }
        if val_loss < best_loss - 1e-6:
            best_loss, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            rec["best"] = True
        else:
            bad_epochs += 1
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        if bad_epochs >= patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return history
