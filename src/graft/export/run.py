"""``graft export MODEL --format F|all [--int8]``: write each format, verify it, place it.

Every file is written into a temporary folder beside the destination and moved into place
only after its parity check passed, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from graft.exceptions import ExportError, GraftError, InvalidParameterError
from graft.export import checks
from graft.export.catalogue import format_names, get_format
from graft.export.job import DEFAULT_PROB_TOLERANCE, Built, ExportJob
from graft.export.registry import ExportFormat, MissingExtraError, missing_requirement, require
from graft.export.verify import FormatReport, int8_comparison, parity, size_of
from graft.fileio import make_folder

__all__ = ["ExportOptions", "ExportResult", "export_formats", "default_out", "onnx_destination"]


@dataclass(frozen=True)
class ExportOptions:
    """How ``export_formats`` writes and checks.

    Attributes:
        int8: quantise (calibrated on training images) and report the accuracy change on validation.
        check_dirs: images for the parity check (default: the validation split, else training images).
        tolerance: largest accepted |probability difference| against PyTorch (fp32).
        progress: called with a short message before each step.
    """

    int8: bool = False
    check_dirs: Sequence[str] | None = None
    tolerance: float = DEFAULT_PROB_TOLERANCE
    progress: Callable[[str], None] | None = None


@dataclass
class ExportResult:
    """The formats written (with their reports) and those that could not be, one reason each."""

    reports: list[FormatReport]
    skipped: dict[str, str]

    def lines(self) -> list[str]:
        out = [line for r in self.reports for line in r.lines()]
        return out + [f"{name}: not written: {why}" for name, why in self.skipped.items()]


def default_out(model_dir: Path, fmt: ExportFormat, int8: bool) -> str:
    """``model[-int8].SUFFIX`` (``web[-int8]/`` for the web folder)."""
    stem = "web" if not fmt.suffix else "model"
    return f"{stem}{'-int8' if int8 else ''}{fmt.suffix}"


def _destinations(model_dir: Path, out: Path | None, fmts: list[ExportFormat], int8: bool) -> dict[str, Path]:
    """Where each format goes: ``--out`` a file with the format's suffix (one format; for web, the folder to
    write), else a folder that gets ``model[-int8].SUFFIX`` (default: ``export/`` beside the model)."""
    if out is not None and len(fmts) == 1:
        f = fmts[0]
        if f.suffix and out.suffix.lower() == f.suffix:  # a file of that format
            return {f.name: out}
        if not f.suffix and not (out.is_dir() and not (out / "graft-web.js").is_file()):  # the web folder itself
            return {f.name: out}
    folder = out if out is not None else Path(model_dir).resolve().parent / "export"
    return {f.name: folder / default_out(model_dir, f, int8) for f in fmts}


def onnx_destination(model_dir: str | os.PathLike, out: str | os.PathLike | None, int8: bool) -> Path:
    """The ``.onnx`` file ``--format onnx`` writes: ``--out`` (a folder gets ``model[-int8].onnx``), else ``export/`` beside the model."""
    from graft.artifact.model_dir import read_spec

    try:
        model_path = read_spec(model_dir)[1]
    except GraftError:  # export_onnx reports a bad model folder in one line
        model_path = Path(model_dir)
    return _destinations(model_path, Path(out) if out is not None else None, [get_format("onnx")], int8)["onnx"]


def _place(src: Path, dst: Path) -> None:
    """Move a verified export into place (an OpenVINO .xml takes its .bin along; a folder replaces a previous export)."""
    make_folder(dst.parent, "--out")
    if src.is_dir():
        if dst.exists():
            if not (dst.suffix == ".mlpackage" or (dst / "graft-web.js").is_file()):
                raise ExportError(f"{dst} exists and is not a graft export; remove it or choose another --out")
            shutil.rmtree(dst)
        shutil.move(str(src), str(dst))
        return
    os.replace(src, dst)
    if src.suffix == ".xml":
        os.replace(src.with_suffix(".bin"), dst.with_suffix(".bin"))


def _write(job: ExportJob, fmt: ExportFormat, path: Path, int8: bool) -> Built:
    """``fmt``'s writer; a converter's own exception becomes one line naming the format."""
    try:
        return fmt.write(job, path, int8)
    except GraftError:
        raise
    except Exception as e:  # noqa: BLE001 - converters raise many types
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportError(
            f"{fmt.name}{' int8' if int8 else ''} conversion of {job.lm.path} failed: {type(e).__name__}: {first}"
        ) from None


def _export_one(job: ExportJob, fmt: ExportFormat, dst: Path, int8: bool) -> FormatReport:
    t0 = time.perf_counter()
    stage = Path(tempfile.mkdtemp(prefix=f"{fmt.name}-", dir=job.tmp))
    job.say(f"writing {fmt.name}")
    b32 = _write(job, fmt, stage / f"fp32{fmt.suffix}", False)
    agree = diff = acc = None
    if b32.predict is not None:
        agree, diff, p32 = parity(job, b32, strict=True)
        a32, d32 = agree, diff
        acc = _accuracy(job, p32)
    final, info = b32, None
    if int8:
        job.say(f"writing {fmt.name} int8")
        final = _write(job, fmt, stage / f"int8{fmt.suffix}", True)
        if final.predict is not None and b32.predict is not None:
            agree, diff, p8 = parity(job, final, strict=False)
            info = {**int8_comparison(job, p32, p8), "fp32_top1_agreement": a32, "fp32_max_prob_diff": d32}
            acc = _accuracy(job, p8)
    _place(final.path, dst)
    return FormatReport(
        format=fmt.name,
        path=dst,
        size_bytes=size_of(dst),
        seconds=time.perf_counter() - t0,
        verified_by=fmt.verified_by if final.predict is not None else "inspection",
        parity_source=job.parity.source,
        n_parity=len(job.parity.batch),
        top1_agreement=agree,
        max_prob_diff=diff,
        tolerance=job.tolerance,
        quantization=final.quantization,
        accuracy=acc,
        int8=info,
        inspected=final.inspected,
        notes=final.notes,
        metadata=final.metadata,
    )


def _accuracy(job: ExportJob, probs: object) -> float | None:
    """Top-1 accuracy on the parity images where they are labelled validation images."""
    labels = job.parity.labels
    return checks.accuracy(probs, labels) if labels is not None and len(labels) else None  # type: ignore[arg-type]


def _chosen(names: Sequence[str], int8: bool) -> tuple[list[ExportFormat], dict[str, str]]:
    """The formats to write; with ``all``, those this machine cannot write go in the second value with why."""
    if list(names) != ["all"]:
        fmts = [get_format(n) for n in names]
        for f in fmts:
            require(f)
            if int8 and not f.int8:
                raise InvalidParameterError(f"--int8 is not supported for --format {f.name}; export it without --int8")
        return fmts, {}
    fmts, skipped = [], {}
    for n in format_names():
        f = get_format(n)
        why = missing_requirement(f) or ("its converter has no int8 route graft uses" if int8 and not f.int8 else None)
        if why:
            skipped[n] = why
        else:
            fmts.append(f)
    return fmts, skipped


def export_formats(
    model_dir: str | os.PathLike,
    formats: Sequence[str],
    out: str | os.PathLike | None = None,
    options: ExportOptions = ExportOptions(),
) -> ExportResult:
    """Export a model directory to each of ``formats`` (or ``["all"]``), each verified against PyTorch.

    Raises:
        ModelFileError: ``model_dir`` is not a readable graft model.
        MissingExtraError: a named format's converter is not installed (exit 2, with the install command).
        ExportError: a format's runtime disagrees with PyTorch beyond the tolerance (nothing is written for it).
    """
    from graft.artifact.model_dir import load_model

    fmts, skipped = _chosen(formats, options.int8)
    say = options.progress or (lambda _m: None)
    say(f"loading {model_dir}")
    lm = load_model(model_dir, device="cpu")
    dests = _destinations(lm.path, Path(out) if out is not None else None, fmts, options.int8)
    folder = next(iter(dests.values())).parent if dests else Path(".")
    make_folder(folder, "--out")
    reports = []
    with tempfile.TemporaryDirectory(prefix=".graft-export-", dir=folder) as tmp:
        check = [str(p) for p in options.check_dirs] if options.check_dirs else None
        data_dir = checks.training_data_dir(lm.path, lm.config)
        job = ExportJob(lm, data_dir, Path(tmp), check, options.tolerance, say)
        for f in fmts:
            if len(fmts) > 1:
                try:
                    reports.append(_export_one(job, f, dests[f.name], options.int8))
                except (ExportError, MissingExtraError) as e:  # the others still get written
                    skipped[f.name] = str(e)
            else:
                reports.append(_export_one(job, f, dests[f.name], options.int8))
    return ExportResult(reports, skipped)
