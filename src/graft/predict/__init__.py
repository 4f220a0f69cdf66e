"""Prediction: one :class:`Predictor` interface, PyTorch and ONNX Runtime behind it, one opener.

``graft.predict.onnx`` imports neither torch nor timm; ``graft.predict.torch`` does.

Example:
    >>> from graft.predict import open_predictor
    >>> open_predictor("runs/hym/model").predict(["bee.jpg"], top_k=2)
"""

from graft.predict.base import Predictor
from graft.predict.open import BACKENDS, is_onnx_file, open_predictor
from graft.predict.results import prediction_rows, softmax, top_k_results

__all__ = ["BACKENDS", "Predictor", "is_onnx_file", "open_predictor", "prediction_rows", "softmax", "top_k_results"]
