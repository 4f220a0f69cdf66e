"""Unlabelled images: embedding a folder through the feature cache, and finding copies of known images.

Shared by ``graft suggest`` (what to label next) and ``graft train --unlabeled`` (use what is
not labelled): both embed every unlabelled image once per backbone (the cache makes a
second run free) and both must leave out images that are copies of images already
labelled, or of validation and test images (a leak that would flatter the scores).

Copies are found two ways: the same bytes (sha256), and features so close that the images
show the same picture. For features the centred cosine is used (the mean over all rows
compared is removed first), as ``graft doctor`` measured: raw cosine of pooled features does
not transfer between datasets (distinct hand signs on white reach 0.97), centred cosine
does. :data:`NEAR_COPY_COS` is deliberately high: a near-copy missed costs little (one
redundant image), a distinct image dropped as a "copy" costs a label that mattered.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from graft.backbones.options import BackboneOptions
from graft.data.records import SkippedFile
from graft.exceptions import DataError
from graft.features.options import EmbedOptions

__all__ = [
    "NEAR_COPY_COS",
    "Copies",
    "embed_paths",
    "file_sha256",
    "find_copies",
    "near_copies",
    "unit_centred",
    "unlabeled_images",
]

NEAR_COPY_COS = 0.95  # centred cosine at or above which two images count as the same picture
_BLOCK = 2048  # rows per similarity block: memory stays ~ _BLOCK x n floats


def unlabeled_images(folder: str | os.PathLike) -> list[str]:
    """Every image under ``folder`` (recursively, links kept inside it), sorted; one-line errors for nothing there."""
    from graft.data.files import walk_image_files

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the folder of unlabelled images")
    images, _ = walk_image_files(root)
    if not images:
        raise DataError(f"{root}: no images found (JPEG, PNG, GIF, BMP, WebP, TIFF); give a folder that holds some")
    return [str(p) for p in images]


def embed_paths(
    paths: Sequence[str], backbone: BackboneOptions, embed: EmbedOptions | None = None
) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
    """(features, paths that decoded, unreadable files) of ``paths`` with a pretrained backbone, through the cache."""
    from graft.backbones import create_backbone, feature_preprocessing
    from graft.config import resolve_device
    from graft.features.extract import model_features

    opts = embed or EmbedOptions()
    opts = EmbedOptions(**{**vars(opts), "device": resolve_device(opts.device)})
    bb = create_backbone(backbone.backbone, weights=backbone.weights)
    pre = feature_preprocessing(bb.model, bb.preprocessing, backbone.input_size, backbone.crop_pct)
    fs = model_features(bb.model, pre, list(paths), options=opts)
    return fs.X, [paths[i] for i in fs.ok], list(fs.failed)


def file_sha256(paths: Sequence[str]) -> list[str | None]:
    """sha256 of each file's bytes (None where it cannot be read)."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(hashlib.sha256(Path(p).read_bytes()).hexdigest())
        except OSError:
            out.append(None)
    return out


def unit_centred(X: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus ``mean`` (default: their own mean), scaled to unit length (float32)."""
    m = np.asarray(X, np.float64).mean(0) if mean is None else mean
    Z = np.asarray(X, np.float32) - np.asarray(m, np.float32)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


@dataclass
class Copies:
    """Which rows of a pool copy a reference set (``by_hash``, ``by_features``) or an earlier pool row (``within``)."""

    by_hash: np.ndarray  # bool per pool row
    by_features: np.ndarray
    within: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.by_hash | self.by_features | self.within

    def counts(self, among: np.ndarray | None = None) -> dict[str, int]:
        """How many rows each rule removed (a row counts under the first rule that caught it).

        ``among``: only these rows (bool per pool row) are counted, so that rows already left out for
        another reason (a labelled image is also a same-file copy of itself) are not counted twice.
        """
        rows = np.ones(len(self.by_hash), bool) if among is None else np.asarray(among, bool)
        h = self.by_hash & rows
        f = self.by_features & ~self.by_hash & rows
        w = self.within & ~self.by_hash & ~self.by_features & rows
        return {"same_file": int(h.sum()), "near_copy": int(f.sum()), "repeat_in_pool": int(w.sum())}


def _max_similarity(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """For each row of ``A`` its highest dot product with a row of ``B`` (-1 for an empty ``B``)."""
    out = np.full(len(A), -1.0, np.float32)
    if len(B) == 0:
        return out
    for s in range(0, len(A), _BLOCK):
        out[s : s + _BLOCK] = (A[s : s + _BLOCK] @ B.T).max(1)
    return out


def _centred_pair(X: np.ndarray, X_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``X_ref`` centred on their common mean (so both are compared in one frame), unit rows."""
    both = np.concatenate([X, X_ref]) if len(X_ref) else np.asarray(X)
    mean = np.asarray(both, np.float64).mean(0) if len(both) else None
    Z = unit_centred(X, mean) if len(X) else np.zeros((0, 1), np.float32)
    Zr = unit_centred(X_ref, mean) if len(X_ref) else np.zeros((0, Z.shape[1]), np.float32)
    return Z, Zr


def near_copies(X: np.ndarray, X_ref: np.ndarray, min_cos: float = NEAR_COPY_COS) -> np.ndarray:
    """Rows of ``X`` with a centred cosine of at least ``min_cos`` to some row of ``X_ref``."""
    if not len(X) or not len(X_ref):
        return np.zeros(len(X), bool)
    return _max_similarity(*_centred_pair(X, X_ref)) >= min_cos


def find_copies(
    X: np.ndarray,
    digests: Sequence[str | None],
    X_ref: np.ndarray,
    ref_digests: Sequence[str | None],
    min_cos: float = NEAR_COPY_COS,
) -> Copies:
    """Pool rows that copy a reference image (same bytes, or centred cosine >= ``min_cos`` as in
    :func:`near_copies`) or an earlier pool row (same bytes, or the same cosine within the pool)."""
    n = len(X)
    ref = {d for d in ref_digests if d}
    by_hash = np.array([d is not None and d in ref for d in digests], bool)
    Z, Zr = _centred_pair(X, X_ref)  # once: the within-pool check below uses Z too
    by_features = _max_similarity(Z, Zr) >= min_cos if n else np.zeros(0, bool)
    within = np.zeros(n, bool)
    seen: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d is not None and d in seen:
            within[i] = True
        elif d is not None:
            seen[d] = i
    for s in range(0, n, _BLOCK):  # near copies of an earlier row: keep the first of each group
        S = Z[s : s + _BLOCK] @ Z[: s + _BLOCK].T
        for r in range(len(S)):
            i = s + r
            if not within[i] and (S[r, :i] >= min_cos).any():
                within[i] = True
    return Copies(by_hash, by_features, within)
