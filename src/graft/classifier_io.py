"""What a model folder keeps of a :class:`graft.Classifier`, both ways: its spec on save, its learned state on load."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from graft.artifact.spec import ArtifactSpec

__all__ = ["LEARNED_FROM_MODEL", "SAFE_PARAMS", "params_from_record", "recorded_params", "restore", "spec_of"]

#: Parameters a model folder may set when loaded: never a path to read or write (``weights``,
#: ``cache_dir``) nor a resource size, so an untrusted folder cannot steer graft outside it.
SAFE_PARAMS = {
    "backbone",
    "input_size",
    "crop_pct",
    "head",
    "C",
    "dropout",
    "hidden",
    "features",
    "augment_views",
    "class_weight",
    "seed",
    "precision",
    "strict",
}

#: What :meth:`Classifier.load` restores, read from the model folder: learned attribute -> reader.
LEARNED_FROM_MODEL: dict[str, Callable[[Any], Any]] = {
    "model_": lambda lm: lm.net,
    "classes_": lambda lm: lm.classes,
    "preprocessing_": lambda lm: lm.preprocessing,
    "head_spec_": lambda lm: lm.head_spec,
    "backbone_info_": lambda lm: dict(lm.spec.backbone),
    "metrics_": lambda lm: dict(lm.spec.metrics),
    "ood_": lambda lm: dict(lm.spec.ood),
    "fine_tuned_": lambda lm: bool(lm.spec.backbone.get("fine_tuned", False)),
    "history_": lambda lm: dict(lm.spec.training.get("history", {})),
    "stage_metrics_": lambda lm: dict(lm.spec.training.get("stages", {})),
    "ladder_": lambda lm: lm.spec.training.get("ladder"),
    "spec_": lambda lm: lm.spec,
    "path_": lambda lm: lm.path,
    "split_": lambda lm: dict(lm.spec.split),
    "thresholds_": lambda lm: tuple(lm.spec.thresholds),
}


def recorded_params(clf: Any) -> dict[str, Any]:
    """The parameters as JSON records them (a run's ``run.json``, a model's ``config.json``): paths as
    text, options objects as dicts; never the reporter nor the cache folder."""
    out: dict[str, Any] = {}
    for k, v in clf.get_params().items():
        if k in {"progress", "cache_dir"}:
            continue
        if isinstance(v, os.PathLike):
            v = str(v)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = dataclasses.asdict(v)
        out[k] = v
    return out


def params_from_record(cls: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters from :func:`recorded_params`' dict (unknown names dropped)."""
    from graft.data.options import ManifestOptions

    params = {k: v for k, v in saved.items() if k in cls._get_param_names() and k != "progress"}
    if isinstance(params.get("manifest"), dict):
        params["manifest"] = ManifestOptions(**params["manifest"])
    return params


def spec_of(clf: Any) -> ArtifactSpec:
    """The :class:`ArtifactSpec` of a fitted classifier: classes, preprocessing, backbone, head, training, metrics."""
    params = recorded_params(clf)
    training = {
        "params": params,
        "head": getattr(clf, "head_info_", {}),
        "fine_tuned": bool(clf.fine_tuned_),
        "fine_tune": getattr(clf, "fine_tune_config_", None),
        "stages": getattr(clf, "stage_metrics_", {}),
        "history": getattr(clf, "history_", {}),
        "ladder": getattr(clf, "ladder_", None),
    }
    metrics = {k: v for k, v in getattr(clf, "metrics_", {}).items() if k != "reliability"}
    backbone = {**clf.backbone_info_, "fine_tuned": bool(clf.fine_tuned_)}
    return ArtifactSpec(
        tuple(clf.classes_),
        clf.preprocessing_,
        backbone,
        clf.head_spec_.to_dict(),
        training,
        metrics,
        ood=getattr(clf, "ood_", {}),
        split=getattr(clf, "split_", {}),
        thresholds=tuple(float(t) for t in getattr(clf, "thresholds_", ())),
    )


def restore(cls: Any, lm: Any, device: tuple[str, str], precision: str | None) -> Any:
    """A fitted ``cls`` from a loaded model (:class:`~graft.artifact.model_dir.LoadedModel`).

    ``device``: (as asked, as resolved). Only :data:`SAFE_PARAMS` are taken from the file's
    parameters: never a path to read or write nor a resource size.
    """
    saved = lm.spec.training.get("params", {})
    names = set(cls._get_param_names()) & SAFE_PARAMS
    obj = cls(**{k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in names})
    obj.device, obj.device_ = device
    obj.precision = precision or obj.precision
    for name, read in LEARNED_FROM_MODEL.items():
        setattr(obj, name, read(lm))
    return obj
