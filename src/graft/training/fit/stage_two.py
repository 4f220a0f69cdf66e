"""Stage 2 as a pure function: fine-tune, keep the result only where it pays, recalibrate, refit the OOD score.

A fine-tuned network's confidence is no longer the linear head's, whose temperature came
from cross-validation on frozen features. So a small stratified slice of the training
images (:func:`calibration_split`) is held out of fine-tuning, and the new temperature is
fitted on the fine-tuned network's logits for it: held-out data, never the validation
split, so the reported validation ECE stays an honest measurement.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.features.dataset import SplitFeatures
from graft.metrics import compute_metrics, expected_calibration_error
from graft.network import GraftNet, HeadSpec
from graft.progress import NullProgress, Progress
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FitResult, train_network
from graft.training.fit.stages import fit_ood_stage, ood_info
from graft.training.fit.targets import fit_calibration, loss_weights, rescale_sigmoid, targets_of
from graft.training.fit.targets import score as score_metrics
from graft.training.head.ood import OODFit
from graft.transforms.eval import Preprocessing

__all__ = [
    "CALIBRATION_FRACTION",
    "FineTuneStage",
    "calibration_split",
    "fine_tune_stage",
    "refit_after_fine_tune",
    "rescale_probs",
]

#: Share of the training images held out of fine-tuning to fit the new temperature on.
#: 10% (at least 2 per class) costs little training data and gives a few hundred
#: held-out logits on mid-sized datasets, enough for one parameter.
CALIBRATION_FRACTION = 0.1
#: Below this many held-out images no temperature is fitted (as :func:`fit_temperature` requires).
_MIN_CALIBRATION = 10


@dataclass
class FineTuneStage:
    """Result of :func:`fine_tune_stage`: what fine-tuning reached, and whether it was kept."""

    kept: bool
    fit: FitResult
    metrics: dict[str, Any]
    val_probs: np.ndarray
    summary: dict[str, Any]
    ood: dict[str, Any] | None = None  # the refitted ``ood`` section, None when unchanged
    temperature: Any = None  # fitted on the held-out slice of train (multi-label: one per label); None: not refitted
    policy: FineTunePolicy | None = None  # what was unfrozen
    thresholds: tuple[float, ...] = ()  # multi-label: refitted with the temperatures (empty: unchanged)


def calibration_split(labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Boolean mask of the training images held out of fine-tuning for calibration (all False if too few).

    Stratified, seeded (a resumed run holds out the same images), at least 2 per class.
    Multi-label (a 0/1 matrix): stratified by each image's rarest label.
    """
    from sklearn.model_selection import train_test_split

    from graft.training.head.cross_validation import label_strata

    y = _merged_small(label_strata(labels)) if np.ndim(labels) == 2 else np.asarray(labels)
    mask = np.zeros(len(y), dtype=bool)
    _, counts = np.unique(y, return_counts=True)
    n_hold = max(int(round(CALIBRATION_FRACTION * len(y))), 2 * len(counts))
    if n_hold < _MIN_CALIBRATION or counts.min() < 5 or n_hold > len(y) // 4:
        return mask
    _, held = train_test_split(np.arange(len(y)), test_size=n_hold, stratify=y, random_state=seed)
    mask[held] = True
    return mask


def _merged_small(strata: np.ndarray, least: int = 5) -> np.ndarray:
    """Multi-label strata with fewer than ``least`` images merged into one (or into the largest): a
    stratum is a rarest label, not a class, so a few tiny ones must not cancel the held-out slice."""
    values, counts = np.unique(strata, return_counts=True)
    small = values[counts < least]
    if not len(small):
        return strata
    out = strata.copy()
    merged = int(values.max()) + 1 if counts[counts < least].sum() >= least else int(values[counts.argmax()])
    out[np.isin(strata, small)] = merged
    return out


def fine_tune_stage(
    net: GraftNet,
    data: Any,
    val: tuple[Sequence[str], np.ndarray],
    before: tuple[dict[str, Any], np.ndarray],
    *,
    score: Callable[[nn.Module], np.ndarray],
    preprocessing: Preprocessing,
    config: FineTuneConfig,
    env: TrainEnv,
) -> FineTuneStage:
    """Fine-tune ``net`` in place on ``data``'s train split; keep the result only if it is at least as accurate.

    The keep/rollback rule lives here alone: below stage 1, ``net`` gets its previous
    weights back and the stage-1 metrics stay. ``score(net)`` gives validation
    probabilities through the prediction path the model will be used with.

    Args:
        data: the :class:`~graft.data.records.DatasetSplits` of the fit (files skipped there are left out).
        val: (paths, labels) of the validation images the stage-1 metrics came from.
        before: (metrics, validation probabilities) of the model before fine-tuning.
        config: what to train (its :meth:`~FineTuneConfig.policy` decides which layers).
        env: where and how (``balanced`` weights the loss by inverse class frequency).
    """
    from graft.transforms.train import build_train_transform

    prog = env.progress or NullProgress()
    skipped = {Path(s.path) for s in data.skipped}
    train = [r for r in data.splits["train"] if r.path not in skipped]
    y = targets_of(train, len(data.classes), bool(getattr(data, "multi_label", False)))
    held = calibration_split(y, seed=env.seed)
    saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
    policy = config.policy()
    res = train_network(
        net,
        net.backbone,
        ([str(r.path) for r, h in zip(train, held) if not h], y[~held]),
        (list(val[0]), val[1]),
        transforms=(
            build_train_transform(config.train_preprocessing(preprocessing), strength=config.augment),
            preprocessing,
        ),
        config=config,
        policy=policy,
        env=_run_env(env, y[~held], len(data.classes), prog),
    )
    probs = distributed.on_rank_zero(score, net)  # scored once; every rank then takes the same keep/rollback
    metrics = score_metrics(np.asarray(val[1]), probs, list(data.classes), before[0].get("thresholds", ()))
    outcome = _Outcome(res, (metrics, probs), before, policy, saved)
    return _keep_or_roll_back(
        net,
        outcome,
        ([str(r.path) for r in train], y, held),
        preprocessing,
        dataclasses.replace(env, progress=prog),
        classes=list(data.classes),
        val_labels=np.asarray(val[1]),
    )


def _run_env(env: TrainEnv, train_labels: np.ndarray, num_classes: int, progress: Progress) -> TrainEnv:
    """``env`` as the fine-tuning loop runs it: precision and workers resolved, class weights set."""
    from graft.features.embedder import choose_precision, default_num_workers

    resolved = choose_precision(env.precision, env.device)  # validates
    # auto: train_network measures which precision trains fastest here (and agrees with fp32).
    train_precision = "auto" if str(env.precision or "auto").lower() == "auto" else resolved
    return dataclasses.replace(
        env,
        precision=train_precision,
        num_workers=default_num_workers() if env.num_workers is None else env.num_workers,
        class_weight=loss_weights(train_labels, num_classes) if env.balanced else None,
        progress=progress,
    )


@dataclass
class _Outcome:
    """What fine-tuning produced, and what the keep/rollback rule weighs it against.

    ``after`` and ``before``: (validation metrics, validation probabilities) of the fine-tuned
    and of the stage-1 model; ``saved``: the stage-1 weights.
    """

    res: FitResult
    after: tuple[dict[str, Any], np.ndarray]
    before: tuple[dict[str, Any], np.ndarray]
    policy: FineTunePolicy
    saved: dict[str, Any]


def _keep_or_roll_back(
    net: GraftNet,
    outcome: _Outcome,
    train: tuple[list[str], np.ndarray, np.ndarray],
    preprocessing: Preprocessing,
    env: TrainEnv,
    *,
    classes: list[str],
    val_labels: np.ndarray,
) -> FineTuneStage:
    """The one keep/rollback rule: at least as accurate as stage 1, or stage 1's weights come back.

    A kept network is then recalibrated on the held-out slice of train (``train``: paths,
    labels, held-out mask) and its OOD score refitted, embedding as ``env`` says.
    """
    res = outcome.res
    policy = outcome.policy
    before = outcome.before
    metrics, probs = outcome.after
    kept = metrics["accuracy"] >= before[0]["accuracy"]
    progress = env.progress or NullProgress()
    summary = {
        "val_accuracy": metrics["accuracy"],
        "seconds": res.seconds,
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "unfrozen_groups": policy.unfrozen_groups,
        "kept": kept,
        "calibration_images": int(train[2].sum()),
    }
    if not kept:
        progress.warn(
            f"fine-tuning reached val accuracy {metrics['accuracy']:.4f}, below stage 1 "
            f"({before[0]['accuracy']:.4f}); keeping the stage-1 model"
        )
        net.load_state_dict(outcome.saved)
        return FineTuneStage(kept, res, before[0], before[1], summary, policy=policy)
    seed = env.seed
    embedding = {"device": env.device, "precision": env.precision, "num_workers": env.num_workers}
    t, ood, thresholds = refit_after_fine_tune(net, train, preprocessing, seed=seed, progress=progress, **embedding)
    metrics, probs = recalibrated_metrics((metrics, probs), (t, thresholds), val_labels, classes)
    summary["temperature"] = t.tolist() if isinstance(t, np.ndarray) else t
    return FineTuneStage(kept, res, metrics, probs, summary, ood, t, policy, thresholds)


def recalibrated_metrics(
    after: tuple[dict[str, Any], np.ndarray],
    calibration: tuple[Any, tuple[float, ...]],
    y: np.ndarray,
    classes: list[str],
) -> tuple[dict[str, Any], np.ndarray]:
    """Validation (metrics, probabilities) after the refitted temperature(s) and thresholds (unchanged without)."""
    metrics, probs = after
    t, thresholds = calibration
    if t is None:
        return metrics, probs
    if np.ndim(y) == 2:
        calibrated = rescale_sigmoid(probs, t)
        return score_metrics(y, calibrated, classes, thresholds or metrics.get("thresholds", ())), calibrated
    calibrated = rescale_probs(probs, t)
    return {
        **compute_metrics(y, calibrated, classes),
        "ece_uncalibrated": expected_calibration_error(probs, y)[0],
    }, calibrated


def rescale_probs(probs: np.ndarray, t: float) -> np.ndarray:
    """``softmax(logits / t)`` from ``softmax(logits)``: log-probabilities differ from logits by a per-row constant."""
    z = np.log(np.clip(np.asarray(probs, np.float64), 1e-300, None)) / t
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def refit_after_fine_tune(
    net: GraftNet,
    train: tuple[list[str], np.ndarray, np.ndarray],
    preprocessing: Preprocessing,
    *,
    seed: int,
    progress: Progress,
    **embedding: Any,
) -> tuple[Any, dict[str, Any] | None, tuple[float, ...]]:
    """The temperature (fitted on the held-out slice, folded into the head), the refitted ``ood`` section
    and, multi-label, the per-label thresholds refitted on the same slice (one temperature per label).

    One pass of the fine-tuned backbone over the training images serves both: the stage-1
    temperature and statistics describe the frozen backbone, not the new one.
    """
    from graft.features.extract import EmbedJob, FeatureRequest, model_features
    from graft.features.options import EmbedOptions

    paths, y, held = train
    if net.ood is None and not held.any():
        return None, None, ()
    task = progress.task("calibration and OOD statistics (fine-tuned features)", total=len(paths))
    spatial = bool(getattr(net, "spatial", False))
    shard = distributed.is_distributed()  # each process embeds its share
    fs = model_features(
        net.backbone,
        preprocessing,
        paths,
        what=FeatureRequest(spatial=spatial, taps=net.taps),
        options=EmbedOptions(**embedding),
        progress=task.advance,
        job=EmbedJob(shard=shard),
    )
    task.close()
    head: Any = net.head.eval()
    dev = head[-1].weight.device  # the fine-tuned network's device (CUDA on a GPU)
    rows = held[fs.ok]
    with torch.no_grad():
        logits = head(torch.from_numpy(fs.X[rows]).to(dev)).double().cpu().numpy() if rows.any() else None
    feats = SplitFeatures(fs.X, y[fs.ok], fs.ok, [paths[i] for i in fs.ok])
    spec = HeadSpec("linear", fs.X.shape[1], int(head[-1].out_features))
    # Fitted once, on rank 0; every process then applies the same temperature and scorer.
    t, fit, thresholds = distributed.on_rank_zero(
        _fit_temperature_and_ood, logits, y[fs.ok][rows], spec, feats if net.ood is not None else None, seed
    )
    if t is not None:
        tt = torch.as_tensor(np.asarray(t, np.float32), device=dev)  # a scalar, or one per label (row)
        with torch.no_grad():  # logits / t, folded into the last linear layer as stage 1 does
            head[-1].weight.div_(tt[:, None] if tt.dim() else tt)
            head[-1].bias.div_(tt)
    if net.ood is None:
        return t, None, thresholds
    net.ood = fit.scorer.to(dev) if fit is not None else None  # fitted on the CPU, used beside the network
    return t, ood_info(fit), thresholds


def _fit_temperature_and_ood(
    logits: np.ndarray | None, labels: np.ndarray, spec: HeadSpec, feats: SplitFeatures | None, seed: int
) -> tuple[Any, OODFit | None, tuple[float, ...]]:
    """The temperature(s) and thresholds on the held-out logits (None, () without any) and the OOD fit (None without features)."""
    t, thresholds = fit_calibration(logits, labels) if logits is not None else (None, ())
    return t, (fit_ood_stage(spec, feats, seed=seed) if feats is not None else None), thresholds
