"""The stages of a fit as pure functions: embed the splits (:mod:`graft.features.dataset`), fit the head, the OOD score.

Each takes what it needs and returns a result object; none mutates its inputs, so
:class:`graft.Classifier` stays a thin facade that only stores what they return.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.exceptions import DataError
from graft.features.dataset import EmbeddedData, SplitFeatures, embed_dataset, scan_splits
from graft.features.options import EmbedOptions
from graft.heap import large_blocks_returned
from graft.metrics import compute_metrics, expected_calibration_error
from graft.metrics_multilabel import compute_multilabel_metrics
from graft.network import GraftNet, HeadSpec
from graft.network.ood import K_NEIGHBOURS, OOD_METHOD, PASS_RATE
from graft.progress import NullProgress, Progress
from graft.training.fit.options import FitOptions
from graft.training.head.feature_choice import choose_features_by_cv, select_columns
from graft.training.head.fit import class_weights_balanced, fit_linear_head, train_head
from graft.training.head.multilabel import pos_weights_balanced
from graft.training.head.ood import OODFit, fit_ood
from graft.training.head.options import HeadOptions
from graft.training.head.semi import PseudoSource

__all__ = ["HeadStage", "StageOne", "stage_one", "fit_head_stage", "fit_ood_stage", "ood_info"]


@dataclass
class HeadStage:
    """Result of :func:`fit_head_stage`."""

    head: nn.Module
    spec: HeadSpec
    info: dict[str, Any]
    history: list[dict[str, Any]]
    val_probs: np.ndarray
    metrics: dict[str, Any]
    seconds: float
    thresholds: tuple[float, ...] = ()  # multi-label: per-label decision thresholds (empty: single-label)


def fit_head_stage(
    spec: HeadSpec,
    train: SplitFeatures,
    val: SplitFeatures,
    classes: Sequence[str],
    *,
    C: float | None = None,
    class_weight: np.ndarray | None = None,
    seed: int = 0,
    linear_fit: Any = None,
) -> HeadStage:
    """Train the head on cached features and score it on the validation features."""
    t0 = time.perf_counter()
    head, info, history = train_head(spec, train, val, C=C, class_weight=class_weight, seed=seed, linear_fit=linear_fit)
    # A fit reused from the feature choice took its time there: count it, not the ~0 s of reuse.
    seconds = time.perf_counter() - t0 + (float(linear_fit.seconds) if linear_fit is not None else 0.0)
    with torch.no_grad():
        logits = head(torch.from_numpy(val.X)).float()
    if spec.multi_label:
        thresholds = tuple(float(t) for t in info["thresholds"])
        probs = torch.sigmoid(logits).numpy()
        metrics = compute_multilabel_metrics(val.y, probs, list(classes), thresholds)
        return HeadStage(head, spec, info, history, probs, metrics, seconds, thresholds)
    probs = torch.softmax(logits, 1).numpy()
    metrics = compute_metrics(val.y, probs, list(classes))
    if len(val.y):  # the same head before temperature scaling, for the report's comparison
        raw = torch.softmax(logits * float(info.get("temperature", 1.0)), 1).numpy()
        metrics["ece_uncalibrated"] = expected_calibration_error(raw, val.y)[0]
    return HeadStage(head, spec, info, history, probs, metrics, seconds)


#: Above this feature width the reference set of the OOD score gets too large to ship.
OOD_MAX_DIM = 8192


def fit_ood_stage(spec: HeadSpec, train: SplitFeatures, *, seed: int = 0) -> OODFit | None:
    """The "unknown" score for pooled features (None for flattened feature maps or very wide ones)."""
    if spec.spatial or train.X.shape[1] > OOD_MAX_DIM or len(train.y) < 2 * K_NEIGHBOURS:
        return None
    return fit_ood(train.X, train.groups, seed=seed)


def ood_info(fit: OODFit | None) -> dict[str, Any]:
    """The ``ood`` section of the artifact for ``fit`` (empty without one)."""
    if fit is None:
        return {}
    return {
        "method": OOD_METHOD,
        "threshold": fit.threshold,
        "pass_rate": PASS_RATE,
        "k": fit.scorer.k,
        "n_reference": int(fit.scorer.reference.shape[0]),
        "fitted_on": "training features; threshold from held-out folds of them (never validation)",
    }


@dataclass
class StageOne:
    """Everything stage 1 learned: the network, what it expects, how it scored, and the data it saw."""

    data: Any  # DatasetSplits: a copy, files that failed at full decode moved to ``skipped``
    embedded: EmbeddedData
    head: HeadStage
    net: GraftNet  # the frozen backbone + the fitted head (+ the OOD scorer)
    timings: dict[str, float]
    ood: dict[str, Any] = field(default_factory=dict)  # the ArtifactSpec's ``ood`` section
    train: SplitFeatures | None = None  # the training features the head was fitted on (chosen columns)
    pool: PseudoSource | None = None  # --unlabeled where a method was kept: for the budget ladder's rungs


# Embedding and the head fit allocate and free many arrays of 1-60 MB (ONNX Runtime's arena,
# batches, the fit's chunks and CV subsets); see graft.heap for why they are mmapped here.
@large_blocks_returned()
def stage_one(
    data: Any,
    options: FitOptions,
    embed: EmbedOptions,
    *,
    progress: Progress | None = None,
    unlabeled: str | os.PathLike | None = None,
) -> StageOne:
    """Scan (unless ``data`` is already scanned splits), embed with the frozen backbone, fit the head.

    Args:
        data: a dataset folder, or :class:`~graft.data.records.DatasetSplits` already scanned.
        options: the backbone, the head and the split (:class:`graft.Classifier`'s parameters).
        embed: how images are embedded (``device`` already resolved).
        unlabeled: a folder of unlabelled images the linear head may learn from (:mod:`graft.training.head.semi`).
    """
    t_start = time.perf_counter()
    prog = progress or NullProgress()
    head = options.head
    seed = options.split.seed
    torch.manual_seed(seed)
    data = _scanned(data, options, embed, unlabeled, prog)
    t0 = time.perf_counter()
    emb = _embedded(data, options, embed, prog)
    pool = _unlabeled_pool(unlabeled, emb, embed, head, prog)
    # Chosen and fitted once, on rank 0, and handed to the other processes of a job (a no-op alone).
    choice, st, kept = distributed.on_rank_zero(_choose_and_fit_head, emb, head, data.classes, seed, pool)
    # the rungs' pool is built by each process from its own features: only the method's record travels
    source = None if kept is None else PseudoSource(pool.X[:, choice.columns], list(pool.paths), *kept)
    train = select_columns(emb.train, choice.columns)
    c_text = f", C={st.info['C']:g}" if "C" in st.info else ""
    f_text = f", multi-depth features (blocks {list(choice.taps)})" if choice.taps else ""
    prog.message(f"head ({head.head}{c_text}{f_text}): val accuracy {st.metrics['accuracy']:.4f}")
    t1 = time.perf_counter()
    ood = distributed.on_rank_zero(fit_ood_stage, st.spec, train, seed=seed)
    net = _frozen_net(emb, st, ood, choice.taps)
    emb.backbone_info["feature_taps"] = list(choice.taps)
    timings = {"scan": t0 - t_start, **emb.timings, "head": st.seconds, "ood": time.perf_counter() - t1}
    timings["fit"] = time.perf_counter() - t_start
    return StageOne(emb.data, emb, st, net, timings, ood_info(ood), train, source)


def _scanned(data: Any, options: FitOptions, embed: EmbedOptions, unlabeled: Any, prog: Progress) -> Any:
    """``data`` scanned into splits (unless it already is), with the checks said before the long embedding."""
    if isinstance(data, (str, os.PathLike)):
        data = scan_splits(
            data, options.split, options.manifest, strict=embed.strict, max_pixels=embed.max_pixels, progress=prog
        )
    _warn_imbalance(data, options.head.class_weight, prog)
    if unlabeled is not None:  # an empty or missing folder is said now, not after embedding
        from graft.features.unlabeled import unlabeled_images

        unlabeled_images(unlabeled)
    return data


def _embedded(data: Any, options: FitOptions, embed: EmbedOptions, prog: Progress) -> EmbeddedData:
    """Every split through the frozen backbone, in the layout the head asks for; a DataError where nothing usable is left."""
    head = options.head
    emb = embed_dataset(
        data,
        options.backbone,
        spatial=HeadSpec(head.head, 1, 2).spatial,
        multi_depth=head.features != "final",
        augment_views=head.augment_views,
        seed=options.split.seed,
        embed=embed,
        progress=prog,
    )
    if emb.data.skipped:
        prog.warn(f"{len(emb.data.skipped)} file(s) skipped; see the run summary")
    if len(emb.train.X) == 0 or len(emb.val.X) == 0:
        raise DataError(f"{data.root}: no usable training or validation images after skipping unreadable files")
    return emb


def _frozen_net(emb: EmbeddedData, st: HeadStage, ood: OODFit | None, taps: Sequence[int]) -> GraftNet:
    """The frozen backbone with the fitted head (and OOD scorer), in eval mode on the backbone's device."""
    dev = next(emb.backbone.model.parameters()).device  # head and scorer were fitted on the CPU; CUDA on a GPU
    scorer = ood.scorer if ood else None
    net = GraftNet(emb.backbone.model, st.head, spatial=st.spec.spatial, ood=scorer, taps=taps)
    return net.to(dev).eval()


def _warn_imbalance(data: Any, class_weight: str | None, prog: Progress) -> None:
    ratio = data.imbalance_ratio("train")
    if ratio > 5 and class_weight is None:
        prog.warn(
            f"classes are imbalanced: the largest has {ratio:.1f}x the images of the smallest; "
            "consider --class-weight balanced"
        )


def _loss_weights(y: np.ndarray, n: int) -> np.ndarray:
    """``balanced`` weights: per class for class indices, per label's positives for a 0/1 matrix."""
    return pos_weights_balanced(y) if np.ndim(y) == 2 else class_weights_balanced(y, n)


def _unlabeled_pool(folder: Any, emb: EmbeddedData, embed: EmbedOptions, head: HeadOptions, prog: Progress) -> Any:
    """The unlabelled features for the head fit (None without ``--unlabeled``, or for a head that cannot use them)."""
    if folder is None:
        return None
    if head.head != "linear" or np.ndim(emb.train.y) == 2:
        prog.warn("--unlabeled is used by the single-label linear head only; ignored")
        return None
    from graft.training.fit.unlabeled import embed_unlabeled

    return embed_unlabeled(folder, emb, embed)


def _choose_and_fit_head(
    emb: EmbeddedData, options: HeadOptions, classes: Sequence[str], seed: int, pool: Any = None
) -> tuple[Any, HeadStage, tuple[str, float, float] | None]:
    """Choose the features (training data only), then fit the head on them and score it on validation.

    The third item: where ``--unlabeled``'s cross-validation kept a method, (method, C, temperature):
    what the budget ladder's rungs need to pseudo-label the same images (None otherwise).
    """
    n = len(classes)
    multi = np.ndim(emb.train.y) == 2
    class_weight = _loss_weights(emb.train.y, n) if options.class_weight == "balanced" else None
    widths = emb.widths or [int(emb.train.X.shape[1])]
    choice, fits = choose_features_by_cv(
        emb.train, emb.taps, widths, options.features, options.head, n, class_weight=class_weight, seed=seed
    )
    train = select_columns(emb.train, choice.columns)
    val = select_columns(emb.val, choice.columns)
    spec = HeadSpec(options.head, train.X.shape[1], n, options.dropout, options.hidden, multi_label=multi)
    reuse = fits.get(tuple(choice.columns)) if options.C is None else None
    semi = None
    if pool is not None and spec.type == "linear":  # unlabelled images, kept only where CV says they help
        from graft.training.head.semi import fit_with_unlabeled

        base = reuse or fit_linear_head(train.X, train.y, n, C=options.C, class_weight=class_weight, seed=seed)
        semi = fit_with_unlabeled(
            (train.X, train.y, train.groups), pool.X[:, choice.columns], base, n, class_weight, seed
        )
        reuse = semi.fit
    st = fit_head_stage(spec, train, val, classes, C=options.C, class_weight=class_weight, seed=seed, linear_fit=reuse)
    st.info["features"] = choice.to_dict()
    kept = None
    if semi is not None:
        st.info["unlabeled"] = {**pool.info, **semi.info}
        if semi.info["method"] != "none":
            kept = (str(semi.info["method"]), float(semi.info["C"]), float(semi.temperature))
    return choice, st, kept
