"""Sharded embedding: each process of a job embeds every N-th missing file, then all read the merged result.

The feature cache keys rows by file, so the shares never write the same entry: each
rank appends its own rows (the cache's lock covers only the append of one batch, not
the embedding, so the ranks never wait on each other while they compute), and after
an all-gather every rank re-reads the index and finds every row. Features are
therefore the ones a single process would compute, row for row. Without a cache the
rows themselves are all-gathered.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graft import distributed
from graft.data.records import SkippedFile
from graft.features.cache import FeatureCache
from graft.features.embedder import Embedder

__all__ = ["embed_shards", "fill_cache_shards"]


def _scaled(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """Rank 0's bar counts its own share times the world size, so it ends near 100% with the job."""
    if progress is None:
        return None
    w = distributed.world_size()
    return lambda k: progress(k * w)


def fill_cache_shards(
    paths: Sequence[str],
    todo: Sequence[int],
    keys: Sequence[str | None],
    cache: FeatureCache,
    embedder: Embedder,
    *,
    transform: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, SkippedFile]]:
    """Embed this rank's share of ``todo`` into ``cache``; every rank's failures, by position, in position order.

    ``todo`` must be the same list on every rank (rank 0's, broadcast). Returns once every
    rank has written its rows (the all-gather is the barrier), with ``cache`` re-read.
    """
    mine = distributed.shard(list(todo))
    bad: list[tuple[int, str]] = []
    if mine:
        embedder.engine(len(todo))  # the runtime one process would pick for the whole job, not for a share

        def write(ids: np.ndarray, feats: np.ndarray) -> None:
            cache.add([str(keys[mine[j]]) for j in ids], feats)

        res = embedder.embed_paths(
            [paths[i] for i in mine], transform=transform, progress=_scaled(progress), on_batch=write
        )
        pos_of = {paths[i]: i for i in mine}
        bad = [(pos_of[f.path], f.reason) for f in res.failed]
    merged = sorted(b for part in distributed.all_gather_object(bad) for b in part)
    cache.refresh()
    return [(i, SkippedFile(paths[i], reason)) for i, reason in merged]


def embed_shards(
    paths: Sequence[str],
    embedder: Embedder,
    *,
    transform: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[SkippedFile], int]:
    """No cache: embed this rank's share of ``paths``, all-gather the rows; (X, ok, failed, n_embedded) in input order."""
    mine = list(range(len(paths)))[distributed.rank() :: distributed.world_size()]
    if mine:
        embedder.engine(len(paths))  # the runtime one process would pick for the whole job
    res = embedder.embed_paths([paths[i] for i in mine], transform=transform, progress=_scaled(progress))
    part = (res.features, np.asarray([mine[j] for j in res.ok_indices], dtype=np.int64), res.failed)
    parts = distributed.all_gather_object(part)
    full = [p for p in parts if len(p[1])]
    X = np.concatenate([p[0] for p in full]) if full else np.zeros((0, 0), np.float32)
    ok = np.concatenate([p[1] for p in full]) if full else np.zeros(0, np.int64)
    order = np.argsort(ok, kind="stable")
    pos = {p: i for i, p in enumerate(paths)}
    failed = sorted((f for p in parts for f in p[2]), key=lambda f: pos.get(f.path, 0))
    return X[order], ok[order], failed, len(paths)
