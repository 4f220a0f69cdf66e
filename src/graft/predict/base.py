"""The :class:`Predictor` interface: one way to predict, whatever runs the network.

A predictor knows its classes and preprocessing (from the :class:`ArtifactSpec`) and
maps a preprocessed batch to probabilities (:meth:`Predictor.predict_arrays`); files,
folders and globs, decoding, unreadable files and the top-k rows are handled here
once for every implementation.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from graft.artifact.spec import ArtifactSpec
from graft.data.decode import DEFAULT_MAX_PIXELS, load_image
from graft.data.files import collect_image_paths
from graft.data.records import SkippedFile
from graft.exceptions import ImageDecodeError, ModelFileError
from graft.predict.results import Outputs, prediction_rows, sigmoid, softmax
from graft.transforms.eval import Preprocessing

__all__ = ["Predictor"]


class Predictor:
    """Base class of the torch and ONNX predictors.

    Subclasses set :attr:`spec` and implement :meth:`predict_arrays`.

    Attributes:
        spec: the artifact description (classes, preprocessing, backbone, metrics).
        name: what runs the network (``onnxruntime`` or ``torch``).
        batch_size: images per network call.
        max_pixels: decompression-bomb guard for decoded images.
    """

    name = "predictor"
    source = "the model"  # what the model was read from, for error messages
    spec: ArtifactSpec
    batch_size: int = 16
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    decode_workers: int = 1

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    def info(self) -> dict[str, Any]:
        """What the server's ``GET /model`` shows: the model's description, with no path of this machine."""
        backbone = {k: v for k, v in self.spec.backbone.items() if k not in {"weights_path", "path"}}
        source = str(backbone.get("weights_source", ""))
        if source.startswith("file:"):  # keep the file name, not where it lies on the server
            backbone["weights_source"] = "file:" + os.path.basename(source[len("file:") :])
        return {
            "backbone": backbone,
            "head": dict(self.spec.head),
            "metrics": {
                k: v for k, v in self.spec.metrics.items() if k not in {"per_class", "confusion_matrix", "reliability"}
            },
            "graft_version": self.spec.versions.get("graft"),
            "multi_label": self.spec.multi_label,
            **({"thresholds": dict(zip(self.spec.classes, self.spec.thresholds))} if self.spec.multi_label else {}),
        }

    # ------------------------------------------------------------------ arrays
    @property
    def ood_threshold(self) -> float | None:
        """OOD scores above this mean "unknown" (None: the model has no OOD score)."""
        return self.spec.ood_threshold

    def outputs(self, batch: np.ndarray) -> Outputs:
        """Probabilities and OOD scores for a preprocessed float32 (N, 3, H, W) batch.

        Runs in chunks of :attr:`batch_size`, so memory stays bounded whatever N is.
        """
        if len(batch) == 0:
            return Outputs.empty(len(self.spec.classes), self.ood_threshold is not None)
        step = max(1, int(self.batch_size))
        return self.checked(Outputs.concat([self._outputs(batch[i : i + step]) for i in range(0, len(batch), step)]))

    def probabilities_of(self, logits: np.ndarray) -> np.ndarray:
        """The model's probabilities from its logits: per-label sigmoid (multi-label) or softmax."""
        return sigmoid(logits) if self.spec.multi_label else softmax(logits)

    def checked(self, out: Outputs) -> Outputs:
        """``out``, unless the network answered NaN or infinity: a damaged model is refused, never printed as NaN."""
        if np.isfinite(out.probs).all() and (out.ood is None or np.isfinite(out.ood).all()):
            return out
        raise ModelFileError(
            f"{self.source} gives non-finite outputs (NaN or infinity): its weights are damaged (training "
            "diverged, or the file was altered); train it again, or export it again from an intact model folder"
        )

    def check(self) -> Predictor:
        """Run one blank image through the network, so a model answering NaN is refused when opened."""
        self.outputs(np.zeros((1, 3, *self.preprocessing.input_size), np.float32))
        return self

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_classes) for a preprocessed float32 (N, 3, H, W) batch (per-label sigmoid for a
        multi-label model, softmax otherwise)."""
        return self.outputs(batch).probs

    def _outputs(self, batch: np.ndarray) -> Outputs:
        """One runtime call on a non-empty batch (implemented by each predictor)."""
        raise NotImplementedError

    def predict_images(self, images: Sequence[Any]) -> np.ndarray:
        """Probabilities (as :meth:`predict_arrays`) for decoded PIL images (in memory), in batches."""
        return self._run_batched([self.preprocessing(im) for im in images]).probs

    def _run_batched(self, arrs: list[np.ndarray]) -> Outputs:
        if not arrs:
            return Outputs.empty(len(self.spec.classes), self.ood_threshold is not None)
        step = max(1, int(self.batch_size))
        return self.checked(
            Outputs.concat([self._outputs(np.stack(arrs[i : i + step])) for i in range(0, len(arrs), step)])
        )

    # ------------------------------------------------------------------ files
    def load_array(self, path: str) -> tuple[np.ndarray | None, str | None]:
        """(network input, None) for a readable image, (None, reason) otherwise."""
        pre = self.preprocessing
        try:
            img = load_image(
                path, draft_size=pre.decode_size, **({"max_pixels": self.max_pixels} if self.max_pixels else {})
            )
            return pre(img), None
        except ImageDecodeError as e:
            return None, e.reason
        except Exception as e:  # noqa: BLE001 - one bad file must not end a batch
            return None, f"could not be read: {type(e).__name__}: {e}"

    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
        """Class probabilities for image files: (probs of the readable files, their paths, the unreadable ones)."""
        out, ok, failed = self.predict_outputs(paths)
        return out.probs, ok, failed

    def predict_outputs(self, paths: Sequence[str | os.PathLike]) -> tuple[Outputs, list[str], list[SkippedFile]]:
        """:class:`Outputs` of image files: (outputs of the readable files, their paths, the unreadable ones)."""
        names = [str(p) for p in paths]
        if self.decode_workers > 1 and len(names) > 1:
            with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="graft-decode") as pool:
                loaded = list(pool.map(self.load_array, names))
        else:
            loaded = [self.load_array(n) for n in names]
        arrs, ok, failed = [], [], []
        for name, (arr, err) in zip(names, loaded):
            if arr is None:
                failed.append(SkippedFile(name, err or "unreadable"))
            else:
                arrs.append(arr)
                ok.append(name)
        return self._run_batched(arrs), ok, failed

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 1, reject: bool = True) -> list[dict[str, Any]]:
        """Top-k labels for image files, folders or globs.

        Args:
            reject: label images beyond the model's OOD threshold ``"unknown"`` (where it has one).

        Returns:
            One dict per input image: ``path``, ``label``, ``probability``, ``top_k``
            (list of {label, probability}), and with an OOD score ``ood_score``, ``known``
            and, for an unknown image, ``best_label``; a multi-label model's rows also have
            ``labels`` (every label over its threshold, most probable first; empty for an unknown
            image); unreadable files get ``error`` instead.
        """
        files, missing = collect_image_paths([str(p) for p in paths])
        out, ok_paths, failed = self.predict_outputs(files)
        return prediction_rows(
            ok_paths,
            out,
            self.classes,
            top_k,
            list(missing) + list(failed),
            threshold=self.ood_threshold if reject else None,
            thresholds=self.spec.thresholds,
        )

    def close(self) -> None:
        """Release runtime resources (no-op by default)."""
