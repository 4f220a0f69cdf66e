"""``suggest``: which unlabelled images to label next, with a model or from scratch (cold start).

Every image is embedded once per backbone through the feature cache (a model's own frozen
backbone and preprocessing, so the features are the ones its head was trained on), then ranked
on features alone (:mod:`graft.suggest.rank`): seconds for thousands of images once cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from graft.data.records import SkippedFile
from graft.exceptions import DataError, ModelFileError
from graft.features.unlabeled import embed_paths, file_sha256, find_copies, near_copies, unlabeled_images
from graft.suggest.options import SuggestOptions
from graft.suggest.rank import Pick, cold_start, rank_with_model

__all__ = ["Suggestions", "model_trust", "suggest"]

_NOT_LEFT_OUT = ("images", "candidates")  # counts that are not reasons to leave an image out
#: paths -> (features, paths that decoded, unreadable files)
_Embed = Callable[[list[str]], tuple[np.ndarray, list[str], list[SkippedFile]]]


@dataclass
class Suggestions:
    """Ranked suggestions: ``rows`` (rank, path, relative path, score, reason, guess...) and what was left out."""

    folder: Path
    rows: list[dict[str, Any]]
    method: str
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    unknown: dict[str, float | None] | None = None  # candidates "unknown" to the model, and the share expected

    def left_out(self) -> str:
        """What was left out and why, in words ("2 already labeled, 1 repeat in pool"; "" for nothing)."""
        return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.counts.items() if k not in _NOT_LEFT_OUT and v)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "method": self.method,
            "classes": self.classes,
            "counts": self.counts,
            "unknown_to_the_model": self.unknown,
            "suggestions": self.rows,
            "unreadable": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


def _labeled_paths(sources: Any, root: Path) -> list[str]:
    """Images of labelled folders (recursively) or manifests (paths beside the manifest, else under ``root``:
    the file ``graft label`` writes lists paths relative to the folder it labelled)."""
    from graft.data.files import walk_image_files
    from graft.data.manifest import find_manifest, read_manifest
    from graft.data.options import ManifestOptions

    out: list[str] = []
    for src in sources:
        p = Path(src)
        manifest = find_manifest(p) if p.exists() else None
        if manifest is not None:
            table = read_manifest(manifest)
            if not table.rows and table.missing:
                table = read_manifest(manifest, ManifestOptions(images=str(root)))
            out += [str(r.path) for r in table.rows]
        elif p.is_dir():
            out += [str(i) for i in walk_image_files(p)[0]]
        else:
            raise DataError(f"{p}: not a folder or manifest of labelled images; check the --labeled path")
    return out


def _model_embedder(model: str | os.PathLike, opts: SuggestOptions) -> tuple[Any, _Embed]:
    """(the model's predictor, an embed function on its own backbone and preprocessing)."""
    from graft.features.extract import FeatureRequest, model_features
    from graft.predict.open import is_onnx_file, open_predictor

    if is_onnx_file(model):
        raise ModelFileError(f"{model}: suggest needs a model folder (RUN_DIR/model), not an exported .onnx file")
    pred: Any = open_predictor(model, "torch", device=opts.embed.device, precision=None)
    if pred.spec.multi_label:
        raise ModelFileError(f"{model} is a multi-label model; suggest ranks single-label models only")
    wanted = opts.backbone.backbone if opts.backbone is not None else None
    if wanted and wanted != pred.spec.architecture and wanted != pred.spec.backbone.get("name"):
        raise ModelFileError(
            f"{model} was trained on backbone {pred.spec.architecture}, not {wanted}; drop --backbone "
            "(suggestions use the model's own backbone) or pass a model trained on it"
        )
    net = pred.net
    what = FeatureRequest(spatial=bool(getattr(net, "spatial", False)), taps=tuple(getattr(net, "taps", ())))
    emb = replace(pred.options, use_cache=pred.options.use_cache and pred.frozen)

    def embed(paths: list[str]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
        fs = model_features(net.backbone, pred.preprocessing, paths, what=what, options=emb)
        return fs.X, [paths[i] for i in fs.ok], list(fs.failed)

    return pred, embed


def model_trust(spec: Any) -> float | None:
    """The head's chance-corrected cross-validated accuracy at its chosen C (None: not recorded)."""
    from graft.suggest.rank import skill

    head = (getattr(spec, "training", None) or {}).get("head") or {}
    scores, C = head.get("cv_accuracy") or {}, head.get("C")
    acc = scores.get(str(C)) if C is not None else None
    if acc is None:
        acc = next((v for k, v in scores.items() if _same_float(k, C)), None)
    n = head.get("cv_images")
    return None if acc is None else skill(float(acc), len(spec.classes), int(n) if n else None)


def _same_float(key: str, value: Any) -> bool:
    try:
        return value is not None and float(key) == float(value)
    except ValueError:
        return False


def _exclude(
    X: np.ndarray, paths: list[str], embed: _Embed, opts: SuggestOptions, root: Path, pred: Any = None
) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """(mask of pool rows to keep, counts, labelled features): keep rows not labelled already, not a copy of
    a labelled image or of an earlier pool image, nor (with a model) one of the model's training images."""
    ref = _labeled_paths(opts.labeled, root)
    real = {os.path.realpath(p) for p in ref}
    same_path = np.array([os.path.realpath(p) in real for p in paths], bool)
    X_ref = embed(ref)[0] if ref else np.zeros((0, X.shape[1]), np.float32)
    copies = find_copies(X, file_sha256(paths), X_ref, file_sha256(ref), opts.near_copy_cos)
    drop = same_path | copies.any
    counts = {"already_labeled": int(same_path.sum())}
    counts.update(copies.counts(among=~same_path))  # a labelled image is not also counted as its own copy
    trained = _training_rows(pred)
    if trained is not None and len(X):
        unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # as the stored rows are
        seen = near_copies(unit, trained, opts.near_copy_cos) & ~drop
        counts["model_training_images"] = int(seen.sum())
        drop |= seen
    return ~drop, counts, X_ref


def _training_rows(pred: Any) -> np.ndarray | None:
    """The model's own training features (unit rows), where it keeps them: the "unknown" score's reference
    rows (every training image's, or a seeded sample of 10,000 rows of larger sets). Validation images are
    not among them. Leaving these out needs nothing beyond the model folder, so a user who forgets
    ``--labeled`` is not asked to label its training images again."""
    ood = getattr(getattr(pred, "net", None), "ood", None)
    return None if ood is None else ood.reference.detach().cpu().numpy().astype(np.float32)


def suggest(
    model: str | os.PathLike | None, folder: str | os.PathLike, options: SuggestOptions | None = None
) -> Suggestions:
    """Rank the images under ``folder`` for labelling.

    Args:
        model: a model folder (uncertainty, diversity, unknown groups) or None (cold start).
        folder: the unlabelled images (read only; nothing in it is changed).
        options: see :class:`SuggestOptions`.

    Raises:
        DataError: no images under ``folder``, or a ``labeled`` source that is neither folder nor manifest.
        ModelFileError: an unreadable model, a multi-label one, or one trained on another backbone.
    """
    from graft.backbones.options import BackboneOptions

    opts = (options or SuggestOptions()).validate()
    root = Path(folder)
    paths = unlabeled_images(root)
    pred = None
    if model is not None:
        pred, embed = _model_embedder(model, opts)
    else:
        bb = opts.backbone or BackboneOptions()

        def embed(p: list[str]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
            return embed_paths(p, bb, opts.embed)

    X, ok, failed = embed(paths)
    keep, counts, X_lab = _exclude(X, ok, embed, opts, root, pred)
    X, ok = X[keep], [p for p, k in zip(ok, keep) if k]
    counts = {"images": len(paths), "unreadable": len(failed), **counts, "candidates": len(ok)}
    if not ok:  # every image left out: still the model's classes (graft label --model names them)
        return Suggestions(root, [], "none", list(pred.classes) if pred is not None else [], counts, failed)
    if pred is None:
        return Suggestions(root, _rows(root, ok, cold_start(X, opts.n, opts.seed)), "cold start", [], counts, failed)
    out = pred.outputs_of_features(X)
    t = pred.ood_threshold
    unknown = None if out.ood is None or t is None else out.ood > t
    trust = model_trust(pred.spec)
    picks = rank_with_model(X, out.probs, unknown, opts.n, opts.strategy, opts.seed, X_lab, trust)
    rows = _rows(root, ok, picks, out.probs, pred.classes)
    return Suggestions(root, rows, opts.strategy, list(pred.classes), counts, failed, _unknown_share(unknown, pred))


def _unknown_share(unknown: np.ndarray | None, pred: Any) -> dict[str, float | None] | None:
    """How many candidates the model calls "unknown", beside the share its threshold lets through by design.

    The threshold passes a set share of held-out training images (``pass_rate``, recorded with the
    model), so about 1 - pass_rate of images like the training images are "unknown" too; a pool well
    above that holds images unlike them (bench/new_class.py: flowers among ants and bees).
    """
    if unknown is None:
        return None
    rate = pred.spec.ood.get("pass_rate")
    expected = None if rate is None else round(1.0 - float(rate), 4)
    return {"images": int(unknown.sum()), "share": round(float(unknown.mean()), 4), "expected_share": expected}


def _rows(
    root: Path, paths: list[str], picks: list[Pick], probs: np.ndarray | None = None, classes: list[str] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for rank, p in enumerate(picks, 1):
        row: dict[str, Any] = {
            "rank": rank,
            "path": paths[p.row],
            "relpath": os.path.relpath(paths[p.row], root),
            "score": round(p.score, 4),
            "reason": p.reason,
        }
        if probs is not None and classes:
            best = int(np.argmax(probs[p.row]))
            row.update(guess=classes[best], probability=round(float(probs[p.row, best]), 4))
            if p.cluster <= -2:
                row["guess"] = "unknown"
            else:
                a, b = np.argsort(-probs[p.row], kind="stable")[:2]
                row["reason"] += f" ({classes[a]} {probs[p.row, a]:.2f} vs {classes[b]} {probs[p.row, b]:.2f})"
        rows.append(row)
    return rows
