"""What the report reads: the run folder's files, and where its figures go."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
    """Saves figures and photos to RUN_DIR/report/ and returns the HTML that embeds them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, fig: Any, alt: str, dpi: int = 90) -> str:
        """Save ``fig`` as ``NAME.png`` and embed it."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        return H.img_tag(path, alt)

    def add_photos(
        self,
        name: str,
        images: Sequence[np.ndarray],
        captions: Sequence[str],
        cols: int,
        colours: Sequence[str] | None = None,
    ) -> str:
        """Save uint8 images as ``NAME_00.jpg``... (at most 256 px a side) and embed them as a captioned grid."""
        from PIL import Image

        for old in self.out.glob(f"{name}_[0-9][0-9].jpg"):  # a rebuilt report may show fewer
            old.unlink()
        photos = []
        for i, (img, cap) in enumerate(zip(images, captions)):
            im = Image.fromarray(np.ascontiguousarray(img))
            im.thumbnail((256, 256))
            path = self.out / f"{name}_{i:02d}.jpg"
            im.save(path, quality=85)
            photos.append((path, cap.splitlines(), colours[i] if colours else "#222"))
        return H.photo_grid(photos, cols=min(cols, max(len(photos), 1)))


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
