"""What the report reads: the run folder's files, and where its figures go."""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graft.artifact.run_folder import RunFolder
from graft.data.scan import SPLIT_ALIASES
from graft.report import html as H

__all__ = ["RunFiles", "Figures", "chosen_c", "val_arrays"]

log = logging.getLogger("graft")
_SPLIT_NAMES = {a for aliases in SPLIT_ALIASES.values() for a in aliases}
#: metrics.json fields the report reads, and the type each must have (a wrong one is dropped, with a warning).
_NUMBERS = ("val_accuracy", "test_accuracy", "val_macro_f1", "train_seconds", "budget_seconds", "temperature")
_MULTILABEL_NUMBERS = ("val_map", "val_map_micro", "val_f1_micro", "val_f1_macro", "val_subset_accuracy")
_METRIC_TYPES: dict[str, type] = {
    **{k: numbers.Real for k in _NUMBERS + _MULTILABEL_NUMBERS},
    **{k: list for k in ("classes", "skipped", "ladder", "thresholds")},
    "multi_label": bool,
    **{k: dict for k in ("counts", "stages", "backbone", "features", "timings")},
    "kept_stage": str,
}
_KIND: dict[type, str] = {numbers.Real: "number", str: "text", list: "list", dict: "JSON object", bool: "true/false"}


class RunFiles:
    """The JSON files of a run directory, each ``{}`` when absent (older or partial runs)."""

    def __init__(self, run_dir: Path) -> None:
        run = RunFolder(run_dir)
        self.dir = run_dir
        self.metrics = _typed(run.read(RunFolder.METRICS), _METRIC_TYPES, run_dir / RunFolder.METRICS)
        self.history = run.read(RunFolder.HISTORY)
        self.data = run.read(RunFolder.DATA)
        self.run = run.read(RunFolder.RUN)
        self.preds = run.read(RunFolder.VAL_PREDICTIONS)
        self.model_config: dict[str, Any] = RunFolder(run.model_dir).read("config.json")

    def is_multi_label(self) -> bool:
        """A multi-label run: ``"multi_label": true`` in metrics.json, or a 0/1 label matrix in val_predictions.json."""
        labels = self.preds.get("labels")
        return self.metrics.get("multi_label") is True or bool(labels and isinstance(labels[0], list))

    def dataset_image(self, path: str) -> Path | None:
        """``path`` if it is an image of the dataset the run recorded (``DATA/[split/]class/...``), else None.

        ``val_predictions.json`` travels with a shared run folder: the report must never embed
        whatever file it names (the recipient's own photos), only the dataset's images.
        """
        root, classes = self.run.get("data_dir"), self.preds.get("classes")
        if not isinstance(root, str) or not root or not isinstance(classes, list):
            return None
        try:
            resolved = Path(path).resolve()
            rel = resolved.relative_to(Path(root).resolve()).parts
        except (OSError, RuntimeError, ValueError, TypeError):  # outside the dataset, or not a path at all
            return None
        in_split = len(rel) >= 3 and rel[0].lower() in _SPLIT_NAMES
        cls = rel[1] if in_split else (rel[0] if len(rel) >= 2 else None)
        return resolved if cls in classes else None


class Figures:
    """Saves figures and photos to RUN_DIR/report/ and returns the HTML that embeds them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, fig: Any, alt: str, dpi: int = 90) -> str:
        """Save ``fig`` as ``NAME.png`` and embed it."""
        import matplotlib.pyplot as plt

        from graft.report.plots import names_as_text

        path = self.out / f"{name}.png"
        with names_as_text():
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
    """(paths, labels, probs, classes) of single-label validation predictions, or None if absent/empty.

    None for a multi-label run too: the sections built on one true class per image (confusion
    matrix, top-k accuracy, top-1 reliability, top losses, Grad-CAM) are left out, and
    :mod:`graft.report.multilabel` shows its own.
    """
    p = rf.preds
    if not p or not p.get("paths") or rf.is_multi_label():
        return None
    return list(p["paths"]), np.asarray(p["labels"], np.int64), np.asarray(p["probs"], np.float64), list(p["classes"])


def _typed(data: dict[str, Any], types: dict[str, type], source: Path) -> dict[str, Any]:
    """``data`` without the fields whose type is wrong (a damaged or hand-edited file), each named in one warning."""
    wrong = [k for k, t in types.items() if data.get(k) is not None and not _is(data[k], t)]
    for k in wrong:
        shown = repr(data[k])[:60]
        log.warning("%s: %r should be a %s, not %s; the report leaves it out", source, k, _KIND[types[k]], shown)
    return {k: v for k, v in data.items() if k not in wrong}


def _is(value: Any, t: type) -> bool:
    return isinstance(value, t) and not (t is numbers.Real and isinstance(value, bool))
