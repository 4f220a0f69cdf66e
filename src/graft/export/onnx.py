"""Export a graft model directory to a self-contained ONNX file, and prove it matches.

The file holds the whole classifier (backbone + head) with a dynamic batch axis, two
outputs (``logits`` and ``probabilities``), and the class names plus the exact
evaluation preprocessing as JSON in ``metadata_props["graft_config"]``: the file alone
is enough to predict (see :class:`graft.predict.onnx.OnnxPredictor`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from graft.artifact.onnx_meta import INPUT_NAME, onnx_metadata
from graft.artifact.onnx_write import DEFAULT_OPSET, write_onnx, write_onnx_metadata
from graft.exceptions import ExportError, InvalidParameterError
from graft.export import checks
from graft.export.quantize import QUANTIZE_MODES, quantize_int8
from graft.validation import check_choice

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "ExportReport", "export_onnx"]

DEFAULT_TOLERANCE = 1e-3
"""Largest accepted absolute logit difference between ONNX Runtime and PyTorch (fp32)."""


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
        label_set_agreement: a multi-label model's share of check images with the same label set
            (sigmoid probabilities over the thresholds) in both; None for a single-label model.
        batch_sizes: batch sizes the ONNX model was run with (dynamic batch check).
        tolerance: the limit ``max_abs_diff`` had to stay under.
        quantization: int8 results (method, sizes, latencies, val accuracies), or None.
        outputs: the graph's outputs (``logits``, ``probabilities``, and ``ood_score`` where the model has one).
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
    outputs: list[str] = field(default_factory=lambda: ["logits", "probabilities"])
    label_set_agreement: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d.pop("metadata")
        return d

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        multi = self.label_set_agreement is not None
        out = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, opset {self.opset}, outputs {'+'.join(self.outputs)}"
            f"{' (sigmoid per label, thresholds in the metadata)' if multi else ''}, dynamic batch) in "
            f"{self.seconds:.1f} s",
            f"parity vs PyTorch on {self.n_check} images ({self.check_source}), batch sizes "
            f"{'/'.join(map(str, self.batch_sizes))}: max |logit diff| {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:g}), top-1 agreement {self.top1_agreement:.0%}"
            + (f", label-set agreement {self.label_set_agreement:.0%}" if multi else ""),
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
            elif "check_label_set_agreement" in q:
                out.append(
                    f"int8 gives fp32's label sets for {q['check_label_set_agreement']:.0%} of the check images "
                    f"(top-1 for {q['check_top1_agreement']:.0%}; score it with graft evaluate)"
                )
            else:
                out.append(
                    f"no validation split found: int8 agrees with fp32 on top-1 for {q['check_top1_agreement']:.0%} "
                    "of the check images (accuracy drop unknown)"
                )
        return out


def _checked_out(out: str | os.PathLike, quantize: str | None) -> Path:
    """``out`` as a path, or an :class:`InvalidParameterError` (a folder, or an unknown ``quantize``)."""
    if quantize is not None:
        check_choice("quantize", quantize, QUANTIZE_MODES, "export_onnx")
    out = Path(out)
    if out.is_dir():
        raise InvalidParameterError(f"--out {out} is a folder; give the .onnx file to write, e.g. {out / 'model.onnx'}")
    return out


def _load(model_dir: str | os.PathLike, out: Path, say: Callable[[str], None]) -> tuple[Any, Path | None]:
    """(the model, on the CPU; its recorded training data folder, where it still exists); then ``out``'s
    folder is made (only once the model has loaded: a bad model leaves no empty folder behind)."""
    from graft.artifact.model_dir import load_model
    from graft.fileio import make_folder

    say(f"loading {model_dir}")
    lm = load_model(model_dir, device="cpu")
    make_folder(out.parent, "--out")
    return lm, checks.training_data_dir(lm.path, lm.config)


def _write_fp32(lm: Any, path: Path, opset: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the fp32 ONNX file; its metadata, or an :class:`ExportError` naming the opset and backbone."""
    say(f"exporting {lm.spec.architecture or '?'} + head to ONNX (opset {opset})")
    try:
        return write_onnx(lm.net, lm.spec, path, opset=opset)
    except Exception as e:  # noqa: BLE001 - exporter errors come in many types
        raise ExportError(
            f"ONNX export of {lm.path} failed: {type(e).__name__}: {str(e)[:500]}. "
            f"Try another --opset (now {opset}) or report the backbone {lm.spec.architecture}."
        ) from None


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
    """Export a model directory to ONNX, check it against PyTorch, optionally quantise it; an :class:`ExportReport`.

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

    Raises:
        ModelFileError: ``model_dir`` is not a readable graft model.
        ExportError: the export failed, or ONNX Runtime disagrees with PyTorch beyond tolerance.
    """
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    out = _checked_out(out, quantize)
    lm, data_dir = _load(model_dir, out, say)
    with tempfile.TemporaryDirectory(prefix=".graft-export-", dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        meta = _write_fp32(lm, fp32, opset, say)
        imgs = checks.choose_check_images(lm.preprocessing, check_images, data_dir)
        onnx32, diff, agree, sets = _parity(lm, fp32, imgs, tolerance, out, say)
        final = fp32
        qinfo = None
        if quantize == "int8":
            qinfo, final = _quantize(fp32, Path(tmp) / "int8.onnx", lm, data_dir, imgs, onnx32, opset, say)
        outputs = [o.name for o in onnx32.session.get_outputs()]
        del onnx32  # the session holds the file open on some platforms
        os.replace(final, out)
    return ExportReport(
        path=out,
        opset=opset,
        size_bytes=out.stat().st_size,
        seconds=time.perf_counter() - t0,
        check_source=imgs.source,
        n_check=len(imgs.batch),
        max_abs_diff=diff,
        top1_agreement=agree,
        batch_sizes=sorted({1, len(imgs.batch)}),
        tolerance=tolerance,
        quantization=qinfo,
        outputs=outputs,
        label_set_agreement=sets,
        metadata=meta,
    )


def _parity(
    lm: Any, path: Path, imgs: checks.CheckImages, tolerance: float, out: Path, say: Callable[[str], None]
) -> tuple[Any, float, float, float | None]:
    """(the ONNX predictor, max |logit diff|, top-1 agreement, label-set agreement or None) against PyTorch,
    batch 1 and N.

    Raises:
        ExportError: beyond ``tolerance``, any top-1 disagreement, or (multi-label) any label set that differs
            where the probability is not on its threshold.
    """
    say("checking ONNX Runtime against PyTorch")
    from graft.predict.onnx import OnnxPredictor
    from graft.predict.torch import TorchPredictor

    torch_pred = TorchPredictor(lm.net, lm.spec)
    ref = torch_pred.logits(imgs.batch)
    onnx32 = OnnxPredictor(path)
    got = onnx32.logits(imgs.batch)
    single = onnx32.logits(imgs.batch[:1])  # dynamic batch: 1 and N must both work
    diff = float(max(np.abs(got - ref).max(), np.abs(single - ref[:1]).max()))
    ood_t = torch_pred.outputs(imgs.batch).ood
    ood_o = onnx32.outputs(imgs.batch).ood
    if (ood_t is None) != (ood_o is None) or (ood_t is not None and float(np.abs(ood_t - ood_o).max()) > 1e-3):
        raise ExportError(f"the exported OOD score differs from PyTorch on {len(ref)} {imgs.source} images")
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    if not np.isfinite(diff) or diff > tolerance or agree < 1.0:
        raise ExportError(
            f"ONNX Runtime output differs from PyTorch on {len(ref)} {imgs.source} images: max |logit diff| "
            f"{diff:.3g} (tolerance {tolerance:g}), top-1 agreement {agree:.0%}. Nothing was written to {out}."
        )
    sets = checks.label_set_agreement(ref, got, lm.spec.thresholds) if lm.spec.multi_label else None
    if sets is not None and not sets[1]:
        raise ExportError(
            f"ONNX Runtime gives other label sets than PyTorch on {len(ref)} {imgs.source} images (agreement "
            f"{sets[0]:.0%}) although the logits agree within {tolerance:g}. Nothing was written to {out}."
        )
    return onnx32, diff, agree, None if sets is None else sets[0]


def _quantize(
    fp32: Path,
    dst: Path,
    lm: Any,
    data_dir: Path | None,
    imgs: checks.CheckImages,
    onnx32: Any,
    opset: int,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], Path]:
    from graft.predict.onnx import OnnxPredictor

    pre = lm.preprocessing
    # a multi-label model's int8 check is its label sets on the check images (accuracy is not top-1)
    val = None if lm.spec.multi_label else checks.val_split(lm.path, lm.classes, data_dir)
    calib_paths = checks.calibration_paths(data_dir, val[0] if val else [])
    if not calib_paths and imgs.source != "synthetic":
        calib_paths = imgs.paths
    calib, _ = checks.load_batch(calib_paths, pre)
    say(f"quantising to int8 ({'static, ' + str(len(calib)) + ' calibration images' if len(calib) else 'dynamic'})")
    method = quantize_int8(fp32, dst, INPUT_NAME, calib if len(calib) else None)
    write_onnx_metadata(dst, onnx_metadata(lm.spec, opset=opset, quantization=f"int8-{method}"))
    onnx8 = OnnxPredictor(dst)
    h, w = pre.input_size
    say("measuring int8 accuracy, size and speed")
    info: dict[str, Any] = {
        "method": method,
        "n_calibration": int(len(calib)),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": dst.stat().st_size,
        "fp32_latency_ms": checks.latency_ms(onnx32.session, onnx32.input_name, (1, 3, h, w)),
        "int8_latency_ms": checks.latency_ms(onnx8.session, onnx8.input_name, (1, 3, h, w)),
    }
    q_check = onnx8.logits(imgs.batch)
    f_check = onnx32.logits(imgs.batch)
    info["check_top1_agreement"] = float((q_check.argmax(1) == f_check.argmax(1)).mean())
    info["check_max_abs_diff"] = float(np.abs(q_check - f_check).max())
    if lm.spec.multi_label:
        info["check_label_set_agreement"] = checks.label_set_agreement(f_check, q_check, lm.spec.thresholds)[0]
    if val is not None:
        paths = val[0][:1000]
        labels = val[1][:1000]
        batch, ok = checks.load_batch(paths, pre)
        labels = labels[np.isin(paths, ok)]
        if len(batch):
            p32 = onnx32.predict_arrays(batch)
            p8 = onnx8.predict_arrays(batch)
            info.update(
                n_val=int(len(batch)),
                val_accuracy_fp32=checks.accuracy(p32, labels),
                val_accuracy_int8=checks.accuracy(p8, labels),
                val_top1_agreement=float((p32.argmax(1) == p8.argmax(1)).mean()),
            )
            info["accuracy_drop"] = info["val_accuracy_fp32"] - info["val_accuracy_int8"]
    return info, dst
