"""Assemble ``report.html`` from the files ``graft train`` writes into a run directory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from graft.artifact.run_folder import RunFolder
from graft.exceptions import DataError
from graft.fileio import atomic_write_text
from graft.report import html as H
from graft.report import image_sections as I
from graft.report import multilabel as ML
from graft.report import sections as S
from graft.report.inputs import Figures, RunFiles

__all__ = ["write_report", "RunFiles"]

log = logging.getLogger(__name__)


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/report.html`` (self-contained) and its figures in ``RUN_DIR/report/``.

    Sections whose inputs are missing are left out; one that fails to render shows
    the error in place instead of losing the whole report.

    Args:
        run_dir: a directory written by ``graft train`` / :func:`graft.run.train_run`.

    Returns:
        The path of ``report.html``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RunFolder.METRICS).exists():
        raise DataError(
            f"{run_dir} is not a graft run directory (no metrics.json); pass the RUN_DIR that graft train wrote"
        )
    t0 = time.perf_counter()
    rf = RunFiles(run_dir)
    figs = Figures(run_dir / "report")

    builders: list[tuple[str, str, Callable[[RunFiles, Figures], str | None]]] = [
        ("data", "Dataset", S.dataset_section),
        ("training", "Training", S.training_section),
        ("baseline", "Transfer learning vs from scratch", S.baseline_section),
        ("curve", "Learning curve", S.learning_curve_section),
        ("evaluation", "Validation metrics", S.evaluation_section),
        ("multi-label", "Validation metrics (multi-label)", ML.multilabel_section),
        ("calibration", "Calibration", S.calibration_section),
        ("top-losses", "Top losses", I.top_losses_section),
        ("gradcam", "Grad-CAM", I.gradcam_section),
        ("facts", "Run facts", S.facts_section),
    ]
    sections = [
        (anchor, title, body) for anchor, title, build in builders if (body := _render(anchor, build, rf, figs))
    ]
    cards = _cards(rf)
    subtitle = f"{rf.run.get('data_dir', '')}  ·  {rf.run.get('started', '')}  ·  report built in {time.perf_counter() - t0:.1f} s"
    doc = H.page(f"graft report: {run_dir.resolve().name}", subtitle, cards, sections)
    out = run_dir / "report.html"
    atomic_write_text(out, doc)  # UTF-8 always: class names need not be ASCII, the locale may be C
    return out


def _multilabel_cards(rf: RunFiles) -> list[tuple[str, str]]:
    """mAP, F1 micro and subset accuracy; a damaged val_predictions.json costs the cards nothing."""
    try:
        return ML.multilabel_cards(rf)
    except Exception as e:  # noqa: BLE001 - the section reports the damage; the header keeps what metrics.json says
        log.debug("multi-label cards: %s", e)
        return [("subset accuracy", f"{rf.metrics.get('val_accuracy', float('nan')):.4f}")]


def _render(anchor: str, build: Callable[[RunFiles, Figures], str | None], rf: RunFiles, figs: Figures) -> str | None:
    """One section's HTML; a section that fails shows a one-line note instead of losing the report."""
    try:
        return build(rf, figs)
    except Exception as e:  # noqa: BLE001 - one broken section must not lose the report
        # One line (the run's files are damaged or unusual); the traceback only at debug level.
        log.warning("report section %s could not be rendered: %s: %s", anchor, type(e).__name__, e)
        log.debug("report section %s failed", anchor, exc_info=True)
        return H.note(f"This section could not be rendered: {type(e).__name__}: {e}", warn=True)


def _cards(rf: RunFiles) -> list[tuple[str, str]]:
    """The headline figures at the top of the report."""
    m = rf.metrics
    cards = [("val accuracy", f"{m.get('val_accuracy', float('nan')):.4f}")]  # numbers: checked by RunFiles
    if rf.is_multi_label():
        cards = _multilabel_cards(rf)
    if m.get("test_accuracy") is not None:
        cards.append(
            ("test accuracy" + (" (shift!)" if m.get("test_shift") is True else ""), f"{m['test_accuracy']:.4f}")
        )
    if m.get("val_macro_f1") is not None and not rf.is_multi_label():
        cards.append(("macro F1", f"{m['val_macro_f1']:.4f}"))
    cards += [
        ("classes", str(len(m.get("classes") or []))),
        ("kept stage", str(m.get("kept_stage", "?"))),
        ("backbone", str((m.get("backbone") or {}).get("name", "?"))),
    ]
    if m.get("train_seconds") is not None:
        cards.append(("train time", f"{m['train_seconds']:.1f} s"))
    return cards
