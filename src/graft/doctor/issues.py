"""What the doctor reports: one :class:`Issue` per problem, ranked, in a :class:`DoctorReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Issue", "DoctorReport"]

KINDS: tuple[str, ...] = ("corrupt", "leak", "duplicate", "label", "near_duplicate", "outlier", "imbalance", "small")
"""Issue kinds from most to least severe: an unreadable file or a train/val leak falsifies a run or its
score outright; a wrong label or a duplicate biases it; outliers, imbalance and small images only deserve a look."""

_RANK = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Issue:
    """One problem found in the dataset.

    Attributes:
        kind: one of :data:`KINDS`.
        paths: the files involved (a duplicate group, one image, or the dataset folder).
        score: how strong the evidence is within its kind, higher is worse (a cosine
            similarity, a held-out doubt in the given label, an OOD score, a ratio).
        detail: one human-readable sentence: what was found and what to do.
        actions: the suggested action per path (``keep``, ``remove``, ``review``,
            ``relabel:CLASS``, or ``none``), for the fix plan; empty means ``review`` for all.
    """

    kind: str
    paths: tuple[str, ...]
    score: float
    detail: str
    actions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: kind, paths, score, detail, and the suggested action per path."""
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "score": float(self.score),
            "detail": self.detail,
            "actions": list(self.suggested_actions()),
        }

    def suggested_actions(self) -> tuple[str, ...]:
        """One action per path (``review`` where the check suggested none)."""
        return self.actions if len(self.actions) == len(self.paths) else ("review",) * len(self.paths)

    def sort_key(self) -> tuple[int, float, tuple[str, ...]]:
        """Severity order: kind first (see :data:`KINDS`), then stronger evidence, then paths (stable output)."""
        return (_RANK.get(self.kind, len(KINDS)), -float(self.score), self.paths)


@dataclass
class DoctorReport:
    """Result of :func:`graft.doctor`: the issues, most severe first, and what they were measured on.

    Attributes:
        root: the dataset folder.
        issues: every issue found, sorted by :meth:`Issue.sort_key`.
        n_images: image files found (readable or not), per split under ``summary["totals"]``.
        classes: class names.
        summary: the scan's overview (counts per split and class, layout).
        settings: the backbone, input size and thresholds used (to reproduce or compare runs).
        timings: seconds per step.
    """

    root: str
    issues: list[Issue]
    n_images: int
    classes: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.issues = sorted(self.issues, key=Issue.sort_key)

    def counts(self) -> dict[str, int]:
        """Issues per kind (every kind listed, zeros included)."""
        out = dict.fromkeys(KINDS, 0)
        for issue in self.issues:
            out[issue.kind] = out.get(issue.kind, 0) + 1
        return out

    def by_kind(self, kind: str) -> list[Issue]:
        """The issues of one kind, most severe first."""
        return [i for i in self.issues if i.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"issues": [{kind, paths, score, detail}, ...], "counts": ..., ...}``."""
        return {
            "root": self.root,
            "n_images": self.n_images,
            "classes": list(self.classes),
            "counts": self.counts(),
            "issues": [i.to_dict() for i in self.issues],
            "summary": self.summary,
            "settings": self.settings,
            "timings": {k: round(float(v), 3) for k, v in self.timings.items()},
        }
