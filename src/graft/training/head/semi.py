"""Using unlabelled images in the linear head fit, kept only where cross-validation on labelled images says so.

Two well-known ways to turn unlabelled features into training rows, both on the cached features:

* ``self_training``: the labelled-only head (temperature-scaled, so its probabilities are honest)
  labels each unlabelled image; those at or above :data:`CONFIDENCE` join the fit as pseudo-labelled
  rows, and the head refitted on them labels the pool again, up to :data:`ROUNDS` times (until
  its pseudo-labels stop changing). Each round's head is surer of the images near the ones it
  just learned, so the labels spread along a cluster a step at a time, as in Yarowsky (1995) and
  Lee (2013); one round took only the images the labelled-only head was already sure of, which
  moves it little (bench/active_learning.py at 10% labels, validation gain of the method kept
  regardless, mean of 3 seeds: sign_digits +1.2 -> +3.1, hymenoptera +1.5 -> +1.8).
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
from those other folds only, over :data:`REPEATS` different partitions into folds. A method is
kept only when its mean gain over labelled-only beats one standard error (the rule graft's C
choice uses) of the gains per labelled image, each averaged over the partitions: where it does not
clearly help, the head is the labelled-only head. Why per image over several partitions, not per
fold of one: five per-fold gains give a standard error that is itself a guess from five numbers
(hymenoptera at 10% labels: 0.0 on one seed's 24 images, 5.0 on another's), and one partition's
luck moves the gain by as much as the gains being measured; averaging partitions removes that
part of the noise and leaves the part that the labelled images themselves carry. The per-image
error is the looser of the two (images scored by one fold's head are not independent, and no
unbiased estimate exists: Bengio & Grandvalet 2004); what that costs was measured, not assumed
(RESULTS.md: worst mean loss 0.4 points, at 5% labels). The price is time: 15 folds of up to
five fits each, where one partition and one round had 15 (sign_digits at 10% labels, one thread:
11 s -> 89 s); so the folds label at most :data:`CV_POOL` unlabelled images and cross-validate on
at most :data:`CV_LABELLED` labelled ones (a seeded sample, as the choice of C does: 10,000
labelled images of 100 classes with 20,000 unlabelled took the guard 426 s on 2 cores without it).
Validation images are never read.

With a budget, the ladder (:mod:`graft.training.fit.ladder_slice`) fits the kept method again
without its held-out slice (:func:`pseudo_labels_for_rungs`): that head is its head rung, and a
sample of its pseudo-labelled images joins the fine-tuning rungs' training images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from graft.training.head.calibration import fit_temperature
from graft.training.head.cross_validation import CVOptions
from graft.training.head.linear_probe import LinearFit, Targets, solve_logistic

__all__ = [
    "CONFIDENCE",
    "CV_LABELLED",
    "CV_POOL",
    "FOLDS",
    "METHODS",
    "REPEATS",
    "ROUNDS",
    "SPREAD_ALPHA",
    "SPREAD_POOL",
    "PseudoSource",
    "SemiFit",
    "fit_with_unlabeled",
    "pseudo_labels",
    "pseudo_labels_for_rungs",
]

METHODS = ("self_training", "label_spreading")
CONFIDENCE = 0.9  # calibrated probability (or spread label mass) a pseudo-label needs
FOLDS = 5
REPEATS = 3  # partitions into FOLDS folds the guard averages over
ROUNDS = 3  # self-training: label, refit, label again, at most this many times
CV_POOL = 5000  # unlabelled images the guard's folds label (a seeded sample of larger pools)
CV_LABELLED = CVOptions().max_samples  # labelled images the guard cross-validates on, as the choice of C
SPREAD_ALPHA = 0.99  # label spreading: how far labels travel along the graph (Zhou et al. 2004)
# label spreading: unlabelled images on its graph (a seeded sample of larger pools). Finding the
# neighbours costs the square of the images: 20,000 took 31 s, 100,000 took 11 min (1,280-d, one
# thread); the images it labels weigh together at most as much as the labels, so more of them add little.
SPREAD_POOL = 20_000
_NEIGHBOURS = 10


@dataclass
class SemiFit:
    """The head to keep (``fit``) and the record of how it was chosen (``info``, for metrics.json).

    ``temperature``: the labelled-only head's, which the pseudo-labels' confidence is read with.
    """

    fit: LinearFit
    info: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0


@dataclass
class PseudoSource:
    """What the budget ladder's rungs need to pseudo-label the unlabelled images (a kept method only).

    ``X``: the unlabelled features (the head's columns), ``paths`` their files, ``method`` the one
    cross-validation kept, ``C`` and ``temperature`` the labelled-only head's.
    """

    X: np.ndarray
    paths: list[str]
    method: str
    C: float
    temperature: float


def _unit(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    Z = np.asarray(X, np.float32) - mean
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def pseudo_labels(
    method: str,
    base: LinearFit,
    T: float,
    lab: tuple[np.ndarray, np.ndarray],
    X_u: np.ndarray,
    n_classes: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows of ``X_u`` that get a label, their labels) by ``method``, from the labelled rows ``lab`` = (X, y).

    Label spreading works on a seeded sample of :data:`SPREAD_POOL` rows of a larger ``X_u``.
    """
    rows = np.arange(len(X_u))
    if method == "self_training":
        z = base.logits(X_u) / T
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
    else:
        if len(X_u) > SPREAD_POOL:
            rows = np.sort(np.random.default_rng(seed).choice(len(X_u), SPREAD_POOL, replace=False))
        p = _spread(lab, X_u[rows], n_classes)
    keep = np.flatnonzero(p.max(1) >= CONFIDENCE)
    return rows[keep], p[keep].argmax(1)


def _spread(lab: tuple[np.ndarray, np.ndarray], X_u: np.ndarray, n_classes: int) -> np.ndarray:
    """Label spreading's class distribution for each row of ``X_u`` (the labelled rows ``lab`` on the same graph)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading
    from threadpoolctl import threadpool_limits

    X_l, y_l = lab
    mean = np.concatenate([X_l, X_u]).mean(0).astype(np.float32)
    Z = np.concatenate([_unit(X_l, mean), _unit(X_u, mean)])
    y = np.concatenate([y_l, np.full(len(X_u), -1)])
    k = min(_NEIGHBOURS, len(Z) - 1)
    with threadpool_limits(1), warnings.catch_warnings():  # threads: 6.7 s -> 0.7 s (1,600 rows, busy machine)
        # error shrinks as alpha^iterations: 1,000 iterations at 0.99 leave 4e-5 (sparse products: fast).
        # scikit-learn's stop asks the change summed over every row and class to be under 1e-3, which a
        # large pool never meets: its warning would only say that the 1,000 ran.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        ls = LabelSpreading(kernel="knn", n_neighbors=k, alpha=SPREAD_ALPHA, max_iter=1000).fit(Z, y)
    dist = np.zeros((len(Z), n_classes))
    dist[:, ls.classes_[ls.classes_ >= 0]] = ls.label_distributions_
    return dist[len(X_l) :]


def _solve(X: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int, C: float, seed: int) -> LinearFit:
    yt = torch.from_numpy(np.asarray(y, np.int64))
    return solve_logistic(X, Targets(yt, torch.from_numpy(w.astype(np.float32)), n_classes, y), C=C, seed=seed)


def _fit_method(
    method: str,
    lab: tuple[np.ndarray, np.ndarray, np.ndarray],
    X_u: np.ndarray,
    base: LinearFit,
    ctx: tuple[int, float, float, int],
) -> tuple[LinearFit, int, tuple[np.ndarray, np.ndarray] | None]:
    """(the head fitted on the labelled rows ``lab`` = (X, y, weights) plus ``method``'s pseudo-labelled rows,
    how many, and those (rows of ``X_u``, labels); None where none was sure enough)."""
    n_classes, C, T, seed = ctx
    X, y, w = lab
    fit, used, last = base, 0, None
    for _ in range(ROUNDS if method == "self_training" else 1):
        rows, labels = pseudo_labels(method, fit, T, (X, y), X_u, n_classes, seed)
        if len(rows) == 0 or (last is not None and np.array_equal(rows, last[0]) and np.array_equal(labels, last[1])):
            break  # nothing sure enough, or the same labels as the head that gave them: a fixed point
        pw = np.full(len(rows), min(1.0, len(X) / len(rows)), np.float32) * float(w.mean())
        fit = _solve(
            np.concatenate([X, X_u[rows]]), np.concatenate([y, labels]), np.concatenate([w, pw]), n_classes, C, seed
        )
        used, last = len(rows), (rows, labels)
    return fit, used, last


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
    first = np.unique(groups, return_index=True)[1]
    k = int(min(FOLDS, np.bincount(y[first], minlength=n_classes)[np.unique(y)].min()))
    info: dict[str, Any] = {"images": int(len(X_u)), "confidence": CONFIDENCE, "C": base.C, "folds": k}
    if k < 2 or len(X_u) == 0:
        why = (
            "no unlabelled image left to use"
            if len(X_u) == 0
            else "too few labelled images per class to cross-validate"
        )
        return SemiFit(base, {**info, "method": "none", "why": why}, T)
    info["repeats"] = REPEATS
    pool = X_u
    if len(pool) > CV_POOL:  # the guard's cost stays bounded; the head kept is still fitted on every image
        pool = X_u[np.sort(np.random.default_rng(seed).choice(len(X_u), CV_POOL, replace=False))]
    checked = _checked_rows(groups, seed)
    if len(checked[0]) < len(y):
        info["labelled_checked"] = CV_LABELLED
    right, held_out = _cross_validate((X, y, w, groups), pool, checked, k, ctx)
    return _choose((right, held_out, checked[0]), (X, y, w), X_u, base, ctx, info)


def _checked_rows(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows the guard checks, their images' ids, each image's first row): every row, or as the choice of C does
    on large sets, the rows of a seeded sample of :data:`CV_LABELLED` images (views of an image stay together)."""
    img, first = np.unique(groups, return_index=True)
    if len(img) <= CV_LABELLED:
        return np.arange(len(groups)), img, first
    sample = img[np.random.default_rng(seed).choice(len(img), CV_LABELLED, replace=False)]
    rows = np.flatnonzero(np.isin(groups, sample))
    img, first = np.unique(groups[rows], return_index=True)
    return rows, img, rows[first]


def _cross_validate(
    lab: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    pool: np.ndarray,
    checked: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
    ctx: tuple[int, float, float, int],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(right, held_out) of :func:`_choose`: each checked image's held-out accuracy under every method, per
    partition into ``k`` folds, and the first partition's held-out logits of the checked rows."""
    X, y, w, groups = lab
    n_classes, C, _, seed = ctx
    rows, img, first = checked
    row_img = np.full(len(y), -1)
    row_img[rows] = np.searchsorted(img, groups[rows])  # each checked row's image, 0..len(img)-1
    right = {m: np.zeros((REPEATS, len(img))) for m in ("none", *METHODS)}
    held_out = {m: np.zeros((len(rows), n_classes), np.float32) for m in METHODS}
    for r in range(REPEATS):
        for te_img in _folds(y[first], k, seed + r):
            te = np.isin(row_img, te_img)
            tr = (row_img >= 0) & ~te
            fold_base = _solve(X[tr], y[tr], w[tr], n_classes, C, seed)
            fits = {"none": fold_base}
            for m in METHODS:
                fits[m] = _fit_method(m, (X[tr], y[tr], w[tr]), pool, fold_base, ctx)[0]
            views = np.bincount(row_img[te], minlength=len(img))[te_img]
            for m, fit in fits.items():
                z = fit.logits(X[te])
                if r == 0 and m != "none":
                    held_out[m][te[rows]] = z
                ok = (z.argmax(1) == y[te]).astype(np.float64)
                right[m][r, te_img] = np.bincount(row_img[te], weights=ok, minlength=len(img))[te_img] / views
    return right, held_out


def pseudo_labels_for_rungs(
    source: PseudoSource, lab: tuple[np.ndarray, np.ndarray, np.ndarray], n_classes: int, limit: int, seed: int = 0
) -> tuple[LinearFit, list[str], np.ndarray]:
    """The kept method's head on ``lab``, and (files, labels) of at most ``limit`` unlabelled images for the rungs.

    ``lab`` = (X, y, weights): the labelled rows outside the budget ladder's held-out slice, so that
    no held-out label becomes a rung's training target through a pseudo-label (the slice chooses
    the rung and fits its temperature); ``C`` and the temperature are stage 1's, chosen on every
    training image, as the head rung's C always was. The kept method labels the pool from those rows as it did for the head; the head
    it refits is the ladder's head rung, scored on the slice like the head stage 1 keeps. Where it
    labels more than ``limit`` (the number of labelled training images), a seeded sample of
    ``limit`` is taken: the pseudo-labelled images then weigh together at most as much as the
    labelled ones, the head's rule, and an epoch costs at most twice a labelled-only one.
    """
    X, y, w = lab
    base = _solve(X, y, w, n_classes, source.C, seed)
    ctx = (n_classes, source.C, source.temperature, seed)
    fit, _, last = _fit_method(source.method, lab, source.X, base, ctx)
    if last is None or limit < 1:
        return fit, [], np.zeros(0, np.int64)
    rows, labels = last
    if len(rows) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        rows, labels = rows[pick], labels[pick]
    return fit, [source.paths[int(i)] for i in rows], np.asarray(labels, np.int64)


def _choose(
    cv: tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray],
    lab: tuple[np.ndarray, np.ndarray, np.ndarray],
    X_u: np.ndarray,
    base: LinearFit,
    ctx: tuple[int, float, float, int],
    info: dict[str, Any],
) -> SemiFit:
    """The best method if its gain over labelled-only beats one standard error of the per-image gains; else labelled-only.

    ``cv`` = (right, held_out, rows): ``right[m]`` is the (repeats, labelled images checked)
    held-out accuracy of each image under method ``m`` (the share of its views right), one row per
    partition into folds; ``held_out[m]`` the first partition's held-out logits of the labelled
    ``rows`` checked (every row, or those of :data:`CV_LABELLED` images). The head kept is
    temperature-scaled on its own method's held-out logits, not the labelled-only head's: fitted on
    many confident pseudo-labels, its logits need not have that head's scale (five kept heads at 10%
    labels: mean validation log-loss 0.565 -> 0.506).
    """
    right, held_out, rows = cv
    T = ctx[2]
    gains = {m: (right[m] - right["none"]).mean(0) for m in METHODS}  # per image, over the partitions
    best = max(METHODS, key=lambda m: (gains[m].mean(), m))
    g = gains[best]
    se = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("inf")
    info["cv_accuracy"] = {m: round(float(a.mean()), 4) for m, a in right.items()}
    info["kept_if_gain_over"] = round(se, 4)
    if g.mean() <= 0 or g.mean() <= se:
        return SemiFit(base, {**info, "method": "none", "why": f"cross-validation: {best} did not clearly help"}, T)
    fit, used, _ = _fit_method(best, lab, X_u, base, ctx)
    if used == 0:  # nothing sure enough on the whole pool: the labelled-only head, its calibration untouched
        return SemiFit(base, {**info, "method": "none", "why": f"{best}: no unlabelled image was sure enough"}, T)
    fit.oof_logits, fit.oof_labels, fit.oof_rows = held_out[best], lab[1][rows], rows
    if best == "label_spreading" and len(X_u) > SPREAD_POOL:
        info["spread_sample"] = SPREAD_POOL  # the graph held a seeded sample of the pool
    return SemiFit(fit, {**info, "method": best, "pseudo_labelled": used}, T)
