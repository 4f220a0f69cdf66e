"""Ranking unlabelled images on their features (and a model's probabilities): pure numpy/scikit-learn.

* Cold start (no model): k-means on the centred, unit-length features into as many clusters as
  images wanted; each cluster's most typical image (nearest its centre) comes first, clusters
  largest first, and no cluster gets a second pick before every cluster has its first.
* With a model (:data:`STRATEGIES`), ``diverse`` (default) blends two rankings by how much the
  model's uncertainty can be trusted, its *skill*: the out-of-fold (cross-validated) accuracy of
  the head on its own labelled images, chance-corrected, ``(acc - 1/k) / (1 - 1/k)`` in [0, 1]
  (0 where there were too few labels to cross-validate; the lower end of its 95% interval where
  the number of images it was measured on is known). A share ``skill`` of the picks is
  uncertainty-weighted diversity (Zhdanov 2019, "Diverse mini-batch active learning"): keep the
  ``PREFILTER`` x n images of lowest margin, cluster them into as many groups weighting each image
  by its uncertainty, take the image nearest each centre. The rest is coverage (TypiClust, Hacohen
  et al. 2022, "Active learning on a budget"): k-means of labelled and unlabelled images into
  ``|labelled| + m`` clusters, the most typical image (densest neighbourhood) of the largest
  clusters holding no labelled image, taken in turn from each class the model predicts for them
  (so a page is not all one class where the largest clusters are). A head that is barely better than chance out of fold gets
  its picks by coverage, where uncertainty sampling is known to lose to random choice; a skilled
  one by uncertainty, where it wins. ``margin`` is plain uncertainty (the n smallest margins),
  ``random`` a seeded draw: the baselines of ``bench/active_learning.py``.
* Images the model calls "unknown" (OOD score over its threshold) whose nearest neighbours are
  mostly unknown too form groups (connected components of that neighbour graph): a class the
  model has never seen. Each group of at least :data:`MIN_GROUP` images gets one pick, its most
  typical member, in up to a fifth of the slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graft.features.unlabeled import unit_centred

__all__ = [
    "MIN_GROUP",
    "PREFILTER",
    "STRATEGIES",
    "Pick",
    "cold_start",
    "margins",
    "rank_with_model",
    "skill",
    "typical_uncovered",
    "unknown_groups",
]

STRATEGIES = ("diverse", "margin", "random")
PREFILTER = 10  # diverse: cluster the PREFILTER * n most uncertain images (Zhdanov's beta)
MIN_GROUP = 3  # unknown images that cluster: at least this many
_NEIGHBOURS = 5  # neighbours looked at to call an unknown image "clustered"
_TYPICAL_K = 20  # TypiClust: typicality = 1 / mean distance to this many neighbours in the cluster
_MAX_CLUSTERS = 500  # TypiClust's cap on |labelled| + m clusters
_BLOCK = 1024  # rows per block of a similarity matrix: memory ~ _BLOCK x pool floats, whatever the pool


@dataclass(frozen=True)
class Pick:
    """One suggested image: its row, score (higher: label it sooner), why, and its cluster (-1: none)."""

    row: int
    score: float
    reason: str
    cluster: int = -1
    group_size: int = 0


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (0: a coin toss, 1: certain)."""
    if probs.shape[1] < 2:
        return np.ones(len(probs), np.float32)
    top = np.sort(probs, 1)[:, -2:]
    return (top[:, 1] - top[:, 0]).astype(np.float32)


def _kmeans(Z: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, squared distance of each row to its centre) of a seeded k-means.

    On one thread: on a busy 2-core machine OpenMP's spinning threads made a 600 x 1,280 k-means
    (k = 60) take 28 s instead of 1.5 s.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if k > 50:  # as TypiClust: mini-batch k-means where clusters are many (seconds, not minutes)
            from sklearn.cluster import MiniBatchKMeans

            km = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=2048)
            km.fit(Z, sample_weight=weights)
        else:
            km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z, sample_weight=weights)
    d2 = ((Z - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    return km.labels_.astype(np.int64), d2


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def cold_start(X: np.ndarray, n: int, seed: int = 0) -> list[Pick]:
    """``n`` picks covering every k-means cluster (typical images first) before a second pick from any."""
    n = min(int(n), len(X))
    if n <= 0:
        return []
    Z = unit_centred(X)
    labels, d2 = _kmeans(Z, n, seed) if n > 1 else (np.zeros(len(X), np.int64), ((Z - Z.mean(0)) ** 2).sum(1))
    sizes = np.bincount(labels)
    order = sorted(range(len(sizes)), key=lambda c: (-sizes[c], c))
    members = {c: list(np.flatnonzero(labels == c)[np.argsort(d2[labels == c], kind="stable")]) for c in order}
    picks: list[Pick] = []
    depth = 0
    while len(picks) < n:
        for k, c in enumerate(order):  # cluster k + 1: the (k + 1)-th largest
            if depth < len(members[c]) and len(picks) < n:
                i = int(members[c][depth])
                what = "most typical" if depth == 0 else f"typical #{depth + 1}"
                picks.append(
                    Pick(i, float(-d2[i]), f"{what} of cluster {k + 1} ({_images(int(sizes[c]))})", k, int(sizes[c]))
                )
        depth += 1
    return picks


def unknown_groups(Z: np.ndarray, unknown: np.ndarray) -> list[np.ndarray]:
    """Groups (row arrays, largest first) of unknown rows whose neighbours are mostly unknown too."""
    idx = np.flatnonzero(unknown)
    if len(idx) < MIN_GROUP:
        return []
    k = min(_NEIGHBOURS, len(Z) - 1)
    nn = _nearest(Z, idx, k)
    clustered = unknown[nn].sum(1) * 2 > k  # most of its neighbours are unknown as well
    pos = {int(r): j for j, r in enumerate(idx)}
    parent = list(range(len(idx)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for j in np.flatnonzero(clustered):
        for r in nn[j]:
            m = pos.get(int(r))
            if m is not None and clustered[m]:
                parent[find(int(j))] = find(m)
    roots: dict[int, list[int]] = {}
    for j in np.flatnonzero(clustered):
        roots.setdefault(find(int(j)), []).append(int(idx[j]))
    groups = [np.array(g) for g in roots.values() if len(g) >= MIN_GROUP]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def _nearest(Z: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k): the ``k`` rows of ``Z`` most similar to each of ``rows`` (itself left out), nearest first.

    In blocks of :data:`_BLOCK` rows, so memory stays ~ _BLOCK x len(Z) floats: the whole
    (rows x pool) matrix and its argsort took 15 GiB for 20,000 "unknown" rows of a 100,000-image pool.
    """
    out = np.empty((len(rows), k), np.int64)
    for s in range(0, len(rows), _BLOCK):
        block = rows[s : s + _BLOCK]
        S = Z[block] @ Z.T
        S[np.arange(len(block)), block] = -np.inf
        top = np.argpartition(-S, k - 1, 1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, 1), 1, kind="stable")
        out[s : s + len(block)] = np.take_along_axis(top, order, 1)
    return out


def _most_typical(Z: np.ndarray, rows: np.ndarray) -> int:
    centre = Z[rows].mean(0)
    return int(rows[np.argmax(Z[rows] @ centre)])


def skill(oof_accuracy: float | None, n_classes: int, n_images: int | None = None) -> float:
    """Chance-corrected out-of-fold accuracy in [0, 1]: how far the model's uncertainty can be trusted.

    ``n_images``: how many images the accuracy was measured on. The accuracy used is then the
    lower end of its 95% Wilson interval (scipy's ``binomtest``), so that a head right on 4 of 4
    images (a 2-class head from two labels each) is not trusted like one right on 400: its
    uncertainty then points anywhere near a boundary it has barely seen (bench: such a page was 17
    dogs and 3 cats, and the next head fell from 0.94 to 0.88).
    """
    if oof_accuracy is None or n_classes < 2:
        return 0.0
    acc = float(oof_accuracy)
    if n_images:
        from scipy.stats import binomtest

        k = int(round(min(max(acc, 0.0), 1.0) * n_images))
        acc = float(binomtest(k, int(n_images)).proportion_ci(0.95, method="wilson").low)
    chance = 1.0 / n_classes
    return float(np.clip((acc - chance) / (1.0 - chance), 0.0, 1.0))


def _typicality(Z: np.ndarray) -> np.ndarray:
    """1 / mean distance to the nearest ``_TYPICAL_K`` other rows (TypiClust's density)."""
    if len(Z) < 2:
        return np.ones(len(Z))
    k = min(_TYPICAL_K, len(Z) - 1)
    out = np.empty(len(Z))
    for s in range(0, len(Z), _BLOCK):
        d = np.sqrt(np.maximum(2.0 - 2.0 * (Z[s : s + _BLOCK] @ Z.T), 0.0))  # unit rows: Euclidean from the cosine
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        out[s : s + _BLOCK] = 1.0 / (np.sort(np.partition(d, k - 1, 1)[:, :k], 1).mean(1) + 1e-8)
    return out


def typical_uncovered(
    Z: np.ndarray, Z_lab: np.ndarray, m: int, seed: int, predicted: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """TypiClust: ``m`` (row, cluster size) picks, the most typical row of the largest clusters without a label.

    ``Z`` (pool) and ``Z_lab`` (labelled) are unit-length rows centred alike. Clusters: k-means of
    both into ``len(Z_lab) + m`` groups (at most :data:`_MAX_CLUSTERS`). Where fewer uncovered
    clusters than ``m`` exist, the largest clusters give a second typical row, and so on.
    ``predicted`` (a model's class per pool row): the picks are balanced over it (:func:`_balanced`).
    """
    m = min(int(m), len(Z))
    if m <= 0:
        return []
    both = np.concatenate([Z, Z_lab]) if len(Z_lab) else Z
    k = max(1, min(len(Z_lab) + m, _MAX_CLUSTERS, len(both)))
    labels = _kmeans(both, k, seed)[0] if k > 1 else np.zeros(len(both), np.int64)
    pool_labels, covered = labels[: len(Z)], set(labels[len(Z) :].tolist())
    sizes = np.bincount(labels, minlength=k)
    # uncovered clusters first, then the largest
    order = sorted(range(k), key=lambda c: (c in covered, -sizes[c], c))
    members = {}
    for c in order:
        rows = np.flatnonzero(pool_labels == c)
        if len(rows):
            # both[labels == c] lists the pool rows first (Z comes first in ``both``), in row order
            members[c] = rows[np.argsort(-_typicality(both[labels == c])[: len(rows)], kind="stable")]
    # every cluster's first pick (in cluster order), then every cluster's second, ...
    want = m if predicted is None else len(Z)
    picks: list[tuple[int, int]] = []
    depth = 0
    while len(picks) < want:
        for c in members:
            if depth < len(members[c]) and len(picks) < want:
                picks.append((int(members[c][depth]), int(sizes[c])))
        depth += 1
    return picks if predicted is None else _balanced(picks, predicted, m)


def _balanced(ranked: list[tuple[int, int]], predicted: np.ndarray, m: int) -> list[tuple[int, int]]:
    """``m`` of ``ranked`` (best first), taken in turn from each predicted class, fewest picks first.

    Coverage alone follows the clusters, and on two well-separated classes the largest clusters
    can all sit in one of them: a page of typical images of one class, and a head that then leans
    that way. Taking the next-best pick of the class with the fewest picks so far keeps the page
    as balanced as the pool allows while keeping coverage's order within each class.
    """
    queues: dict[int, list[tuple[int, int]]] = {}
    for pick in ranked:
        queues.setdefault(int(predicted[pick[0]]), []).append(pick)
    counts = dict.fromkeys(queues, 0)
    heads = dict.fromkeys(queues, 0)
    out: list[tuple[int, int]] = []
    position = {pick[0]: i for i, pick in enumerate(ranked)}
    while len(out) < m:
        open_ = [c for c in queues if heads[c] < len(queues[c])]
        if not open_:
            break
        c = min(open_, key=lambda k: (counts[k], position[queues[k][heads[k]][0]]))
        out.append(queues[c][heads[c]])
        heads[c] += 1
        counts[c] += 1
    return out


def _by_model(Z: np.ndarray, unc: np.ndarray, n: int, strategy: str, seed: int) -> list[int]:
    """Rows (most uncertain first) chosen by ``strategy`` among all of ``Z``."""
    if strategy == "random":
        return [int(i) for i in np.random.default_rng(seed).permutation(len(Z))[:n]]
    order = np.argsort(-unc, kind="stable")
    if strategy == "margin" or n >= len(Z):
        return [int(i) for i in order[:n]]
    pool = order[: min(len(Z), PREFILTER * n)]
    labels, d2 = _kmeans(Z[pool], n, seed, weights=np.maximum(unc[pool], 1e-3))
    chosen = [int(pool[np.flatnonzero(labels == c)[np.argmin(d2[labels == c])]]) for c in np.unique(labels)]
    return sorted(chosen, key=lambda i: (-unc[i], i))


def rank_with_model(
    X: np.ndarray,
    probs: np.ndarray,
    unknown: np.ndarray | None,
    n: int,
    strategy: str = "diverse",
    seed: int = 0,
    labeled: np.ndarray | None = None,
    trust: float | None = None,
) -> list[Pick]:
    """``n`` picks from a model's probabilities: unknown groups first (at most n/5), then by ``strategy``.

    ``labeled``: features of the images labelled already (coverage counts their clusters as
    covered). ``trust``: the model's :func:`skill` (``diverse``: the share of uncertainty picks;
    None: all of them, as without any estimate of it).
    """
    n = min(int(n), len(X))
    mean = np.asarray(X, np.float64).mean(0)
    Z = unit_centred(X, mean)
    unc = 1.0 - margins(probs)
    picks: list[Pick] = []
    taken: set[int] = set()
    if unknown is not None and unknown.any() and strategy != "random":
        for g, rows in enumerate(unknown_groups(Z, unknown)[: max(1, n // 5)]):
            i = _most_typical(Z, rows)
            # far from every training image: a new class, or a new kind of image of a known one
            # (bench/new_class.py: on a near shift the flag fires no more on the new class)
            why = f"unknown to the model, like {len(rows) - 1} other unlabelled images: a new class or a new kind of image?"
            picks.append(Pick(i, 1.0 + len(rows) / len(X), why, -2 - g, len(rows)))
            taken.add(i)
    rest = np.array([i for i in range(len(X)) if i not in taken], np.int64)
    want = n - len(picks)
    if want <= 0 or not len(rest):
        return picks
    n_cover = 0 if strategy != "diverse" or trust is None else int(round(want * (1.0 - trust)))
    if n_cover:
        Z_lab = unit_centred(labeled, mean) if labeled is not None else np.zeros((0, Z.shape[1]), np.float32)
        predicted = np.asarray(probs).argmax(1)[rest]
        for i, size in typical_uncovered(Z[rest], Z_lab, n_cover, seed, predicted):
            r = int(rest[i])
            why = f"typical of a cluster of {_images(size)} with no label yet (the model is not yet trusted)"
            picks.append(Pick(r, float(unc[r]), why))
            taken.add(r)
        rest = np.array([i for i in rest if i not in taken], np.int64)
    if len(picks) < n and len(rest):
        for i in _by_model(Z[rest], unc[rest], n - len(picks), strategy, seed):
            r = int(rest[i])
            why = "uncertain" if strategy != "random" else "random draw"
            if unknown is not None and unknown[r]:
                why += "; unknown to the model"
            picks.append(Pick(r, float(unc[r]), why))
    return picks
