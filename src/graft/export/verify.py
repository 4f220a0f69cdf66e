"""Run a written export in its own runtime and compare it with PyTorch: the report of one format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graft.exceptions import ExportError
from graft.export import checks
from graft.export.job import MIN_AGREEMENT, Built, ExportJob

__all__ = ["FormatReport", "parity", "int8_comparison", "size_of"]


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (``.mlpackage``, the web folder)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    extra = path.with_suffix(".bin")  # OpenVINO IR: the weights beside the .xml
    return path.stat().st_size + (extra.stat().st_size if path.suffix == ".xml" and extra.is_file() else 0)


@dataclass
class FormatReport:
    """What one format's export wrote and how it was verified."""

    format: str
    path: Path
    size_bytes: int
    seconds: float
    verified_by: str
    parity_source: str
    n_parity: int
    top1_agreement: float | None
    max_prob_diff: float | None
    tolerance: float
    quantization: str | None = None
    accuracy: float | None = None
    int8: dict[str, Any] | None = None
    inspected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "metadata"}
        d["path"] = str(self.path)
        return d

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        q = f", {self.quantization}" if self.quantization else ""
        out = [f"{self.format}: wrote {self.path} ({self.size_bytes / 1e6:.1f} MB{q}) in {self.seconds:.1f} s"]
        if self.top1_agreement is not None:
            out.append(
                f"  verified by running it: {self.n_parity} {self.parity_source} images, top-1 agreement with "
                f"PyTorch {self.top1_agreement:.1%}, max |probability diff| {self.max_prob_diff:.2e}"
                + ("" if self.int8 else f" (tolerance {self.tolerance:g})")
                + (f"; accuracy {self.accuracy:.4f}" if self.accuracy is not None else "")
            )
        else:
            out.append(f"  verified by inspection ({'; '.join(self.inspected)}); prediction NOT verified here")
        if self.int8 and "accuracy_int8" in self.int8:
            i = self.int8
            out.append(
                f"  int8 vs fp32 on {i['n_val']} validation images: accuracy {i['accuracy_fp32']:.4f} -> "
                f"{i['accuracy_int8']:.4f} (change {i['accuracy_change']:+.4f}), top-1 agreement {i['agreement']:.1%}"
            )
        out.extend(f"  {n}" for n in self.notes)
        return out


def parity(job: ExportJob, built: Built, *, strict: bool) -> tuple[float, float, np.ndarray]:
    """(top-1 agreement, max |probability diff|, probabilities) of ``built`` against PyTorch fp32.

    Raises:
        ExportError: (``strict``, fp32) agreement under :data:`MIN_AGREEMENT` or a difference over the tolerance.
    """
    if built.predict is None:  # a format verified by inspection never reaches here
        raise ExportError(f"{built.path.name} cannot be run here; it is verified by inspection only")
    imgs = job.parity
    job.say(f"running {built.path.name} on {len(imgs.batch)} {imgs.source} images")
    got = np.asarray(built.predict(imgs.batch), np.float32)
    ref = job.reference
    if got.shape != ref.shape:
        raise ExportError(f"{built.path} gives outputs of shape {got.shape}, PyTorch {ref.shape}")
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    diff = float(np.abs(got - ref).max())
    if strict and (not np.isfinite(diff) or diff > job.tolerance or agree < MIN_AGREEMENT):
        raise ExportError(
            f"{built.path.name} differs from PyTorch on {len(ref)} {imgs.source} images: top-1 agreement "
            f"{agree:.1%} (at least {MIN_AGREEMENT:.0%}), max |probability diff| {diff:.3g} (tolerance "
            f"{job.tolerance:g}); nothing was written"
        )
    return agree, diff, got


def int8_comparison(job: ExportJob, p32: np.ndarray, p8: np.ndarray) -> dict[str, Any]:
    """Accuracy of the fp32 and int8 files on the validation images (top-1 agreement where there are no labels)."""
    out: dict[str, Any] = {"agreement": float((p32.argmax(1) == p8.argmax(1)).mean()), "n_val": len(p8)}
    labels = job.parity.labels
    if labels is not None and len(labels):
        out.update(accuracy_fp32=checks.accuracy(p32, labels), accuracy_int8=checks.accuracy(p8, labels))
        out["accuracy_change"] = out["accuracy_int8"] - out["accuracy_fp32"]
    return out
