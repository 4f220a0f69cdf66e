"""``graft.doctor(DATA_DIR)``: find what is wrong with a dataset before training on it.

It reads the folder exactly as ``graft train`` will (the same scan, the same embedding
preprocessing and feature cache, so a doctor run makes the next training run's
embedding free and vice versa) and never writes, moves or edits a user file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from graft.backbones.options import BackboneOptions
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.records import DatasetSplits, SkippedFile
from graft.doctor import checks, duplicates, multilabel
from graft.doctor.issues import KINDS, DoctorReport, Issue
from graft.features.options import EmbedOptions
from graft.progress import NullProgress, Progress
from graft.validation import invalid_parameter

__all__ = ["doctor"]

_COPY_KINDS = frozenset({"duplicate", "near_duplicate", "leak"})


@dataclass
class _Embedded:
    """Features of every image that decoded: ``X[k]`` belongs to ``corpus.records[rows[k]]``."""

    X: np.ndarray
    rows: np.ndarray
    failed: list[SkippedFile]
    input_side: int
    preprocessing: dict[str, Any]


def doctor(
    data_dir: str | os.PathLike,
    *,
    backbone: BackboneOptions | None = None,
    split: SplitOptions | None = None,
    embed: EmbedOptions | None = None,
    manifest: ManifestOptions | None = None,
    checks: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> DoctorReport:
    """Check a dataset folder for corrupt files, duplicates, leaks, label errors, outliers, imbalance and small images.

    Args:
        data_dir: the dataset folder or manifest, in any layout ``graft train`` reads (``manifest``: how).
        backbone / split / embed: the options objects of :class:`graft.Classifier`; the same defaults,
            so ``graft train`` reuses the features cached here.
        checks: the issue kinds to look for (see :data:`~graft.doctor.issues.KINDS`); None: all.
            Leaving out ``label`` and ``outlier`` skips the cross-validation, the costliest
            step after embedding.

    Returns:
        A :class:`DoctorReport`, issues most severe first.

    Raises:
        DataError: the folder is not a dataset graft can read (one line, exit code 2).
    """
    from graft.config import resolve_device
    from graft.features.dataset import scan_splits

    backbone = backbone or BackboneOptions()
    split = (split or SplitOptions()).validate("doctor")
    opts = embed or EmbedOptions()
    opts = dataclasses.replace(opts, device=resolve_device(opts.device))
    kinds = _kinds(checks)
    prog = progress or NullProgress()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    splits = scan_splits(data_dir, split, manifest, max_pixels=opts.max_pixels, progress=prog)
    corpus = _corpus(splits)
    timings["scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    digests, thumbs = _hash(corpus, kinds, prog)
    timings["hash"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = _embed(splits, corpus, backbone, split.seed, opts, prog)
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    issues, measured = _run_checks(splits, corpus, emb, (digests, thumbs), kinds, split.seed, prog)
    timings["checks"] = time.perf_counter() - t0
    settings = {
        "backbone": backbone.backbone,
        "preprocessing": emb.preprocessing,
        "seed": split.seed,
        "checks": sorted(kinds),
    }
    settings.update(**_thresholds(emb), **measured)
    n_images = len(corpus.records) + len(splits.skipped)
    return DoctorReport(str(splits.root), issues, n_images, list(splits.classes), splits.summary(), settings, timings)


def _hash(corpus: checks.Corpus, kinds: frozenset[str], prog: Progress) -> tuple[Any, Any]:
    """File digests and thumbnails for the copy checks (nothing when none of them runs)."""
    paths = [corpus.path(i) for i in range(len(corpus.records))] if kinds & _COPY_KINDS else []
    task = prog.task("hashing files", total=len(paths))
    try:
        return duplicates.file_digests(paths, task.advance)
    finally:
        task.close()


def _kinds(checks: Iterable[str] | None) -> frozenset[str]:
    if checks is None:
        return frozenset(KINDS)
    kinds = frozenset([checks] if isinstance(checks, str) else checks)
    if not kinds or not kinds <= set(KINDS):
        raise invalid_parameter("checks", "doctor", f"None or some of {', '.join(KINDS)}", checks)
    return kinds


def _thresholds(emb: _Embedded) -> dict[str, Any]:
    """The thresholds the checks used, for the report."""
    return {
        "near_duplicate": {
            "thumbnail_min": duplicates.THUMB_MIN,
            "thumbnail_cosine_min": duplicates.THUMB_COS_MIN,
            "crop_cosine_min": duplicates.CROP_COS_MIN,
            "crop_gap_min": duplicates.CROP_GAP_MIN,
            "crop_thumbnail_min": duplicates.CROP_THUMB_MIN,
        },
        "label_method": "cleanlab low_self_confidence",
        "outlier_percentile": checks.OUTLIER_PERCENTILE,
        "imbalance_ratio": checks.IMBALANCE_RATIO,
        "small_side": emb.input_side / 2,
    }


def _corpus(splits: DatasetSplits) -> checks.Corpus:
    records, split_of = [], []
    for name, recs in splits.splits.items():
        records.extend(recs)
        split_of.extend([name] * len(recs))
    names = {s: splits.split_dirs.get(s, s) for s in splits.splits}
    auto = any(s not in splits.split_dirs for s in splits.splits)
    return checks.Corpus(records, split_of, list(splits.classes), names, auto)


def _embed(
    splits: DatasetSplits,
    corpus: checks.Corpus,
    backbone: BackboneOptions,
    seed: int,
    opts: EmbedOptions,
    prog: Progress,
) -> _Embedded:
    """View-0 features of every split, chosen and cached as :func:`graft.features.dataset.embed_dataset` does."""
    from graft.features.dataset import embed_split, load_backbone
    from graft.features.extract import FeatureRequest, bind_model_features

    bb, pre, _info = load_backbone(splits, backbone)
    embed = bind_model_features(bb.model, pre, what=FeatureRequest(seed=seed), options=opts)
    Xs, rows, failed = [], [], []
    for name in dict.fromkeys(corpus.split_of):
        idx = np.array([i for i, s in enumerate(corpus.split_of) if s == name], np.int64)
        sf = embed_split([corpus.records[i] for i in idx], embed, name=name, progress=prog)
        Xs.append(sf.X)
        rows.append(idx[sf.groups])
        failed.extend(sf.failed)
    X = np.concatenate(Xs) if Xs else np.zeros((0, 0), np.float32)
    return _Embedded(X, np.concatenate(rows), failed, int(min(pre.input_size)), pre.to_dict())


def _run_checks(
    splits: DatasetSplits,
    corpus: checks.Corpus,
    emb: _Embedded,
    hashes: tuple[list[str | None], np.ndarray],
    kinds: frozenset[str],
    seed: int,
    prog: Progress,
) -> tuple[list[Issue], dict[str, Any]]:
    """The checks of ``kinds``; also what the model-based ones measured."""
    from graft.training.head.ood import fit_ood

    issues = checks.corrupt_issues(list(splits.skipped) + emb.failed)
    if kinds & _COPY_KINDS:
        issues += _copies(corpus, emb, *hashes)
    measured: dict[str, Any] = {}
    if "label" in kinds:
        issues += _label_checks(splits.multi_label, corpus, emb, seed, prog, measured)
    if "outlier" in kinds and len(emb.rows) >= 10:  # the OOD score reads features only, never labels
        issues += checks.outlier_issues(corpus, fit_ood(emb.X, seed=seed).heldout_scores, emb.rows)
    if splits.multi_label:
        counts, n_train = splits.class_counts("train"), len(splits.splits.get("train", []))
        issues += multilabel.label_share_issues(str(splits.root), counts, n_train)
    else:
        issues += checks.imbalance_issue(str(splits.root), splits.class_counts("train"))
    issues += checks.small_issues(corpus, emb.input_side, str(splits.root))
    return [i for i in issues if i.kind in kinds], measured


def _label_checks(
    multi_label: bool, corpus: checks.Corpus, emb: _Embedded, seed: int, prog: Progress, measured: dict[str, Any]
) -> list[Issue]:
    """Likely label errors from out-of-fold probabilities: confident learning, per label for multi-label data."""
    from graft.doctor.labels import out_of_fold_probs

    if multi_label:
        if len(emb.rows) < 10:
            return []
        prog.message("checking labels (out-of-fold probabilities of a linear head per label)")
        Y = np.zeros((len(emb.rows), len(corpus.classes)), np.int64)
        for r, i in enumerate(emb.rows):
            Y[r, list(corpus.records[int(i)].label_set)] = 1
        oof_rows, probs = multilabel.out_of_fold_label_probs(emb.X, Y, seed=seed)
        measured["label_rows_checked"] = int(len(oof_rows))
        return multilabel.missing_wrong_label_issues(corpus, probs, emb.rows[oof_rows])
    y = np.array([corpus.records[i].label for i in emb.rows], np.int64)
    if len(y) < 10 or len(np.unique(y)) < 2:
        return []
    prog.message("checking labels (out-of-fold probabilities of the linear head)")
    oof_rows, probs = out_of_fold_probs(emb.X, y, len(corpus.classes), seed=seed)
    measured["label_rows_checked"] = int(len(oof_rows))
    return checks.label_issues(corpus, probs, emb.rows[oof_rows])


def _copies(corpus: checks.Corpus, emb: _Embedded, digests: list[str | None], thumbs: np.ndarray) -> list[Issue]:
    """Exact copies by content hash, then near copies among one representative of each exact group.

    Collapsing exact groups first matters: a third identical copy would otherwise be every
    pair's next-nearest neighbour and hide the gap the crop rule looks for.
    """
    bad = {f.path for f in emb.failed}
    groups = checks.exact_groups([None if corpus.path(i) in bad else d for i, d in enumerate(digests)])
    issues = checks.duplicate_issues(corpus, groups)
    later = {i for g in groups for i in g[1:]}
    keep = np.array([int(r) not in later for r in emb.rows], bool)
    reps = emb.rows[keep]
    return issues + checks.near_duplicate_issues(corpus, duplicates.near_pairs(emb.X[keep], thumbs[reps]), reps)
