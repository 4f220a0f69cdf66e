"""The ladder's held-out slice of the training images, and what is fitted without it.

The slice (:func:`held_out_slice`) chooses the rung and fits its temperature, so nothing a rung
learns from may come from it: the head rung is refitted without it (:func:`refit_head_without`),
and ``--unlabeled``'s pseudo-labels for the rungs are given by a head fitted without it
(:func:`pseudo_labelled`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graft import distributed
from graft.features.dataset import SplitFeatures
from graft.progress import NullProgress
from graft.training.finetune.options import TrainEnv
from graft.training.fit.ladder_io import LadderResult, LadderStart
from graft.training.fit.stage_two import calibration_split
from graft.training.fit.stages import HeadStage, fit_head_stage
from graft.training.fit.targets import loss_weights, mean_log_loss, targets_of

__all__ = ["held_out_slice", "held_rows", "pseudo_labelled", "refit_head_without"]


def held_out_slice(data: Any, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The usable training images, their labels, and the mask of the held-out slice (all False: too few)."""
    skipped = {Path(s.path) for s in data.skipped}
    records = [r for r in data.splits["train"] if r.path not in skipped]
    y = targets_of(records, len(data.classes), bool(getattr(data, "multi_label", False)))
    return [str(r.path) for r in records], y, calibration_split(y, seed=seed)


def refit_head_without(
    head_st: HeadStage,
    feats: SplitFeatures,
    paths: list[str],
    held: np.ndarray,
    classes: list[str],
    balanced: bool,
    seed: int,
    linear_fit: Any = None,
) -> tuple[HeadStage, float]:
    """Stage 1's head (same features, same C) refitted without the held-out images; its held-out loss.

    ``linear_fit``: that head already fitted (``--unlabeled``'s kept method, :func:`pseudo_labelled`).
    """
    out = held_rows(feats, paths, held)
    path_of = _path_of(feats)
    first = np.zeros(len(out), dtype=bool)
    first[: len(feats.paths)] = True

    def rows(mask: np.ndarray) -> SplitFeatures:
        keep = np.flatnonzero(mask)
        return SplitFeatures(
            feats.X[keep], feats.y[keep], feats.groups[keep], [path_of[int(g)] for g in feats.groups[keep]]
        )

    train = rows(~out)
    test = rows(out & first)
    cw = loss_weights(train.y, len(classes)) if balanced else None
    C = head_st.info.get("C")
    st = fit_head_stage(head_st.spec, train, test, classes, C=C, class_weight=cw, seed=seed, linear_fit=linear_fit)
    return st, mean_log_loss(test.y, st.val_probs)


def held_rows(feats: SplitFeatures, paths: list[str], held: np.ndarray) -> np.ndarray:
    """Which rows of ``feats`` (every augmented view) belong to the held-out images."""
    held_paths = {p for p, h in zip(paths, held) if h}
    path_of = _path_of(feats)
    return np.array([path_of.get(int(g)) in held_paths for g in feats.groups], dtype=bool)


def _path_of(feats: SplitFeatures) -> dict[int, str]:
    """Each image's file by its group id (view-0 rows come first, in ``feats.paths`` order)."""
    return dict(zip(feats.groups[: len(feats.paths)].tolist(), feats.paths))


def pseudo_labelled(
    start: LadderStart, slice_: tuple[list[str], np.ndarray], n_classes: int, env: TrainEnv, result: LadderResult
) -> tuple[Any, tuple[list[str], np.ndarray]]:
    """``--unlabeled`` in the ladder: (the head rung's fit or None, (paths, labels) the fine-tuning rungs add).

    Where stage 1 kept a method, it is fitted again on the training rows outside the held-out slice
    (by rank 0, for every process): that head is the head rung, and its pseudo-labels go to the
    rungs. What they took goes to ``result.unlabeled``. Without a kept method: (None, nothing).
    """
    if start.pool is None or start.feats is None or np.ndim(start.feats.y) == 2:
        return None, ([], np.zeros(0, np.int64))
    from graft.training.head.semi import pseudo_labels_for_rungs

    paths, held = slice_
    keep = ~held_rows(start.feats, paths, held)
    y = np.asarray(start.feats.y[keep], np.int64)
    cw = loss_weights(y, n_classes) if env.balanced else np.ones(n_classes, np.float32)
    lab = (start.feats.X[keep], y, np.asarray(cw, np.float32)[y])
    n_lab = int((~held).sum())
    fit, files, labels = distributed.on_rank_zero(pseudo_labels_for_rungs, start.pool, lab, n_classes, n_lab, env.seed)
    result.unlabeled = {"method": start.pool.method, "pseudo_labelled": len(files), "labelled": n_lab}
    prog = env.progress or NullProgress()
    prog.message(
        f"budget ladder: the fine-tuning rungs train on {n_lab} labelled and {len(files)} pseudo-labelled "
        f"images ({start.pool.method}, --unlabeled)"
    )
    return fit, (files, labels)
