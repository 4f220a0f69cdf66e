"""graft: a folder of labelled images in, an accurate image classifier out.

Transfer learning on a frozen ImageNet backbone (features cached on disk, a head
trained in seconds), optional fine-tuning of the top blocks, and a self-describing,
pickle-free model directory that predict, export and serve all read.

Example:
    >>> import graft
    >>> clf = graft.Classifier(backbone="efficientnet_lite0").fit("data/flowers")
    >>> clf.fine_tune(epochs=5)          # optional stage 2
    >>> clf.evaluate("data/flowers")["accuracy"]
    >>> clf.predict(["rose.jpg"], top_k=3)
    >>> clf.save("flowers-model"); clf = graft.load("flowers-model")
    >>> graft.doctor("data/flowers").issues  # corrupt files, leaks, label errors, ... before training
    >>> graft.open_predictor("flowers.onnx").predict(["rose.jpg"])  # an exported model, without torch
"""

from __future__ import annotations

from typing import Any

from graft._version import __version__
from graft.exceptions import (
    DataError,
    ExportError,
    GraftError,
    ImageDecodeError,
    InvalidParameterError,
    ModelFileError,
    NotFittedError,
    UnknownBackboneError,
    WeightsMismatchError,
    WeightsNotFoundError,
    WorkerTimeoutError,
)

__all__ = [
    "__version__",
    "Classifier",
    "load",
    "doctor",
    "learning_curve",
    "LearningCurve",
    "GraftError",
    "DataError",
    "ImageDecodeError",
    "InvalidParameterError",
    "open_predictor",
    "UnknownBackboneError",
    "WeightsNotFoundError",
    "WeightsMismatchError",
    "NotFittedError",
    "ModelFileError",
    "ExportError",
    "WorkerTimeoutError",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import graft` stays light (no torch) for the ONNX runtime and the CLI's --help.
    if name in {"Classifier", "load"}:
        from graft import classifier

        return getattr(classifier, name)
    if name == "open_predictor":  # a model folder, a run folder or an exported .onnx (no torch for .onnx)
        from graft.predict.open import open_predictor

        return open_predictor
    if name in {"learning_curve", "LearningCurve"}:
        from graft import curve

        return getattr(curve, name)
    if name == "doctor":  # the package, callable: graft.doctor(data_dir) and graft.doctor.DoctorReport both work
        import importlib

        return importlib.import_module("graft.doctor")
    raise AttributeError(f"module 'graft' has no attribute {name!r}")
