"""``graft embed``: the frozen backbone's features of a whole dataset folder, as a product of their own.

Fills the feature cache exactly as ``graft train`` does (same backbone, preprocessing
and keys, so a later ``train`` on the folder embeds nothing), sharded over the
processes of a job (``--devices N``), and writes one file with every image's
features, path, label and split: ``.npz`` (numpy) or ``.parquet`` (with pyarrow).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from graft import distributed
from graft.backbones.options import BackboneOptions
from graft.data.options import ManifestOptions, SplitOptions
from graft.exceptions import DataError
from graft.features.options import EmbedOptions
from graft.fileio import atomic_write
from graft.progress import NullProgress, Progress
from graft.validation import invalid_parameter

__all__ = ["FEATURE_FORMATS", "embed_folder", "write_features"]

FEATURE_FORMATS = (".npz", ".parquet")


def embed_folder(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: BackboneOptions | None = None,
    split: SplitOptions | None = None,
    embed: EmbedOptions | None = None,
    manifest: ManifestOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed every split of ``data_dir`` and write the features to ``out`` (rank 0); a summary of what was written.

    Raises:
        InvalidParameterError: ``out`` is neither ``.npz`` nor ``.parquet``.
        DataError: the folder is unusable, or parquet is asked for without pyarrow.
    """
    from graft.config import resolve_device
    from graft.features.dataset import embed_split, load_backbone, scan_splits
    from graft.features.extract import EmbedJob, bind_model_features

    opts = embed or EmbedOptions()
    suffix = Path(out).suffix.lower()
    if suffix not in FEATURE_FORMATS:
        raise invalid_parameter("out", "graft embed", "a file ending in .npz or .parquet", str(out))
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:  # say so before embedding, not after
        raise DataError(f"--out {out}: writing parquet needs pyarrow (pip install pyarrow); or write .npz")
    opts = dataclasses.replace(opts, device=resolve_device(opts.device))
    distributed.init(opts.device)
    prog = (progress or NullProgress()) if distributed.is_main() else NullProgress()
    splits = scan_splits(data_dir, split, manifest, strict=opts.strict, max_pixels=opts.max_pixels, progress=prog)
    bb, pre, info = load_backbone(splits, backbone or BackboneOptions())
    features = bind_model_features(bb.model, pre, options=opts, job=EmbedJob(shard=distributed.is_distributed()))
    n_labels = len(splits.classes) if splits.multi_label else 0  # multi-label: a 0/1 label matrix
    parts = {
        name: embed_split(recs, features, name=name, strict=opts.strict, progress=prog, n_labels=n_labels)
        for name, recs in splits.splits.items()
    }
    meta = {"backbone": info, "classes": list(splits.classes)}
    return distributed.on_rank_zero(write_features, out, parts, meta)


def write_features(out: str | os.PathLike, parts: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``{split: SplitFeatures}`` to ``out`` (.npz or .parquet): one row per image, in split order.

    ``labels`` are class indices, or for multi-label data a 0/1 matrix (images, labels).
    """
    X = np.concatenate([p.X for p in parts.values()]) if parts else np.zeros((0, 0), np.float32)
    paths = [path for p in parts.values() for path in p.paths]
    labels = np.concatenate([p.y for p in parts.values()]).astype(np.int64) if parts else np.zeros(0, np.int64)
    split = [name for name, p in parts.items() for _ in p.paths]
    classes = list(meta["classes"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        _write_parquet(out, X, paths, labels, split, classes)
    else:
        arrays: dict[str, Any] = {
            "features": X,
            "paths": np.array(paths, dtype=str),
            "labels": labels,
            "splits": np.array(split, dtype=str),
            "classes": np.array(classes, dtype=str),
        }
        atomic_write(out, lambda tmp: np.savez(tmp, **arrays))
    skipped = [f.path for p in parts.values() for f in p.failed]
    return {
        "out": str(out),
        "n": len(paths),
        "dim": int(X.shape[1]) if X.ndim == 2 else 0,
        "splits": {k: len(p.paths) for k, p in parts.items()},
        "classes": classes,
        "skipped": skipped,
    }


def _write_parquet(
    out: Path, X: np.ndarray, paths: list[str], labels: np.ndarray, split: list[str], classes: list[str]
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"--out {out}: writing parquet needs pyarrow (pip install pyarrow); or write .npz") from None
    flat = pa.array(np.ascontiguousarray(X, dtype=np.float32).reshape(-1))
    if labels.ndim == 2:  # multi-label: the names of each image's labels, joined as in a manifest
        names = ["|".join(classes[j] for j in np.flatnonzero(row)) for row in labels]
    else:
        names = [classes[i] for i in labels]
    table = pa.table(
        {
            "path": paths,
            "label": labels.tolist(),  # an index, or a multi-label image's 0/1 list
            "class": names,
            "split": split,
            "features": pa.FixedSizeListArray.from_arrays(flat, int(X.shape[1])),
        }
    )
    atomic_write(out, lambda tmp: pq.write_table(table, tmp))
