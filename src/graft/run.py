"""A whole training run written to a run directory (what ``graft train`` does).

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

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import Classifier
from .fileio import write_json
from .progress import NullProgress, Progress

__all__ = ["RunOptions", "train_run", "hardware_info"]


@dataclass
class RunOptions:
    """Options of :func:`train_run` beyond the :class:`Classifier` parameters."""

    fine_tune: bool = False
    epochs: int = 4
    unfreeze: int = -1
    lr: float = 1e-4
    backbone_lr_ratio: float = 1.0
    schedule: str = "cosine"
    patience: int = 3
    augment: str = "light"
    ft_batch_size: int = 32
    baseline: str | None = None  # None | "scratch"
    baseline_epochs: int | None = None  # default: same as fine-tuning epochs
    baseline_lr: float = 1e-3  # random init needs a larger LR than fine-tuning
    resume: bool = False


def hardware_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def train_run(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    clf: Classifier,
    options: RunOptions | None = None,
    *,
    argv: list[str] | None = None,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Fit (and optionally fine-tune and compare with a scratch baseline), then write RUN_DIR.

    Returns:
        The content of ``metrics.json``.
    """

    opts = options or RunOptions()
    progress = progress or NullProgress()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ``started`` lets the CLI count interpreter start-up and imports too.
    t_start = time.perf_counter() if started is None else started
    clf.progress = progress
    clf.fit(data_dir)
    stages: dict[str, Any] = {"head": dict(clf.stage_metrics_["head"])}
    if opts.fine_tune:
        clf.fine_tune(
            epochs=opts.epochs, unfreeze=opts.unfreeze, lr=opts.lr, backbone_lr_ratio=opts.backbone_lr_ratio,
            schedule=opts.schedule, patience=opts.patience, augment=opts.augment, batch_size=opts.ft_batch_size,
            checkpoint_dir=out / "checkpoints", resume=opts.resume,
        )
        stages["fine_tune"] = dict(clf.stage_metrics_["fine_tune"])
    baseline = None
    if opts.baseline == "scratch":
        baseline = _run_baseline(clf, opts, progress)
        stages["baseline_scratch"] = baseline
    clf.save(out / "model")

    m = clf.metrics_
    data = clf.data_
    write_json(out / "history.json", {**clf.history_, **({"baseline": baseline.pop("history")} if baseline else {})})
    write_json(out / "data.json", {
        **data.summary(),
        "skipped": [s.to_dict() for s in data.skipped],
        "ignored": data.ignored,
        "image_sizes": {
            split: [[r.width, r.height] for r in recs] for split, recs in data.splits.items()
        },
    })
    write_json(out / "val_predictions.json", {
        "classes": clf.classes_,
        "paths": clf.val_paths_,
        "labels": np.asarray(clf.val_labels_).tolist(),
        "probs": np.round(np.asarray(clf.val_probs_, dtype=np.float64), 6).tolist(),
    })
    metrics = {
        "val_accuracy": float(m["accuracy"]),
        "val_top_k_accuracy": m.get(f"top{m['top_k']}_accuracy"),
        "val_macro_f1": m["macro_f1"],
        "val_log_loss": m.get("log_loss"),
        "val_ece": m.get("ece"),
        "train_seconds": None,  # filled below, last, so it covers everything
        "classes": clf.classes_,
        "counts": data.summary().get("counts"),
        "skipped": [s.to_dict() for s in data.skipped],
        "n_ignored": len(data.ignored),
        "stages": stages,
        "kept_stage": "fine_tune" if clf.fine_tuned_ else "head",
        "backbone": clf.backbone_info_,
        "timings": clf.timings_,
    }
    from .model import versions

    write_json(out / "run.json", {
        "argv": argv if argv is not None else sys.argv,
        "data_dir": str(Path(data_dir).resolve()),
        "params": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in clf.get_params().items() if k != "progress"},
        "options": asdict(opts),
        "seed": clf.seed,
        "versions": versions(),
        "hardware": hardware_info(),
        "device": clf.device_,
        "timings": clf.timings_,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    metrics["train_seconds"] = time.perf_counter() - t_start
    write_json(out / "metrics.json", metrics)
    return metrics


def _run_baseline(clf: Classifier, opts: RunOptions, progress: Progress) -> dict[str, Any]:
    from .features.runtime import choose_precision, default_num_workers
    from .training import FineTuneConfig
    from .training.baseline import train_from_scratch

    cfg = FineTuneConfig(
        epochs=opts.baseline_epochs or opts.epochs, lr=opts.baseline_lr, schedule=opts.schedule,
        patience=max(opts.patience, opts.baseline_epochs or opts.epochs), augment=opts.augment,
        batch_size=opts.ft_batch_size,
    )
    skipped = {s.path for s in clf.data_.skipped}
    tr = [r for r in clf.data_.splits["train"] if str(r.path) not in skipped]
    _net, res = train_from_scratch(
        clf.backbone_info_["architecture"], len(clf.classes_), clf.preprocessing_,
        ([str(r.path) for r in tr], np.array([r.label for r in tr])), (clf.val_paths_, clf.val_labels_),
        config=cfg, device=clf.device_, precision=choose_precision(clf.precision, clf.device_),
        num_workers=default_num_workers() if clf.num_workers is None else clf.num_workers,
        seed=clf.seed, progress=progress,
    )
    return {
        "val_accuracy": res.best_val_acc, "best_epoch": res.best_epoch, "epochs": cfg.epochs,
        "seconds": res.seconds, "history": res.history,
    }
