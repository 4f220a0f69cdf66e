"""The artifact description: everything a trained model needs besides its weights.

Like timm's ``PretrainedCfg`` or torchvision's ``Weights.transforms``, one object
carries the class names, the exact evaluation preprocessing, the backbone and head
description, the training record and the metrics. Model folders (``config.json``),
ONNX files (``metadata_props``), the run folder and the server all read and write
it through :meth:`ArtifactSpec.to_dict` / :meth:`ArtifactSpec.from_dict`, so a
model never meets a preprocessing other than the one it was trained with.

Torch-free: the ONNX-only predictor reads it too.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from graft.exceptions import ModelFileError
from graft.transforms.eval import Preprocessing

__all__ = ["ArtifactSpec", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "runtime_versions"]

MODEL_FORMAT = "graft-model"
MODEL_FORMAT_VERSION = 1
#: The keys read from a config; anything else in an untrusted file is ignored.
_KEYS = (
    "classes",
    "preprocessing",
    "backbone",
    "head",
    "training",
    "metrics",
    "versions",
    "created",
    "ood",
    "split",
    "thresholds",
)
_ARCH = re.compile(r"^[A-Za-z0-9_.\-]+$")  # a timm name: no hub scheme ("hf-hub:", "local-dir:")
_MAX_CLASSES = 100_000
_MAX_INPUT = 4096


def runtime_versions() -> dict[str, str]:
    """Library versions recorded in every artifact and report (torch/timm only when already imported)."""
    import sys

    from graft._version import __version__

    out = {"graft": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "timm", "onnxruntime"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


@dataclass(frozen=True)
class ArtifactSpec:
    """Description of a trained classifier (see the module docstring).

    Attributes:
        classes: class names in logit order.
        preprocessing: the eval preprocessing the network expects.
        backbone: name, architecture, weights source and sha256, fine_tuned.
        head: the head spec (type, in_features, num_classes, dropout, hidden).
        training: parameters, per-stage summaries and curves of the training run.
        metrics: validation metrics of this model.
        versions: library versions that wrote it.
        created: ISO time of writing.
        ood: the out-of-distribution score (method, threshold, pass rate); empty when the
            model has none (older models, or heads on un-pooled feature maps).
        thresholds: a multi-label model's decision threshold per label (empty: single-label, softmax).
        split: how the training folder was split (layout, the splits graft carved out, seed,
            fractions, and a fingerprint of every image's split; see
            :meth:`~graft.data.records.DatasetSplits.split_record`), so ``evaluate`` on that folder
            scores the same held-out images; empty in older models.
    """

    classes: tuple[str, ...]
    preprocessing: Preprocessing
    backbone: Mapping[str, Any] = field(default_factory=dict)
    head: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    ood: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    thresholds: tuple[float, ...] = ()

    @property
    def multi_label(self) -> bool:
        """A multi-label model: per-label sigmoid probabilities, a label set above ``thresholds``."""
        return bool(self.thresholds)

    @property
    def ood_threshold(self) -> float | None:
        """Scores above this mean "unknown"; None when the model has no OOD score."""
        t = self.ood.get("threshold")
        return float(t) if isinstance(t, (int, float)) else None

    @property
    def architecture(self) -> str:
        """The timm architecture of the backbone."""
        return str(self.backbone.get("architecture", ""))

    def stamped(self) -> ArtifactSpec:
        """A copy with the creation time and library versions of now (at save time)."""
        return replace(self, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), versions=runtime_versions())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the body of ``config.json`` and of the ONNX metadata."""
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "created": self.created,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "backbone": dict(self.backbone),
            "head": dict(self.head),
            "training": dict(self.training),
            "metrics": dict(self.metrics),
            "versions": dict(self.versions),
            "ood": dict(self.ood),
            "split": dict(self.split),
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ArtifactSpec:
        """Validate and read a description written by :meth:`to_dict`.

        Only known keys are read, the architecture must be a plain timm name (no hub
        scheme, so loading never touches the network) and sizes must be sane.

        Raises:
            ModelFileError: one line naming ``source`` and what is wrong.
        """
        if not isinstance(data, Mapping):
            raise ModelFileError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("classes", "preprocessing", "backbone") if k not in data]
        if missing:
            raise ModelFileError(f"{source}: missing {', '.join(missing)}; the model file is damaged or not graft's")
        classes = data["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ModelFileError(f"{source}: 'classes' must be a non-empty list of names")
        if len(classes) > _MAX_CLASSES:
            raise ModelFileError(f"{source}: {len(classes)} classes is more than graft supports ({_MAX_CLASSES})")
        sections = {
            k: data.get(k) or {} for k in ("backbone", "head", "training", "metrics", "versions", "ood", "split")
        }
        for k, v in sections.items():
            if not isinstance(v, Mapping):
                raise ModelFileError(f"{source}: '{k}' must be a JSON object, got {type(v).__name__}")
        arch = sections["backbone"].get("architecture")
        if arch is not None and (not isinstance(arch, str) or not _ARCH.match(arch)):
            raise ModelFileError(f"{source}: backbone architecture {arch!r} is not a plain timm model name")
        pre = _preprocessing(data["preprocessing"], source)
        return cls(
            classes=tuple(classes),
            preprocessing=pre,
            backbone=dict(sections["backbone"]),
            head=dict(sections["head"]),
            training=dict(sections["training"]),
            metrics=dict(sections["metrics"]),
            versions=dict(sections["versions"]),
            created=str(data.get("created", "")),
            ood=dict(sections["ood"]),
            split=dict(sections["split"]),
            thresholds=_thresholds(data.get("thresholds"), len(classes), source),
        )


def _thresholds(raw: Any, n_classes: int, source: str) -> tuple[float, ...]:
    """A multi-label model's per-label decision thresholds: one number in (0, 1) per class (none: single-label)."""
    if raw is None or raw == []:
        return ()
    ok = isinstance(raw, list) and len(raw) == n_classes
    ok = ok and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in raw)
    if not ok:
        raise ModelFileError(f"{source}: 'thresholds' must list one number in (0, 1) per class ({n_classes})")
    return tuple(float(t) for t in raw)


def _preprocessing(raw: Any, source: str) -> Preprocessing:
    if not isinstance(raw, Mapping):
        raise ModelFileError(f"{source}: 'preprocessing' must be a JSON object")
    try:
        pre = Preprocessing.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: preprocessing is not valid ({e})") from None
    if not all(0 < s <= _MAX_INPUT for s in pre.input_size):
        raise ModelFileError(f"{source}: input size {pre.input_size} is outside 1..{_MAX_INPUT} pixels")
    return pre
