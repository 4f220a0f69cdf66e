"""Export a graft model directory to a self-contained ONNX file, and prove it matches.

The file holds the whole classifier (backbone + head) with a dynamic batch axis, two
outputs (``logits`` and ``probabilities``), and the class names plus the exact
evaluation preprocessing as JSON in ``metadata_props["graft_config"]``: the file alone
is enough to predict (see :class:`graft.onnx_predictor.OnnxClassifier`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..exceptions import ExportError
from ..onnx_predictor import METADATA_KEY, ONNX_FORMAT, ONNX_FORMAT_VERSION, softmax
from . import checks
from .quantize import QUANTIZE_MODES, quantize_int8

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "ExportReport", "export_onnx", "onnx_metadata"]

DEFAULT_OPSET = 17
"""Supported by every ONNX Runtime since 1.14 and by the TorchScript exporter for timm models."""
DEFAULT_TOLERANCE = 1e-3
"""Largest accepted absolute logit difference between ONNX Runtime and PyTorch (fp32)."""
INPUT_NAME = "input"
_METRIC_KEYS = ("n", "accuracy", "top2_accuracy", "top_k", "macro_f1", "balanced_accuracy", "log_loss", "ece")


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how it was verified.

    Attributes:
        path: the written ONNX file.
        opset: ONNX opset of the graph.
        size_bytes: file size.
        seconds: wall time of the whole export.
        check_source: where the parity images came from (``given``, ``training data DIR``, ``synthetic``).
        n_check: images in the parity check.
        max_abs_diff: largest |logit(ONNX) - logit(PyTorch)| over the check images (fp32 export).
        top1_agreement: share of check images with the same top-1 class in both.
        batch_sizes: batch sizes the ONNX model was run with (dynamic batch check).
        tolerance: the limit ``max_abs_diff`` had to stay under.
        quantization: int8 results (method, sizes, latencies, val accuracies), or None.
    """

    path: Path
    opset: int
    size_bytes: int
    seconds: float
    check_source: str
    n_check: int
    max_abs_diff: float
    top1_agreement: float
    batch_sizes: list[int]
    tolerance: float
    quantization: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d.pop("metadata")
        return d

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, opset {self.opset}, outputs logits+probabilities, "
            f"dynamic batch) in {self.seconds:.1f} s",
            f"parity vs PyTorch on {self.n_check} images ({self.check_source}), batch sizes "
            f"{'/'.join(map(str, self.batch_sizes))}: max |logit diff| {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:g}), top-1 agreement {self.top1_agreement:.0%}",
        ]
        q = self.quantization
        if q:
            out.append(
                f"int8 ({q['method']} quantisation{', ' + str(q['n_calibration']) + ' calibration images' if q['n_calibration'] else ''}): "
                f"size {q['fp32_bytes'] / 1e6:.1f} MB -> {q['int8_bytes'] / 1e6:.1f} MB, "
                f"batch-1 latency {q['fp32_latency_ms']:.1f} ms -> {q['int8_latency_ms']:.1f} ms"
            )
            if q.get("n_val"):
                out.append(
                    f"val accuracy ({q['n_val']} images): fp32 {q['val_accuracy_fp32']:.4f} -> int8 "
                    f"{q['val_accuracy_int8']:.4f} (drop {q['accuracy_drop']:+.4f}); top-1 agreement "
                    f"{q['val_top1_agreement']:.1%}"
                )
            else:
                out.append(
                    f"no validation split found: int8 agrees with fp32 on top-1 for {q['check_top1_agreement']:.0%} "
                    "of the check images (accuracy drop unknown)"
                )
        return out


def onnx_metadata(config: dict[str, Any], *, opset: int, quantization: str | None = None) -> dict[str, Any]:
    """The ``graft_config`` JSON document stored in the ONNX file."""
    from .. import __version__

    h, w = config["preprocessing"]["input_size"]
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "graft_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "classes": list(config["classes"]),
        "preprocessing": dict(config["preprocessing"]),
        "backbone": dict(config.get("backbone", {})),
        "head": dict(config.get("head", {})),
        "metrics": {k: config.get("metrics", {})[k] for k in _METRIC_KEYS if k in config.get("metrics", {})},
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, int(h), int(w)], "dtype": "float32", "layout": "NCHW"},
        "outputs": ["logits", "probabilities"],
        "opset": opset,
        "quantization": quantization,
        "versions": dict(config.get("versions", {})),
    }


def _torch_export(net: Any, path: Path, input_size: tuple[int, int], opset: int) -> None:
    import torch

    class WithProbs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.inner(x)
            return logits, torch.softmax(logits, dim=1)

    x = torch.zeros(2, 3, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from timm's dynamic 'same' padding are expected
        # The TorchScript exporter (dynamo=False) handles timm's tf_* 'same' padding; the
        # spatial size is fixed by the preprocessing, only the batch axis is dynamic.
        torch.onnx.export(
            WithProbs(net.eval()), (x,), str(path), input_names=[INPUT_NAME],
            output_names=["logits", "probabilities"], opset_version=opset, do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in {METADATA_KEY: json.dumps(meta), "graft_version": meta["graft_version"],
                 "classes": json.dumps(meta["classes"])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "graft"
    model.producer_version = meta["graft_version"]
    model.doc_string = f"graft image classifier ({meta['backbone'].get('name', '?')}, {len(meta['classes'])} classes)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _logits(sess: Any, batch: np.ndarray) -> np.ndarray:
    return sess.run(["logits"], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]


def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    quantize: str | None = None,
    check_images: Sequence[str | os.PathLike] | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a model directory to ONNX, check it against PyTorch, optionally quantise it.

    Args:
        model_dir: model directory (``RUN_DIR/model``) or run directory.
        out: the ``.onnx`` file to write (replaced atomically).
        quantize: None, or ``"int8"`` (static with calibration images from the training
            data when available, else dynamic); the report then has the accuracy drop on
            the validation split and the size and speed change.
        check_images: image files/folders/globs for the parity check (default: a handful
            from the recorded training data, else synthetic images).
        opset: ONNX opset.
        tolerance: maximum absolute logit difference accepted.
        progress: called with a short message before each step.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ModelFileError: ``model_dir`` is not a readable graft model.
        ExportError: the export failed, or ONNX Runtime disagrees with PyTorch beyond tolerance.
    """
    from ..model import load_model

    say = progress or (lambda _m: None)
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    t0 = time.perf_counter()
    out = Path(out)
    say(f"loading {model_dir}")
    lm = load_model(model_dir, device="cpu")
    config = {**lm.config, "classes": lm.classes, "preprocessing": lm.preprocessing.to_dict()}
    pre = lm.preprocessing
    data_dir = checks.training_data_dir(lm.path, lm.config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".graft-export-", dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        say(f"exporting {config['backbone'].get('architecture', '?')} + head to ONNX (opset {opset})")
        try:
            _torch_export(lm.net, fp32, pre.input_size, opset)
            meta = onnx_metadata(config, opset=opset)
            _write_metadata(fp32, meta)
        except Exception as e:  # noqa: BLE001 - exporter errors come in many types
            raise ExportError(
                f"ONNX export of {lm.path} failed: {type(e).__name__}: {str(e)[:500]}. "
                f"Try another --opset (now {opset}) or report the backbone {config['backbone'].get('architecture')}."
            ) from None

        say("checking ONNX Runtime against PyTorch")
        imgs = checks.choose_check_images(pre, check_images, data_dir)
        ref = checks.torch_logits(lm.net, imgs.batch)
        sess = _session(fp32)
        got = _logits(sess, imgs.batch)
        single = _logits(sess, imgs.batch[:1])  # dynamic batch: 1 and N must both work
        diff = float(max(np.abs(got - ref).max(), np.abs(single - ref[:1]).max()))
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        if not np.isfinite(diff) or diff > tolerance or agree < 1.0:
            raise ExportError(
                f"ONNX Runtime output differs from PyTorch on {len(ref)} {imgs.source} images: max |logit diff| "
                f"{diff:.3g} (tolerance {tolerance:g}), top-1 agreement {agree:.0%}. Nothing was written to {out}."
            )

        final, qinfo = fp32, None
        if quantize == "int8":
            qinfo, final = _quantize(fp32, Path(tmp) / "int8.onnx", lm, config, pre, data_dir, imgs, sess, opset, say)
        os.replace(final, out)
    return ExportReport(
        path=out, opset=opset, size_bytes=out.stat().st_size, seconds=time.perf_counter() - t0,
        check_source=imgs.source, n_check=len(ref), max_abs_diff=diff, top1_agreement=agree,
        batch_sizes=sorted({1, len(ref)}), tolerance=tolerance, quantization=qinfo, metadata=meta,
    )


def _quantize(
    fp32: Path, dst: Path, lm: Any, config: dict[str, Any], pre: Any, data_dir: Path | None,
    imgs: checks.CheckImages, sess: Any, opset: int, say: Callable[[str], None],
) -> tuple[dict[str, Any], Path]:
    val = checks.val_split(lm.path, lm.classes, data_dir)
    calib_paths = checks.calibration_paths(data_dir, val[0] if val else [])
    if not calib_paths and imgs.source != "synthetic":
        calib_paths = imgs.paths
    calib, _ = checks.load_batch(calib_paths, pre)
    say(f"quantising to int8 ({'static, ' + str(len(calib)) + ' calibration images' if len(calib) else 'dynamic'})")
    method = quantize_int8(fp32, dst, INPUT_NAME, calib if len(calib) else None)
    _write_metadata(dst, onnx_metadata(config, opset=opset, quantization=f"int8-{method}"))
    qsess = _session(dst)
    h, w = pre.input_size
    say("measuring int8 accuracy, size and speed")
    info: dict[str, Any] = {
        "method": method,
        "n_calibration": int(len(calib)),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": dst.stat().st_size,
        "fp32_latency_ms": checks.latency_ms(sess, INPUT_NAME, (1, 3, h, w)),
        "int8_latency_ms": checks.latency_ms(qsess, INPUT_NAME, (1, 3, h, w)),
    }
    q_check = _logits(qsess, imgs.batch)
    info["check_top1_agreement"] = float((q_check.argmax(1) == _logits(sess, imgs.batch).argmax(1)).mean())
    info["check_max_abs_diff"] = float(np.abs(q_check - _logits(sess, imgs.batch)).max())
    if val is not None:
        paths, labels = val[0][:1000], val[1][:1000]
        batch, ok = checks.load_batch(paths, pre)
        labels = labels[np.isin(paths, ok)]
        if len(batch):
            p32 = np.concatenate([softmax(_logits(sess, batch[i:i + 32])) for i in range(0, len(batch), 32)])
            p8 = np.concatenate([softmax(_logits(qsess, batch[i:i + 32])) for i in range(0, len(batch), 32)])
            info.update(
                n_val=int(len(batch)), val_accuracy_fp32=checks.accuracy(p32, labels),
                val_accuracy_int8=checks.accuracy(p8, labels),
                val_top1_agreement=float((p32.argmax(1) == p8.argmax(1)).mean()),
            )
            info["accuracy_drop"] = info["val_accuracy_fp32"] - info["val_accuracy_int8"]
    return info, dst
