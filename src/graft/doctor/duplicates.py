"""Exact duplicates by content hash, near duplicates by backbone features and a tiny thumbnail.

Thresholds, measured with EfficientNet-Lite0 features (graft's default embedding) on
hymenoptera with 40 planted copies, and on the clean sign_digits and flowers sets:

* Raw cosine similarity of the pooled features does not transfer between datasets:
  distinct 100 px hand signs on white reach 0.97 (median nearest neighbour 0.93) while
  a photo and its half-size copy can be as low as 0.67. Centring the features on the
  dataset mean first removes what every image shares; what is left is compared.
* Resized and re-encoded copies keep their layout: the Pearson correlation of 16x16 grey
  thumbnails was >= 0.997 for every planted one, and at most 0.84 (hymenoptera) and 0.97
  (sign_digits, near-identical hand-on-white shots) between distinct images; on the
  features alone a half-size copy of a small photo fell to a centred cosine of 0.60.
  So ``thumbnail >= 0.985`` with a centred cosine >= 0.5 (the same subject) is one rule.
* A slightly cropped copy moves its thumbnail (0.66-0.87) but stays the nearest
  neighbour of its original by far (Lowe's ratio test, here as a difference): its
  centred cosine was 0.67-0.93 and beat the next-closest image of either by >= 0.2 in 17
  of 20 planted crops, while between distinct images that gap never exceeded 0.19
  (hymenoptera) and 0.15 (sign_digits). Hence the second rule: cosine >= 0.7 and gap >= 0.2,
  plus a thumbnail correlation >= 0.3 (planted crops: 0.43-0.87): on flowers the gap rule alone
  paired two different small flowers on blue sky (cosine 0.74, thumbnails -0.66).

With these rules flowers_kaggle_128 gives 20 near-duplicate pairs, each checked by eye
(``X.jpg`` beside its Flickr thumbnail ``X_n.jpg``, colour-edited copies), and
hymenoptera and sign_digits none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "THUMB_MIN",
    "THUMB_COS_MIN",
    "CROP_COS_MIN",
    "CROP_GAP_MIN",
    "CROP_THUMB_MIN",
    "NearPair",
    "file_digests",
    "near_pairs",
]

THUMB_SIZE = 16
THUMB_MIN = 0.985  # thumbnail correlation of a resized or re-encoded copy
THUMB_COS_MIN = 0.5  # ... whose centred features still show the same subject
CROP_COS_MIN = 0.7  # centred cosine of a (slightly cropped) copy
CROP_GAP_MIN = 0.2  # ... and how much closer it is than either image's next-nearest neighbour
CROP_THUMB_MIN = 0.3  # ... and a similar layout
_BLOCK = 2048  # rows per similarity block: memory stays ~ _BLOCK x n floats


@dataclass(frozen=True)
class NearPair:
    """Two images that look like copies of each other (indices into the feature rows)."""

    i: int
    j: int
    cosine: float  # centred cosine similarity of their features
    thumbnail: float  # Pearson correlation of their 16x16 grey thumbnails
    rule: str  # "resized" (thumbnail rule) or "cropped" (nearest-neighbour gap rule)


def _thumbnail(data: bytes) -> np.ndarray:
    """A mean-free unit vector of the 16x16 grey thumbnail (zeros where the image does not decode)."""
    from PIL import Image

    from graft.data.decode import load_image_bytes
    from graft.exceptions import ImageDecodeError

    try:
        img = load_image_bytes(data, draft_size=(4 * THUMB_SIZE, 4 * THUMB_SIZE))
    except ImageDecodeError:
        return np.zeros(THUMB_SIZE * THUMB_SIZE, np.float32)
    a = np.asarray(img.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX), np.float32).ravel()
    a -= a.mean()
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 1e-3 else np.zeros_like(a)  # a flat image has no layout to compare


def file_digests(
    paths: Sequence[str], progress: Callable[[int], None] | None = None
) -> tuple[list[str | None], np.ndarray]:
    """(sha256 of each file's bytes or None if unreadable, (n, 256) thumbnail vectors), one read per file."""
    digests: list[str | None] = []
    thumbs = np.zeros((len(paths), THUMB_SIZE * THUMB_SIZE), np.float32)
    for k, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            digests.append(None)
        else:
            digests.append(hashlib.sha256(data).hexdigest())
            thumbs[k] = _thumbnail(data)
        if progress is not None:
            progress(1)
    return digests, thumbs


def _unit_centred(X: np.ndarray) -> np.ndarray:
    Z = np.asarray(X, np.float32) - np.asarray(X, np.float64).mean(0).astype(np.float32)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def near_pairs(X: np.ndarray, thumbs: np.ndarray) -> list[NearPair]:
    """Pairs of rows of ``X`` (features) and ``thumbs`` that are near copies, by the two rules above.

    Rows that are exact copies of each other should be collapsed to one before: the gap
    rule compares a pair with each image's next-nearest neighbour, which a third
    identical copy would be.
    """
    n = len(X)
    if n < 2:
        return []
    Z = _unit_centred(X)
    top2 = np.full((n, 2), -1.0, np.float32)  # each row's two best similarities to other rows
    top1_idx = np.full(n, -1, np.int64)
    cands: list[tuple[int, int, float, float]] = []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        S = Z[start:stop] @ Z.T
        S[np.arange(stop - start), np.arange(start, stop)] = -1.0
        part = np.argpartition(-S, 1, axis=1)[:, :2]
        vals = np.take_along_axis(S, part, 1)
        order = np.argsort(-vals, 1)
        top2[start:stop] = np.take_along_axis(vals, order, 1)
        top1_idx[start:stop] = np.take_along_axis(part, order, 1)[:, 0]
        R = thumbs[start:stop] @ thumbs.T
        a, b = np.nonzero(
            (S >= min(THUMB_COS_MIN, CROP_COS_MIN)) & (np.arange(n)[None, :] > np.arange(start, stop)[:, None])
        )
        cands.extend((int(i + start), int(j), float(S[i, j]), float(R[i, j])) for i, j in zip(a, b))
    out = []
    for i, j, cos, thumb in cands:
        if thumb >= THUMB_MIN and cos >= THUMB_COS_MIN:
            out.append(NearPair(i, j, cos, thumb, "resized"))
            continue
        next_i = top2[i, 1] if top1_idx[i] == j else top2[i, 0]
        next_j = top2[j, 1] if top1_idx[j] == i else top2[j, 0]
        if cos >= CROP_COS_MIN and thumb >= CROP_THUMB_MIN and cos - max(next_i, next_j) >= CROP_GAP_MIN:
            out.append(NearPair(i, j, cos, thumb, "cropped"))
    return out
