"""The learning curve's outputs: the figure, ``curve.json`` and ``curve.png`` in a run folder."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from graft.artifact.run_folder import RunFolder
from graft.curve.points import CURVE_JSON, CURVE_PNG, LearningCurve
from graft.exceptions import DataError
from graft.fileio import atomic_write_bytes

__all__ = ["check_outputs", "curve_figure", "save_curve", "scratch_accuracy", "write_curve_png"]


def _tick_labels(x: np.ndarray) -> list[str]:
    """Images per class at each point, "all" under the last; a label crowding the last one is left out."""
    labels = [f"{v:.0f}" if v >= 10 else f"{v:.3g}" for v in x]
    labels[-1] += "\n(all)"
    if len(x) > 1 and np.log2(x[-1] / x[-2]) < 0.6:
        labels[-2] = ""
    return labels


def curve_figure(curve: LearningCurve, scratch: float | None = None) -> Any:
    """Accuracy (mean, error bars: one standard deviation) against images per class on a log2 axis.

    ``scratch``: the from-scratch baseline's accuracy with all images, drawn as its own marker.
    A bare :class:`matplotlib.figure.Figure` (no pyplot): no global backend is touched.
    """
    from matplotlib.figure import Figure

    multi = curve.metric == "map"  # multi-label: mAP against images per label (the size asked for)
    x = np.asarray(curve.sizes if multi else curve.n_images, dtype=float) / (1 if multi else max(curve.n_classes, 1))
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    seeds = max(len(s) for s in curve.per_seed)
    ax.errorbar(
        x,
        curve.mean,
        yerr=curve.std,
        fmt="o-",
        capsize=3,
        color="#4C72B0",
        label=f"linear head on frozen features (mean ± sd, {seeds} seeds)",
    )
    if scratch is not None:
        ax.plot([x[-1]], [scratch], "s", color="#C44E52", ms=8, label="from scratch, all images")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels(_tick_labels(x), fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel(f"training images per {'label' if multi else 'class'} (log2 scale)")
    ax.set_ylabel("validation mAP" if multi else "validation accuracy")
    ax.set_title("\n".join(textwrap.wrap(curve.verdict, 70)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_curve_png(curve: LearningCurve, path: str | os.PathLike, scratch: float | None = None) -> Path:
    """Save :func:`curve_figure` as a PNG (atomically: a reader never sees half a file)."""
    buf = io.BytesIO()
    curve_figure(curve, scratch).savefig(buf, format="png", dpi=90, facecolor="white")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def scratch_accuracy(run_dir: str | os.PathLike) -> float | None:
    """The from-scratch baseline's validation accuracy recorded in a run folder, if it was measured."""
    stages = RunFolder(run_dir).read(RunFolder.METRICS).get("stages") or {}
    base = stages.get("baseline_scratch") if isinstance(stages, dict) else None
    acc = base.get("val_accuracy") if isinstance(base, dict) else None
    return float(acc) if isinstance(acc, (int, float)) else None


def save_curve(curve: LearningCurve, run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write RUN_DIR/curve.json and RUN_DIR/report/curve.png (``graft report`` shows them).

    The figure marks the run's from-scratch baseline when its metrics.json has one.
    """
    run = RunFolder(run_dir)
    json_path = run.write(CURVE_JSON, curve.to_dict())
    scratch = scratch_accuracy(run.path) if curve.metric != "map" else None  # a subset accuracy is no mAP
    return json_path, write_curve_png(curve, run.path / CURVE_PNG, scratch)


def check_outputs(
    data_dir: str | os.PathLike, *, out: str | os.PathLike | None = None, png: str | os.PathLike | None = None
) -> None:
    """Refuse output paths that cannot work, before the curve is computed (one-line errors)."""
    data = Path(data_dir).resolve()
    if out is not None:
        o = Path(out)
        if o.exists() and not o.is_dir():
            raise DataError(f"--out {out} is a file; pass a run directory (graft train --out) or a new folder")
        if o.resolve() == data or data in o.resolve().parents:
            raise DataError(f"--out {out} is inside the dataset folder {data_dir}; choose a folder outside it")
        trained_on = RunFolder(o).read(RunFolder.RUN).get("data_dir")
        if isinstance(trained_on, str) and Path(trained_on).resolve() != data:
            raise DataError(
                f"--out {out} is the run of another dataset ({trained_on}); pass {data_dir}'s run or a new folder"
            )
    if png is not None and Path(png).is_dir():
        raise DataError(f"--png {png} is a folder; pass a file name such as curve.png")
