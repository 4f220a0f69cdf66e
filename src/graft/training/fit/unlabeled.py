"""``--unlabeled DIR`` in stage 1: embed the unlabelled images once, drop leaks and copies, record what happened.

Unlabelled images that copy a validation or test image (same bytes, or features of the same
picture: :func:`graft.features.unlabeled.find_copies`) would carry those images into training, so
they are dropped and counted; copies of training images and repeats within the folder add nothing
and are dropped too. Test images are checked by file hash (they are not embedded in stage 1);
validation images by hash and features. The labels of validation images are never read here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from graft.features.dataset import EmbeddedData
from graft.features.options import EmbedOptions
from graft.features.unlabeled import NEAR_COPY_COS, file_sha256, find_copies, unlabeled_images

__all__ = ["UnlabeledPool", "embed_unlabeled"]


class UnlabeledPool:
    """The unlabelled features kept (``X``), their files (``paths``) and the counts of what was left out (``info``)."""

    def __init__(self, X: np.ndarray, paths: list[str], info: dict[str, Any]) -> None:
        self.X, self.paths, self.info = X, paths, info


def embed_unlabeled(folder: str | os.PathLike, emb: EmbeddedData, embed: EmbedOptions) -> UnlabeledPool:
    """Embed ``folder``'s images with stage 1's backbone (through the cache), without leaks or copies."""
    from graft import distributed
    from graft.features.extract import EmbedJob, FeatureRequest, model_features

    paths = unlabeled_images(folder)
    labelled = {os.path.realpath(str(r.path)) for recs in emb.data.splits.values() for r in recs}
    inside = np.array([os.path.realpath(p) in labelled for p in paths], bool)  # a labelled image itself
    paths = [p for p, i in zip(paths, inside) if not i]
    # in a job of several processes each embeds its share (every process gets all the features)
    job = EmbedJob(shard=distributed.is_distributed())
    fs = model_features(
        emb.backbone.model, emb.preprocessing, paths, what=FeatureRequest(taps=emb.taps), options=embed, job=job
    )
    ok = [paths[i] for i in fs.ok]
    digests = file_sha256(ok)
    held_out = [str(r.path) for s in ("val", "test") for r in emb.data.splits.get(s, [])]
    leak = find_copies(fs.X, digests, emb.val.X, file_sha256(held_out), NEAR_COPY_COS)
    train_rows = np.unique(emb.train.groups, return_index=True)[1]  # view 0 of each training image
    train_paths = [str(r.path) for r in emb.data.splits["train"]]
    dup = find_copies(fs.X, digests, emb.train.X[train_rows], file_sha256(train_paths), NEAR_COPY_COS)
    leaks = leak.by_hash | leak.by_features
    copies = (dup.any | leak.within) & ~leaks
    keep = ~(leaks | copies)
    info = {
        "folder": str(folder),
        "found": len(inside),
        "unreadable": len(fs.failed),
        "labelled_images_themselves": int(inside.sum()),
        "leaks_of_val_or_test": int(leaks.sum()),
        "copies_of_train_or_repeats": int(copies.sum()),
        "test_checked_by": "file hash",
    }
    return UnlabeledPool(fs.X[keep], [p for p, k in zip(ok, keep) if k], info)
