"""Learning curve: validation accuracy against training images per class, from cached features.

Answers "will labelling more images help?" before anyone labels them. The dataset is
embedded once (graft's stage-1 embedding, through the on-disk feature cache, no
augmented views); then graft's default linear head is refitted on nested per-class
subsamples for several seeds. Each fit is a logistic regression on cached features,
so no image is decoded twice and a warm curve costs only the head fits.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graft.artifact.run_folder import RunFolder
from graft.exceptions import DataError
from graft.fileio import atomic_write_bytes
from graft.progress import NullProgress, Progress
from graft.validation import check_number, invalid_parameter

__all__ = [
    "CURVE_JSON",
    "CURVE_PNG",
    "FEW_SHOT_C",
    "HELPS_POINTS_PER_DOUBLING",
    "LearningCurve",
    "check_outputs",
    "curve_figure",
    "curve_from_features",
    "default_sizes",
    "learning_curve",
    "save_curve",
    "scratch_accuracy",
    "slope_per_doubling",
    "verdict",
    "write_curve_png",
]

CURVE_JSON = "curve.json"  # in the run folder, beside metrics.json: what the report's section reads
CURVE_PNG = Path("report") / "curve.png"  # the figure the report embeds

#: C of the linear head where cross-validation is impossible (a class with one image).
#: With one image per class the small-C limit of logistic regression is the nearest-class-mean
#: classifier on centred features, the standard few-shot baseline. Measured over 10 seeds at
#: one image per class, accuracy hardly moves with C (hymenoptera 0.624 at every C of the grid;
#: sign_digits 0.474 at C=0.001, 0.464-0.466 from 0.03 to 10): the grid's smallest C is best.
FEW_SHOT_C = 0.001

#: Verdict threshold, in accuracy points per doubling of the training images. Doubling the
#: labels doubles the labelling bill spent so far, so a gain under one point for it means the
#: curve has flattened. It is also well above the noise of the slope itself: a difference of
#: 5-seed means two doublings apart, whose seeds spread by 0.4-1.4 points (standard deviation)
#: at the top subsampled sizes of hymenoptera and sign_digits, i.e. a few tenths of a point per
#: doubling. Measured: sign_digits +2.4 (0.93 at 100 per class, 0.94 at all 166), hymenoptera +0.3.
HELPS_POINTS_PER_DOUBLING = 1.0
LAST_DOUBLINGS = 2.0  # the slope is measured over this many doublings, ending at the full size

_OWNER = "learning_curve"


@dataclass
class LearningCurve:
    """Validation accuracy of the default linear head at each training size.

    Attributes:
        sizes: training images per class asked for at each point; the last is "all"
            (the largest class's count), where every class contributes all its images.
        n_images: training images actually used at each point (small classes cap it).
        mean, std: accuracy over seeds (sample standard deviation; 0 with one seed).
        per_seed: the accuracy of every seed; one value at the full size, where every
            seed draws the same images.
        slope: accuracy points gained per doubling of the training images over the last
            doublings (None with fewer than two sizes); ``span`` is how many doublings.
        verdict: one sentence: is labelling more likely to help?
    """

    sizes: list[int]
    n_images: list[int]
    mean: list[float]
    std: list[float]
    per_seed: list[list[float]]
    n_classes: int
    n_val: int
    slope: float | None
    span: float
    verdict: str
    classes: list[str] = field(default_factory=list)
    backbone: str = ""
    data_dir: str = ""
    split: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (what ``curve.json`` and ``graft curve --json`` hold)."""
        return dataclasses.asdict(self)


def default_sizes(largest_class: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, 100, ... below ``largest_class``, then ``largest_class`` (all images)."""
    out: list[int] = []
    decade = 1
    while decade < largest_class:
        out += [m * decade for m in (1, 2, 5) if m * decade < largest_class]
        decade *= 10
    return out + [largest_class]


def _subsample(y: np.ndarray, per_class: int, rng_seed: int) -> np.ndarray:
    """Sorted rows: the first ``per_class`` of each class in a seeded shuffle (nested across sizes)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rows.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(rows))


def _accuracy(
    X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, n_classes: int, seed: int,
    C: float | None = None,
) -> tuple[float, float]:  # fmt: skip
    """(validation accuracy, C) of the default linear head fitted on (X, y): C given, by CV, or FEW_SHOT_C."""
    from graft.training.linear_probe import fit_linear_head

    counts = np.bincount(y, minlength=n_classes)
    if C is None and counts[counts > 0].min() < 2:  # CV needs two images of each class
        C = FEW_SHOT_C
    fit = fit_linear_head(X, y, n_classes, C=C, seed=seed)
    return float((fit.logits(X_val).argmax(1) == y_val).mean()), float(fit.C)


def slope_per_doubling(n_images: Sequence[int], mean: Sequence[float]) -> tuple[float | None, float]:
    """(accuracy points per doubling over the last LAST_DOUBLINGS doublings, doublings measured).

    Linear in log2(images), interpolated: the gain from the point two doublings below the
    full size (or the first point, when the curve is shorter) to the full size, per doubling.
    """
    if len(n_images) < 2:
        return None, 0.0
    x = np.log2(np.asarray(n_images, dtype=float))
    acc = 100.0 * np.asarray(mean, dtype=float)
    start = max(float(x[0]), float(x[-1]) - LAST_DOUBLINGS)
    span = float(x[-1]) - start
    return float(acc[-1] - np.interp(start, x, acc)) / span, span


def verdict(slope: float | None, span: float) -> str:
    """One sentence: whether more labels are likely to help, from the recent slope."""
    if slope is None:
        return "Only one training size could be measured, so there is no slope to judge more labels by."
    where = "the last two doublings" if math.isclose(span, LAST_DOUBLINGS) else f"the last {span:.1f} doublings"
    head = f"{slope:+.1f} points per doubling of the training images over {where}"
    if slope >= HELPS_POINTS_PER_DOUBLING:
        return f"{head}: labelling more is likely to help."
    return f"{head}: the curve has flattened, so more labels alone are unlikely to help much."


def _fit_all(
    subsets: list[tuple[np.ndarray, int]],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    jobs: int,
    task: Any,
) -> list[float]:
    """Validation accuracy of one head fit per (rows, seed), ``jobs`` fits side by side.

    CV chooses C once per size, on its first subsample, and the other seeds reuse it (C still
    comes from training rows only; sign_digits: 130 s -> 74 s). Each fit runs on one torch
    thread while ``jobs`` Python threads run them at once (torch releases the GIL).
    """
    import torch

    X, y, X_val, y_val = data
    sizes = [len(rows) for rows, _ in subsets]
    first = {n: i for i, n in reversed(list(enumerate(sizes)))}  # size -> index of its first subsample
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed for every fit: results do not depend on ``jobs``
    pool = ThreadPoolExecutor(max(1, min(jobs, len(subsets))))

    def run(indices: list[int], C_of: dict[int, float]) -> dict[int, tuple[float, float]]:
        order = sorted(indices, key=lambda i: -sizes[i])  # largest fits first
        futures = {
            i: pool.submit(
                _accuracy,
                X[subsets[i][0]],
                y[subsets[i][0]],
                X_val,
                y_val,
                n_classes,
                subsets[i][1],
                C_of.get(sizes[i]),
            )  # fmt: skip
            for i in order
        }
        for _ in as_completed(futures.values()):
            task.advance()
        return {i: f.result() for i, f in futures.items()}

    try:
        done = run(sorted(first.values()), {})
        done.update(run([i for i in range(len(subsets)) if i not in done], {n: done[i][1] for n, i in first.items()}))
        return [done[i][0] for i in range(len(subsets))]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: queued fits are dropped, running ones end
        torch.set_num_threads(old)


def curve_from_features(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    *,
    sizes: Sequence[int] | None = None,
    seeds: int = 5,
    seed: int = 0,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> LearningCurve:
    """The curve on features already embedded: per size, ``seeds`` subsamples, one head fit each.

    Seed ``seed + i`` draws the subsamples (nested: a seed's images at a size include its
    images at every smaller size) and the head's CV folds. At the full size all seeds
    draw the same rows, in order, so that point is exactly a plain fit on all of them.
    ``jobs``: fits run at once (default: the CPU count); the numbers do not depend on it.
    """
    y, y_val = np.asarray(y, np.int64), np.asarray(y_val, np.int64)
    largest = int(np.bincount(y).max()) if len(y) else 0
    if largest == 0 or len(y_val) == 0:
        raise DataError("a learning curve needs training and validation images; found none in one of them")
    asked = default_sizes(largest) if sizes is None else [*sizes, largest]  # the full size is always measured
    ks = sorted({min(int(k), largest) for k in asked})
    plan = [(k, seed + i) for k in ks for i in range(1 if k >= largest else seeds)]
    subsets = [(_subsample(y, k, s), s) for k, s in plan]
    task = (progress or NullProgress()).task("fitting heads", total=len(plan))
    accs = _fit_all(subsets, (X, y, X_val, y_val), n_classes, jobs or os.cpu_count() or 1, task)
    task.close()
    per_seed = [[a for (k, _), a in zip(plan, accs) if k == size] for size in ks]
    n_images = [next(len(r) for (k, _), (r, _) in zip(plan, subsets) if k == size) for size in ks]
    mean = [float(np.mean(a)) for a in per_seed]
    std = [float(np.std(a, ddof=1)) if len(a) > 1 else 0.0 for a in per_seed]
    slope, span = slope_per_doubling(n_images, mean)
    return LearningCurve(ks, n_images, mean, std, per_seed, n_classes, len(y_val), slope, span, verdict(slope, span))


def _check_params(seeds: Any, sizes: Any, val_fraction: Any) -> None:
    check_number("seeds", seeds, _OWNER, low=1, integer=True)
    check_number("val_fraction", val_fraction, _OWNER, low=0, high=1, low_inclusive=False, high_inclusive=False)
    if sizes is not None:
        bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
        if bad or not len(sizes):
            raise invalid_parameter("sizes", _OWNER, "a non-empty list of ints >= 1 (images per class)", sizes)


def learning_curve(
    data_dir: str | os.PathLike,
    *,
    backbone: str = "efficientnet_lite0",
    weights: str | os.PathLike | None = None,
    seeds: int = 5,
    sizes: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> LearningCurve:
    """Validation accuracy against training images per class, for ``graft train``'s defaults.

    Scans ``data_dir`` as ``graft train`` does (same ``val_fraction`` and ``seed``: the same
    validation split), embeds it once through the feature cache, and refits the linear
    head on subsamples (see :func:`curve_from_features`).

    Args:
        seeds: subsamples per size (one at the full size, where all are the same).
        sizes: training images per class to try (default :func:`default_sizes`); sizes
            above the largest class are clipped to it, which is always measured.
        jobs: head fits run at once (default: the CPU count).
        The other arguments are :class:`graft.Classifier`'s.
    """
    from graft.config import resolve_device
    from graft.training.stages import embed_dataset, scan_splits

    _check_params(seeds, sizes, val_fraction)
    check_number("jobs", jobs, _OWNER, low=1, integer=True, allow_none=True)
    prog = progress or NullProgress()
    t0 = time.perf_counter()
    splits = scan_splits(data_dir, val_fraction=val_fraction, seed=seed, progress=prog)
    emb = embed_dataset(
        splits, backbone, weights=weights, augment_views=0, seed=seed, progress=prog, device=resolve_device(device),
        precision=precision, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, use_cache=use_cache,
    )  # fmt: skip
    t1 = time.perf_counter()
    curve = curve_from_features(
        emb.train.X, emb.train.y, emb.val.X, emb.val.y, len(splits.classes), sizes=sizes, seeds=seeds, seed=seed,
        jobs=jobs, progress=prog,
    )  # fmt: skip
    seconds = {"scan_and_embed": t1 - t0, "fits": time.perf_counter() - t1}
    return dataclasses.replace(
        curve, classes=list(splits.classes), backbone=backbone, data_dir=str(Path(data_dir).resolve()),
        split={"val_fraction": val_fraction, "seed": seed}, seconds=seconds,
    )  # fmt: skip


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

    x = np.asarray(curve.n_images, dtype=float) / max(curve.n_classes, 1)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    seeds = max(len(s) for s in curve.per_seed)
    ax.errorbar(x, curve.mean, yerr=curve.std, fmt="o-", capsize=3, color="#4C72B0",
                label=f"linear head on frozen features (mean ± sd, {seeds} seeds)")  # fmt: skip
    if scratch is not None:
        ax.plot([x[-1]], [scratch], "s", color="#C44E52", ms=8, label="from scratch, all images")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels(_tick_labels(x), fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("training images per class (log2 scale)")
    ax.set_ylabel("validation accuracy")
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
    return json_path, write_curve_png(curve, run.path / CURVE_PNG, scratch_accuracy(run.path))


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
