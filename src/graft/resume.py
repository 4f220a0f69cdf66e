"""Continuing an interrupted ``graft train`` run from its folder alone (``graft train --resume RUN``).

What the run recorded in ``run.json`` (the data, the parameters, the options) is what it continues
with; only where the data now is may change, when the dataset moved since.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from graft.artifact.run_folder import RunFolder
from graft.classifier import Classifier
from graft.classifier_io import params_from_record
from graft.exceptions import DataError
from graft.progress import Progress
from graft.run import RunOptions, train_run

__all__ = ["report_wanted", "resume_run"]


def resume_run(
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    argv: list[str] | None = None,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Continue an interrupted run from its folder alone: the data, parameters and options in ``run.json``.

    ``data_dir``: the dataset's new place, where it moved since the run started (None: where it was).

    Raises:
        DataError: ``run_dir`` has no ``run.json`` (not a graft run folder), or its dataset is gone
            and no new place was given, or ``data_dir`` is another dataset than the run's.
    """
    run = RunFolder(run_dir)
    saved = run.read(RunFolder.RUN)
    if not saved.get("data_dir") or not isinstance(saved.get("params"), dict):
        raise DataError(
            f"{run_dir} is not a graft run directory (no usable run.json); pass the RUN_DIR of the interrupted run"
        )
    data = _resumed_data(run_dir, str(saved["data_dir"]), data_dir)
    opts = dataclasses.replace(RunOptions.from_dict(dict(saved.get("options") or {})), resume=True)
    params = params_from_record(Classifier, saved["params"])
    return train_run(data, run.path, Classifier(**params), opts, argv=argv, progress=progress, started=started)


def report_wanted(run_dir: str | os.PathLike) -> bool:
    """Whether the run in ``run_dir`` was started to write its report (``--no-report`` is kept on ``--resume``)."""
    return RunOptions.from_dict(dict(RunFolder(run_dir).read(RunFolder.RUN).get("options") or {})).report


def _resumed_data(run_dir: str | os.PathLike, recorded: str, given: str | os.PathLike | None) -> str:
    """Where the resumed run reads its data: the recorded place, or the one given where the data moved."""
    if given is None:
        if not Path(recorded).exists():
            raise DataError(
                f"the dataset of {run_dir} was at {recorded} and is gone; if it moved, pass its new place: "
                f"graft train NEW_PLACE --resume {run_dir}"
            )
        return recorded
    if Path(recorded).exists() and Path(recorded).resolve() != Path(given).resolve():
        raise DataError(
            f"{run_dir} was trained on {recorded}; --resume continues it there: drop {given} (or pass {recorded})"
        )
    return str(given)
