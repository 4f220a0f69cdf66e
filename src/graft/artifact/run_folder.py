"""The run folder ``graft train`` writes, in one place for every reader and writer.

RUN_DIR/
  model/               the model directory (config.json + model.safetensors)
  metrics.json         val_accuracy, train_seconds, classes, skipped, per-stage figures
  history.json         per-stage training records (curves)
  data.json            dataset summary: counts per split and class, skipped, ignored, sizes
  val_predictions.json validation paths, labels and probabilities (report, top losses)
  run.json             command line, options, seed, versions, hardware, times per stage
  checkpoints/         fine-tuning checkpoints (best/, last/) for --resume
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from graft.fileio import storage_errors, write_json

__all__ = ["RunFolder"]


class RunFolder:
    """Paths and JSON files of one run folder; a missing or damaged file reads as ``{}``."""

    MODEL = "model"
    METRICS = "metrics.json"
    HISTORY = "history.json"
    DATA = "data.json"
    VAL_PREDICTIONS = "val_predictions.json"
    RUN = "run.json"
    CHECKPOINTS = "checkpoints"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def of_model(cls, model_dir: str | os.PathLike) -> RunFolder | None:
        """The run folder holding ``model_dir`` (``RUN_DIR/model``), if it is one."""
        model_dir = Path(model_dir)
        run = cls(model_dir.parent)
        return run if model_dir.name == cls.MODEL and (run.path / cls.RUN).is_file() else None

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def exists(self) -> bool:
        """True once ``run.json`` is written."""
        return (self.path / self.RUN).is_file()

    def failed_before_training(self) -> bool:
        """A run that failed before writing anything but ``run.json`` (a wrong option, a missing dataset).

        It has nothing to resume and nothing to lose, so its own corrected retry may use the folder.
        """
        if self.read(self.RUN).get("status") != "failed":
            return False
        return all(p.name == self.RUN or (p.is_dir() and not any(p.rglob("*"))) for p in self.path.iterdir())

    def done_since(self, t: float) -> bool:
        """True once ``run.json`` says ``done`` and was written at ``t`` (``time.time()``) or later."""
        try:
            fresh = (self.path / self.RUN).stat().st_mtime >= t
        except OSError:
            return False
        return fresh and self.read(self.RUN).get("status") == "done"

    def read(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.path / name).read_text())
        except (OSError, ValueError, RecursionError):  # missing, damaged, or nested too deeply
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, name: str, data: Any) -> Path:
        """Atomically write one JSON file of the run (a full or read-only ``--out`` is one line naming it)."""
        with storage_errors(self.path, "--out"):
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / name, data)
        return self.path / name

    def data_dir(self) -> Path | None:
        """The dataset the run trained on, if recorded and still present."""
        d = self.read(self.RUN).get("data_dir")
        return Path(d) if isinstance(d, str) and Path(d).is_dir() else None

    def val_split(self, classes: Sequence[str]) -> tuple[list[str], list[int]] | None:
        """(paths, labels) of the run's validation split, if recorded for these classes and all present."""
        d = self.read(self.VAL_PREDICTIONS)
        paths = d.get("paths")
        labels = d.get("labels")
        if list(d.get("classes", [])) != list(classes) or not isinstance(paths, list) or not paths:
            return None
        if not isinstance(labels, list) or len(labels) != len(paths) or not all(Path(str(p)).is_file() for p in paths):
            return None
        return [str(p) for p in paths], [int(v) for v in labels]
