"""Assemble ``report.html`` from the files ``graft train`` writes into a run directory."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import html as H

__all__ = ["write_report", "RunFiles"]

log = logging.getLogger(__name__)


class RunFiles:
    """The JSON files of a run directory, each ``{}`` when absent (older or partial runs)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.metrics = self._read("metrics.json")
        self.history = self._read("history.json")
        self.data = self._read("data.json")
        self.run = self._read("run.json")
        self.preds = self._read("val_predictions.json")
        cfg = run_dir / "model" / "config.json"
        self.model_config: dict[str, Any] = json.loads(cfg.read_text()) if cfg.exists() else {}

    def _read(self, name: str) -> dict[str, Any]:
        p = self.dir / name
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except ValueError as e:
            raise ValueError(f"{p} is not valid JSON ({e}); the run directory is damaged") from e


class _Figures:
    """Saves figures to RUN_DIR/report/NAME.png and returns ``<img>`` tags embedding them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, fig: Any, alt: str, dpi: int = 90, photo: bool = False) -> str:
        """Save and embed ``fig``; ``photo`` grids go as JPEG (a fifth of the PNG size, faster to encode)."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.{'jpg' if photo else 'png'}"
        kw = {"pil_kwargs": {"quality": 85}} if photo else {}
        # Photo grids are laid out by tight_layout already; "tight" bboxes would draw them twice.
        fig.savefig(path, dpi=dpi, bbox_inches=None if photo else "tight", facecolor="white", **kw)
        plt.close(fig)
        return H.img_tag(path, alt)


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
    if not (run_dir / "metrics.json").exists():
        raise FileNotFoundError(
            f"{run_dir} is not a graft run directory (no metrics.json); pass the RUN_DIR that graft train wrote"
        )
    t0 = time.perf_counter()
    rf = RunFiles(run_dir)
    figs = _Figures(run_dir / "report")
    from . import sections as S

    builders: list[tuple[str, str, Callable[[RunFiles, _Figures], str | None]]] = [
        ("data", "Dataset", S.dataset_section),
        ("training", "Training", S.training_section),
        ("baseline", "Transfer learning vs from scratch", S.baseline_section),
        ("evaluation", "Validation metrics", S.evaluation_section),
        ("calibration", "Calibration", S.calibration_section),
        ("top-losses", "Top losses", S.top_losses_section),
        ("gradcam", "Grad-CAM", S.gradcam_section),
        ("facts", "Run facts", S.facts_section),
    ]
    sections: list[tuple[str, str, str]] = []
    for anchor, title, build in builders:
        try:
            body = build(rf, figs)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the report
            log.warning("report section %s failed: %s", anchor, e, exc_info=True)
            body = H.note(f"This section could not be rendered: {type(e).__name__}: {e}", warn=True)
        if body:
            sections.append((anchor, title, body))
    m = rf.metrics
    cards = [("val accuracy", f"{m.get('val_accuracy', float('nan')):.4f}")]
    if m.get("val_macro_f1") is not None:
        cards.append(("macro F1", f"{m['val_macro_f1']:.4f}"))
    cards += [
        ("classes", str(len(m.get("classes", [])))),
        ("kept stage", str(m.get("kept_stage", "?"))),
        ("backbone", str((m.get("backbone") or {}).get("name", "?"))),
    ]
    if m.get("train_seconds") is not None:
        cards.append(("train time", f"{m['train_seconds']:.1f} s"))
    subtitle = f"{rf.run.get('data_dir', '')}  ·  {rf.run.get('started', '')}  ·  report built in {time.perf_counter() - t0:.1f} s"
    doc = H.page(f"graft report: {run_dir.resolve().name}", subtitle, cards, sections)
    out = run_dir / "report.html"
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(doc, encoding="utf-8")  # explicit: class names need not be ASCII, the locale may be C
    os.replace(tmp, out)
    return out


def chosen_c(rf: RunFiles) -> float | None:
    """The C the linear head was fitted with (model config), if known."""
    head = (rf.model_config.get("training") or {}).get("head") or {}
    c = head.get("C")
    return float(c) if c is not None else None


def val_arrays(rf: RunFiles) -> tuple[list[str], np.ndarray, np.ndarray, list[str]] | None:
    """(paths, labels, probs, classes) of the validation predictions, or None if absent/empty."""
    p = rf.preds
    if not p or not p.get("paths"):
        return None
    return list(p["paths"]), np.asarray(p["labels"], np.int64), np.asarray(p["probs"], np.float64), list(p["classes"])
