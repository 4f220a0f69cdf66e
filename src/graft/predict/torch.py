"""Predict with PyTorch: a trained :class:`~graft.network.heads.GraftNet` behind the :class:`Predictor` interface.

Files run through the embedding runtime (batched, decoded in worker processes, the
fastest engine for the machine). A stage-1 model's backbone is the frozen pretrained
one, so its features come through the on-disk feature cache and only the head runs:
evaluating or predicting on images that training already embedded costs nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft.artifact.spec import ArtifactSpec
from graft.data.records import SkippedFile
from graft.features.extract import FeatureRequest, model_features
from graft.features.options import EmbedOptions
from graft.predict.base import Predictor
from graft.predict.results import Outputs

__all__ = ["TorchPredictor", "probabilities"]


@torch.no_grad()
def probabilities(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax probabilities (N, n_classes) of ``net`` for a normalised batch, as float64 numpy."""
    return torch.softmax(net(x).float(), 1).double().cpu().numpy()


class TorchPredictor(Predictor):
    """A network in memory, predicting like the ONNX predictor does.

    Args:
        net: the network (images -> logits), in eval mode.
        spec: its artifact description.
        options: device (already resolved), backbone precision on files, embedding batch
            size and decoder processes (None: auto), the feature cache (default
            ``$GRAFT_HOME/features``). Default: on the CPU, the other defaults of
            :class:`~graft.features.options.EmbedOptions`.
        frozen: the backbone holds pretrained weights unchanged (features may come
            from the cache); default: not fine-tuned according to ``spec``.
    """

    name = "torch"

    def __init__(
        self, net: nn.Module, spec: ArtifactSpec, options: EmbedOptions | None = None, *, frozen: bool | None = None
    ) -> None:
        self.options = EmbedOptions(device="cpu") if options is None else options
        self.net = net.eval()
        self.spec = spec
        self.device = self.options.device
        self.precision = self.options.precision
        self.frozen = not bool(spec.backbone.get("fine_tuned", False)) if frozen is None else frozen
        self.batch_size = self.options.batch_size or 16

    # ------------------------------------------------------------------ arrays
    def logits(self, batch: np.ndarray) -> np.ndarray:
        """fp32 logits for a preprocessed (N, 3, H, W) batch (the reference of the ONNX parity check)."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.net.eval()(x).float().cpu().numpy()

    def _outputs(self, batch: np.ndarray) -> Outputs:
        net: Any = self.net
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if hasattr(net, "forward_all"):
                logits, ood = net.forward_all(x)
            else:
                logits = net(x)
                ood = None
            probs = self._probs(logits)
            return Outputs(probs, None if ood is None else ood.float().cpu().numpy())

    def _probs(self, logits: torch.Tensor) -> np.ndarray:
        """Per-label sigmoid (multi-label) or softmax of fp32 logits, as float32 numpy on the CPU."""
        z = logits.float()
        return (torch.sigmoid(z) if self.spec.multi_label else torch.softmax(z, 1)).cpu().numpy()

    # ------------------------------------------------------------------ files
    def predict_outputs(
        self, paths: Sequence[str | os.PathLike], progress: Callable[[int], None] | None = None
    ) -> tuple[Outputs, list[str], list[SkippedFile]]:
        """Outputs for image files: backbone features (through the cache for a frozen backbone), then the heads."""
        names = [str(p) for p in paths]
        net: Any = self.net
        if not names or not hasattr(net, "head"):
            return super().predict_outputs(names)
        fs = model_features(
            net.backbone,
            self.preprocessing,
            names,
            what=FeatureRequest(spatial=bool(getattr(net, "spatial", False)), taps=tuple(getattr(net, "taps", ()))),
            options=dataclasses.replace(self.options, use_cache=self.options.use_cache and self.frozen),
            progress=progress,
        )
        return self.outputs_of_features(fs.X), [names[i] for i in fs.ok], fs.failed

    def outputs_of_features(self, X: np.ndarray) -> Outputs:
        """The heads on backbone features, where the heads live.

        The features travel, not the modules: moving a module under ``inference_mode``
        turns its parameters and buffers into inference tensors that a later
        ``load_state_dict`` cannot write (seen on CUDA in the ladder).
        """
        net: Any = self.net
        dev = next(net.head.parameters()).device
        with torch.inference_mode():
            f = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(dev)
            logits = net.head.eval()(f).float()
            ood = net.ood(f).float().cpu().numpy() if getattr(net, "ood", None) is not None else None
        return self.checked(Outputs(self._probs(logits), ood))

    def __repr__(self) -> str:
        return f"TorchPredictor({self.spec.architecture!r}, classes={len(self.spec.classes)}, device={self.device!r})"
