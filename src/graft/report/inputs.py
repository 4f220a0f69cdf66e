"""What the report reads: the run folder's files, and where its figures go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graft.artifact.run_folder import RunFolder
from graft.report import html as H

__all__ = ["RunFiles", "Figures", "chosen_c", "val_arrays"]


class RunFiles:
    """The JSON files of a run directory, each ``{}`` when absent (older or partial runs)."""

    def __init__(self, run_dir: Path) -> None:
        run = RunFolder(run_dir)
        self.dir = run_dir
        self.metrics = run.read(RunFolder.METRICS)
        self.history = run.read(RunFolder.HISTORY)
        self.data = run.read(RunFolder.DATA)
        self.run = run.read(RunFolder.RUN)
        self.preds = run.read(RunFolder.VAL_PREDICTIONS)
        self.model_config: dict[str, Any] = RunFolder(run.model_dir).read("config.json")


class Figures:
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
