"""Stage 2 as a pure function: fine-tune, keep the result only where it pays, refit the OOD score."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from graft.metrics import compute_metrics
from graft.progress import NullProgress, Progress
from graft.training.finetune import FineTuneConfig, FitResult, train_network
from graft.training.head_fit import class_weights_balanced
from graft.training.heads import GraftNet, HeadSpec
from graft.training.ood import OODFit
from graft.training.policy import FineTunePolicy
from graft.training.stages import SplitFeatures, fit_ood_stage, ood_info
from graft.transforms.eval import Preprocessing

__all__ = ["FineTuneStage", "fine_tune_stage"]


@dataclass
class FineTuneStage:
    """Result of :func:`fine_tune_stage`: what fine-tuning reached, and whether it was kept."""

    kept: bool
    fit: FitResult
    metrics: dict[str, Any]
    val_probs: np.ndarray
    summary: dict[str, Any]
    ood: dict[str, Any] | None = None  # the refitted ``ood`` section, None when unchanged


def fine_tune_stage(
    net: GraftNet,
    data: Any,
    val: tuple[Sequence[str], np.ndarray],
    before: tuple[dict[str, Any], np.ndarray],
    *,
    score: Callable[[nn.Module], np.ndarray],
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    policy: FineTunePolicy,
    device: str = "cpu",
    precision: str = "auto",
    num_workers: int | None = None,
    balanced: bool = False,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> FineTuneStage:
    """Fine-tune ``net`` in place on ``data``'s train split; keep the result only if it is at least as accurate.

    The keep/rollback rule lives here alone: below stage 1, ``net`` gets its previous
    weights back and the stage-1 metrics stay. ``score(net)`` gives validation
    probabilities through the prediction path the model will be used with.

    Args:
        data: the :class:`~graft.data.records.DatasetSplits` of the fit (files skipped there are left out).
        val: (paths, labels) of the validation images the stage-1 metrics came from.
        before: (metrics, validation probabilities) of the model before fine-tuning.
        balanced: weight the loss by inverse class frequency.
    """
    from graft.features.embedder import choose_precision, default_num_workers
    from graft.transforms.train import build_train_transform

    prog = progress or NullProgress()
    resolved = choose_precision(precision, device)  # validates
    # auto: train_network measures which precision trains fastest here (and agrees with fp32).
    train_precision = "auto" if str(precision or "auto").lower() == "auto" else resolved
    skipped = {Path(s.path) for s in data.skipped}
    train = [r for r in data.splits["train"] if r.path not in skipped]
    y = np.array([r.label for r in train])
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    backbone: nn.Module = net.backbone
    res = train_network(
        net,
        backbone,
        [str(r.path) for r in train],
        y,
        list(val[0]),
        val[1],
        train_transform=build_train_transform(preprocessing, strength=config.augment),
        eval_transform=preprocessing,
        policy=policy,
        config=config,
        device=device,
        precision=train_precision,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        class_weight=class_weights_balanced(y, len(data.classes)) if balanced else None,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        resume=resume,
        seed=seed,
        progress=prog,
    )
    probs = score(net)
    metrics = compute_metrics(np.asarray(val[1]), probs, list(data.classes))
    embedding = {"device": device, "precision": precision, "num_workers": num_workers}
    return _keep_or_roll_back(
        net, saved, res, (metrics, probs), before, policy, ([str(r.path) for r in train], y), preprocessing,
        embedding, seed=seed, progress=prog,
    )  # fmt: skip


def _keep_or_roll_back(
    net: GraftNet, saved: dict[str, Any], res: FitResult, after: tuple[dict[str, Any], np.ndarray],
    before: tuple[dict[str, Any], np.ndarray], policy: FineTunePolicy, train: tuple[list[str], np.ndarray],
    preprocessing: Preprocessing, embedding: dict[str, Any], *, seed: int, progress: Progress,
) -> FineTuneStage:  # fmt: skip
    """The one keep/rollback rule: at least as accurate as stage 1, or stage 1's weights come back."""
    metrics, probs = after
    kept = metrics["accuracy"] >= before[0]["accuracy"]
    summary = {
        "val_accuracy": metrics["accuracy"], "seconds": res.seconds, "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early, "unfrozen_groups": policy.unfrozen_groups, "kept": kept,
    }  # fmt: skip
    ood: dict[str, Any] | None = None  # None: unchanged
    if not kept:
        progress.warn(
            f"fine-tuning reached val accuracy {metrics['accuracy']:.4f}, below stage 1 "
            f"({before[0]['accuracy']:.4f}); keeping the stage-1 model"
        )
        net.load_state_dict(saved)
        metrics, probs = before
    elif net.ood is not None:
        # The stage-1 statistics describe the frozen backbone's features, not the new ones.
        fit = _refit_ood(net, train[0], train[1], preprocessing, seed=seed, progress=progress, **embedding)
        net.ood = fit.scorer if fit is not None else None
        ood = ood_info(fit)
    return FineTuneStage(kept, res, metrics, probs, summary, ood)


def _refit_ood(
    net: GraftNet, paths: list[str], y: np.ndarray, preprocessing: Preprocessing, *, seed: int,
    progress: Progress, **embedding: Any,
) -> OODFit | None:  # fmt: skip
    """The OOD score refitted on the fine-tuned backbone's features of the training images."""
    from graft.features.extract import model_features

    task = progress.task("OOD statistics (fine-tuned features)", total=len(paths))
    spatial = bool(getattr(net, "spatial", False))
    fs = model_features(net.backbone, preprocessing, paths, spatial=spatial, progress=task.advance, **embedding)
    task.close()
    feats = SplitFeatures(fs.X, y[fs.ok], fs.ok, [paths[i] for i in fs.ok])
    head: Any = net.head
    return fit_ood_stage(HeadSpec("linear", fs.X.shape[1], int(head[-1].out_features)), feats, seed=seed)
