"""The checks: each turns what was measured on the dataset into :class:`~graft.doctor.issues.Issue` s.

They read plain arrays and records (no files, no model), so each is unit-testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graft.data.records import ImageRecord, SkippedFile
from graft.doctor.duplicates import NearPair
from graft.doctor.issues import Issue
from graft.doctor.labels import class_thresholds, find_label_errors

__all__ = [
    "Corpus",
    "corrupt_issues",
    "exact_groups",
    "duplicate_issues",
    "near_duplicate_issues",
    "label_issues",
    "outlier_issues",
    "imbalance_issue",
    "small_issues",
    "OUTLIER_PERCENTILE",
    "IMBALANCE_RATIO",
    "SMALL_MAJORITY",
]

OUTLIER_PERCENTILE = 99.0
IMBALANCE_RATIO = 5.0  # the ratio at which `graft train` warns, too
SMALL_MAJORITY = 0.5
"""Above this share of small images, smallness is the dataset's nature, not a per-file problem: one issue."""


@dataclass
class Corpus:
    """Every scanned image with its split, and the names to show for splits and classes."""

    records: list[ImageRecord]
    split_of: list[str]
    classes: list[str]
    split_names: dict[str, str]  # canonical split -> folder name shown to people
    auto_split: bool  # val/test were carved out of train by graft, not given as folders

    def path(self, i: int) -> str:
        return str(self.records[i].path)

    def label_name(self, i: int) -> str:
        """The label of record ``i`` as shown: its class, or its labels joined by ``|`` (multi-label)."""
        return "|".join(self.classes[j] for j in self.records[i].label_set)

    def where(self, indices: Sequence[int]) -> str:
        """'train and val' for the splits of ``indices``, in train/val/test order."""
        order = ["train", "val", "test"]
        found = sorted({self.split_of[i] for i in indices}, key=lambda s: order.index(s) if s in order else 9)
        return " and ".join(self.split_names.get(s, s) for s in found)


def corrupt_issues(skipped: Sequence[SkippedFile]) -> list[Issue]:
    """One issue per file that the scan or the full decode could not read."""
    return [
        Issue(
            "corrupt",
            (s.path,),
            1.0,
            f"unreadable ({s.reason}); graft skips it: replace or remove the file",
            ("remove",),
        )
        for s in skipped
    ]


def exact_groups(digests: Sequence[str | None]) -> list[list[int]]:
    """Indices sharing a content hash, groups of two or more, in first-seen order."""
    by_hash: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            by_hash.setdefault(d, []).append(i)
    return [g for g in by_hash.values() if len(g) > 1]


def _labels_note(corpus: Corpus, members: Sequence[int]) -> str:
    names = sorted({corpus.label_name(i) for i in members})
    return f"; labelled {' and '.join(names)}: at most one label is right" if len(names) > 1 else ""


def _leak_note(corpus: Corpus, members: Sequence[int]) -> str:
    held = [s for s in ("val", "test") if any(corpus.split_of[i] == s for i in members)]
    target = " and ".join(corpus.split_names.get(s, s) for s in held) or "one split"
    if corpus.auto_split:
        return f"graft's automatic split puts copies of one image in {corpus.where(members)}; keep one copy"
    return f"the {target} copy inflates the score measured there: remove it from {target}"


def _keep_one(corpus: Corpus, members: Sequence[int], other: str) -> tuple[str, ...]:
    """``keep`` for one copy (the first in train, where there is one: it is what the model learns from), ``other`` for the rest."""
    in_train = [i for i in members if corpus.split_of[i] == "train"]
    kept = in_train[0] if in_train else members[0]
    return tuple("keep" if i == kept else other for i in members)


def duplicate_issues(corpus: Corpus, groups: Sequence[Sequence[int]]) -> list[Issue]:
    """Exact copies: ``leak`` across splits, ``duplicate`` within one."""
    out = []
    for g in groups:
        paths = tuple(corpus.path(i) for i in g)
        actions = _keep_one(corpus, g, "remove")
        what = f"{len(g)} identical files (same bytes) in {corpus.where(g)}"
        if len({corpus.split_of[i] for i in g}) > 1:
            detail = f"{what}: {_leak_note(corpus, g)}{_labels_note(corpus, g)}"
            out.append(Issue("leak", paths, 1.0, detail, actions))
        else:
            out.append(Issue("duplicate", paths, 1.0, f"{what}: keep one{_labels_note(corpus, g)}", actions))
    return out


def _components(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components (union-find) of the graph whose edges are ``pairs``."""
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        parent[find(a)] = find(b)
    comps: dict[int, list[int]] = {}
    for a in parent:
        comps.setdefault(find(a), []).append(a)
    return [sorted(c) for c in comps.values()]


def near_duplicate_issues(corpus: Corpus, pairs: Sequence[NearPair], index: Sequence[int]) -> list[Issue]:
    """Near copies (``pairs`` over rows; ``index`` maps a row to its record): ``leak`` across splits, else ``near_duplicate``."""
    best: dict[int, NearPair] = {}
    for p in pairs:
        for end in (p.i, p.j):
            if end not in best or _strength(p) > _strength(best[end]):
                best[end] = p
    out = []
    for comp in _components([(p.i, p.j) for p in pairs]):
        members = [int(index[r]) for r in comp]
        top = max((best[r] for r in comp), key=_strength)
        how = (
            f"resized or re-encoded copies (thumbnail correlation {top.thumbnail:.3f}, features {top.cosine:.2f})"
            if top.rule == "resized"
            else f"a cropped or edited copy (features {top.cosine:.2f}, far closer than any other image)"
        )
        paths = tuple(corpus.path(i) for i in members)
        labels = _labels_note(corpus, members)
        if len({corpus.split_of[i] for i in members}) > 1:
            detail = f"{how} in {corpus.where(members)}: {_leak_note(corpus, members)}{labels}"
            out.append(Issue("leak", paths, _strength(top), detail, _keep_one(corpus, members, "remove")))
        else:
            detail = f"{how} in {corpus.where(members)}: keep one unless they are distinct shots{labels}"
            out.append(Issue("near_duplicate", paths, _strength(top), detail, _keep_one(corpus, members, "review")))
    return out


def _strength(p: NearPair) -> float:
    """The similarity that made the pair: thumbnail correlation for the resize rule, cosine for the crop rule."""
    return p.thumbnail if p.rule == "resized" else p.cosine


def label_issues(corpus: Corpus, probs: np.ndarray, rows: np.ndarray) -> list[Issue]:
    """Likely label errors among ``rows`` (records) with out-of-fold ``probs``; score: 1 - p(given label)."""
    labels = np.array([corpus.records[i].label for i in rows], np.int64)
    t = class_thresholds(probs, labels)
    out = []
    for c in find_label_errors(probs, labels):
        given, sugg = corpus.classes[c.given], corpus.classes[c.suggested]
        detail = (
            f"labelled {given!r} but looks like {sugg!r}: held-out p({sugg})={c.p_suggested:.2f} "
            f"(typical for {sugg}: {t[c.suggested]:.2f}) vs p({given})={c.p_given:.2f}; "
            f"if it shows {sugg!r}, move it to that class folder"
        )
        out.append(Issue("label", (corpus.path(int(rows[c.row])),), 1 - c.p_given, detail, (f"relabel:{sugg}",)))
    return out


def outlier_issues(corpus: Corpus, scores: np.ndarray, rows: np.ndarray) -> list[Issue]:
    """Images whose held-out OOD score is beyond the dataset's 99th percentile."""
    if len(scores) < 10:
        return []
    cut = float(np.percentile(scores, OUTLIER_PERCENTILE))
    out = []
    for k in np.flatnonzero(scores > cut):
        rec = corpus.records[int(rows[k])]
        detail = (
            f"unlike the rest of the dataset (held-out OOD score {scores[k]:.3f}; 99th percentile {cut:.3f}): "
            f"check that it belongs in {corpus.label_name(int(rows[k]))!r} at all"
        )
        out.append(Issue("outlier", (str(rec.path),), float(scores[k]), detail, ("review",)))
    return out


def imbalance_issue(root: str, counts: dict[str, int]) -> list[Issue]:
    """One issue when the largest training class has over 5x the images of the smallest."""
    if len(counts) < 2 or min(counts.values()) <= 0:
        return []
    big, small = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
    ratio = counts[big] / counts[small]
    if ratio <= IMBALANCE_RATIO:
        return []
    detail = (
        f"classes are imbalanced: {big!r} has {counts[big]} training images, {small!r} {counts[small]} "
        f"({ratio:.1f}x); add {small!r} images, or train with --class-weight balanced"
    )
    return [Issue("imbalance", (root,), float(ratio), detail, ("review",))]


def small_issues(corpus: Corpus, input_side: int, root: str) -> list[Issue]:
    """Images whose shorter side is under half the network input (one issue if most of the dataset is)."""
    limit = input_side / 2
    small = [i for i, r in enumerate(corpus.records) if r.width and r.height and min(r.width, r.height) < limit]
    if not small:
        return []
    if len(small) > SMALL_MAJORITY * len(corpus.records):
        detail = (
            f"{len(small)} of {len(corpus.records)} images have a shorter side under {limit:g} px (half the "
            f"{input_side} px network input): a low-resolution dataset; graft upsamples, nothing to fix per file"
        )
        paths = tuple(corpus.path(i) for i in small)
        return [Issue("small", paths, len(small) / len(corpus.records), detail, ("none",) * len(paths))]
    out = []
    for i in small:
        r = corpus.records[i]
        detail = (
            f"{r.width}x{r.height} px, under half the {input_side} px network input: upsampled, "
            "so fine detail is missing; use a larger copy if there is one"
        )
        out.append(Issue("small", (str(r.path),), limit / min(r.width, r.height), detail, ("review",)))
    return out
