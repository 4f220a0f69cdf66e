"""A whole training run written to a run folder (what ``graft train`` and ``graft demo`` do).

The run folder's layout is :class:`graft.artifact.run_folder.RunFolder`. ``run.json``
is written before training starts (``status: running``) and again at the end
(``done``, ``failed``, or ``interrupted`` after Ctrl-C or SIGTERM), so an interrupted run can
always be resumed from its folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from graft import distributed
from graft.artifact.run_folder import RunFolder
from graft.artifact.spec import runtime_versions
from graft.classifier import Classifier
from graft.classifier_io import recorded_params
from graft.config import cpu_info
from graft.exceptions import DataError, Interrupted
from graft.progress import NullProgress, Progress
from graft.training.finetune.options import BASELINES, FineTuneConfig
from graft.validation import Options, check_duration, check_param, invalid_parameter

__all__ = ["RunOptions", "check_run_dir", "train_run", "run_demo", "hardware_info"]


@dataclass
class RunOptions:
    """Options of :func:`train_run` beyond the :class:`Classifier` parameters.

    Attributes:
        fine_tune / tune: stage 2 (``--fine-tune``) and its settings, also those of the scratch baseline.
        baseline / baseline_epochs / baseline_lr: ``"scratch"`` also trains the same network from random
            init (default epochs: ``tune.epochs``; random init needs a larger LR than fine-tuning).
        resume: continue the run in the output folder.
        budget: seconds (or a duration such as ``"20m"``, parsed here once) for the transfer ladder.
    """

    fine_tune: bool = False
    tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    baseline: str | None = None
    baseline_epochs: int | None = None
    baseline_lr: float = 1e-3
    resume: bool = False
    budget: float | None = None
    report: bool = True  # graft train writes report.html at the end (--no-report: False; kept on --resume)
    unlabeled: str | None = None  # a folder of unlabelled images for the head fit (--unlabeled)

    def __post_init__(self) -> None:
        if self.budget is not None:
            self.budget = check_duration("budget", self.budget, "graft train")
            if self.fine_tune:
                raise invalid_parameter(
                    "budget",
                    "graft train",
                    "left out with --fine-tune (the ladder decides whether to fine-tune)",
                    self.budget,
                )
        check_param("baseline", self.baseline, "graft train", Options(BASELINES))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunOptions:
        """From ``run.json``'s ``options`` (also the flat layout of older graft versions)."""
        names = {f.name for f in fields(cls)} - {"tune"}
        tune = saved.get("tune")
        if not isinstance(tune, dict):  # before the options object: the fine-tune fields sat at the top
            tune = {**saved, "batch_size": saved.get("ft_batch_size", FineTuneConfig.batch_size)}
        return cls(**{k: v for k, v in saved.items() if k in names}, tune=FineTuneConfig.from_dict(tune))


def hardware_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": cpu_info()["model"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _run_record(
    run: RunFolder, data_dir: Path, clf: Classifier, opts: RunOptions, argv: list[str] | None, status: str, **extra: Any
) -> None:
    run.write(
        RunFolder.RUN,
        {
            "status": status,
            "argv": argv if argv is not None else sys.argv,
            "data_dir": str(Path(data_dir).resolve()),
            "params": recorded_params(clf),
            "options": opts.to_dict(),
            "seed": clf.seed,
            "versions": runtime_versions(),
            "hardware": hardware_info(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        },
    )


def check_run_dir(out: str | os.PathLike, data_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse a run folder that would write into the dataset, over a file, or over other files.

    Raises:
        DataError: ``out`` is the dataset folder or inside it (never allowed: the next scan
            would read the run as a class), a file, or a non-empty folder without ``overwrite``
            (a run that failed before training wrote anything may be retried in its folder).
    """
    out_p, data_p = Path(out).resolve(), Path(data_dir).resolve()
    if out_p == data_p or data_p in out_p.parents:
        raise DataError(f"--out {out} is inside the dataset folder {data_dir}; choose a folder outside it (e.g. runs/)")
    if out_p.exists() and not out_p.is_dir():
        raise DataError(f"--out {out} is a file; choose a new folder for the run")
    if out_p.is_dir() and any(out_p.iterdir()) and not overwrite and not RunFolder(out_p).failed_before_training():
        kind = "a previous graft run" if (out_p / RunFolder.RUN).exists() else "other files"
        raise DataError(
            f"--out {out} already holds {kind}; choose a new folder, continue it with --resume {out}, "
            "or pass --overwrite to replace what graft writes there"
        )


def train_run(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    clf: Classifier,
    options: RunOptions | None = None,
    *,
    argv: list[str] | None = None,
    progress: Progress | None = None,
    started: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit (and optionally fine-tune and compare with a scratch baseline), then write the run folder.

    ``run.json`` records the options first (``status: running``), so ``--resume`` works
    after any interruption; it ends as ``done``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``.

    Args:
        overwrite: allow ``out`` to be a folder that already holds files (never the dataset).

    Returns:
        The content of ``metrics.json``.
    """
    opts = options or RunOptions()
    # In a job of several processes (torchrun, ``--devices N``) every rank trains, rank 0 alone
    # writes and reports: the run folder is written once.
    distributed.init(clf.device)
    if opts.fine_tune and opts.tune.batch_size % distributed.world_size():  # before stage 1, not after it
        raise invalid_parameter(
            "ft_batch_size",
            "train_run",
            f"a multiple of the {distributed.world_size()} processes (the global batch)",
            opts.tune.batch_size,
        )
    main = distributed.is_main()
    progress = (progress or NullProgress()) if main else NullProgress()
    if not opts.resume:
        distributed.on_rank_zero(check_run_dir, out, data_dir, overwrite=overwrite)
    run = RunFolder(out)
    # ``started`` lets the CLI count interpreter start-up and imports too.
    t_start = time.perf_counter() if started is None else started
    record = _run_record if main else lambda *_a, **_k: None
    record(run, Path(data_dir), clf, opts, argv, "running", processes=distributed.world_size())
    clf.progress = progress
    try:
        stages = _train_stages(clf, data_dir, run, opts, progress, t_start)
        if main:
            clf.save(run.model_dir)
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C or SIGTERM: nothing failed, --resume goes on
        record(run, Path(data_dir), clf, opts, argv, "interrupted", processes=distributed.world_size())
        raise
    except BaseException:
        record(run, Path(data_dir), clf, opts, argv, "failed", processes=distributed.world_size())
        raise
    return distributed.on_rank_zero(_finish, run, clf, stages, opts, Path(data_dir), argv, progress, t_start)


def _finish(
    run: RunFolder,
    clf: Classifier,
    stages: dict[str, Any],
    opts: RunOptions,
    data_dir: Path,
    argv: list[str] | None,
    progress: Progress,
    t_start: float,
) -> dict[str, Any]:
    """Write the outputs, score the test split, mark the run done (rank 0): metrics.json's content."""
    metrics = _write_outputs(run, clf, stages)
    metrics.update(_test_split(clf, progress))
    if opts.budget is not None:
        metrics["budget_seconds"] = opts.budget
    extra = {"device": clf.device_, "timings": clf.timings_, "processes": distributed.world_size()}
    _run_record(run, data_dir, clf, opts, argv, "done", **extra)
    metrics["train_seconds"] = time.perf_counter() - t_start
    run.write(RunFolder.METRICS, metrics)
    return metrics


def _train_stages(
    clf: Classifier, data_dir: str | os.PathLike, run: RunFolder, opts: RunOptions, progress: Progress, t_start: float
) -> dict[str, Any]:
    budget = None
    if opts.budget is not None:  # counted from the command's start: start-up and imports are the user's time too
        budget = max(opts.budget - (time.perf_counter() - t_start), 1.0)
    checkpoints = run.checkpoints if budget is not None else None
    clf.fit(data_dir, budget=budget, checkpoint_dir=checkpoints, resume=opts.resume, unlabeled=opts.unlabeled)
    if opts.baseline == "scratch" and getattr(clf.data_, "multi_label", False):  # say so before fine-tuning
        raise invalid_parameter(
            "baseline", "graft train", "left out for multi-label data (single-label only)", "scratch"
        )
    stages: dict[str, Any] = {"head": dict(clf.stage_metrics_["head"])}
    if clf.fine_tuned_:  # the budget ladder kept a fine-tuned rung
        stages["fine_tune"] = dict(clf.stage_metrics_["fine_tune"])
    if opts.fine_tune:
        clf.fine_tune(opts.tune, checkpoint_dir=run.checkpoints, resume=opts.resume)
        stages["fine_tune"] = dict(clf.stage_metrics_["fine_tune"])
    if opts.baseline == "scratch":
        epochs = opts.baseline_epochs or opts.tune.epochs
        scratch = dataclasses.replace(
            opts.tune, epochs=epochs, lr=opts.baseline_lr, patience=max(opts.tune.patience, epochs)
        )
        stages["baseline_scratch"] = clf.baseline(scratch)
    return stages


def _write_outputs(run: RunFolder, clf: Classifier, stages: dict[str, Any]) -> dict[str, Any]:
    """history.json, data.json and val_predictions.json; returns metrics.json's content."""
    m, data = clf.metrics_, clf.data_
    baseline = stages.get("baseline_scratch")
    run.write(RunFolder.HISTORY, {**clf.history_, **({"baseline": baseline.pop("history")} if baseline else {})})
    run.write(
        RunFolder.DATA,
        {
            **data.summary(),
            "skipped": [s.to_dict() for s in data.skipped],
            "ignored": data.ignored,
            "image_sizes": {split: [[r.width, r.height] for r in recs] for split, recs in data.splits.items()},
        },
    )
    run.write(
        RunFolder.VAL_PREDICTIONS,
        {
            "classes": clf.classes_,
            "paths": clf.val_paths_,
            "labels": np.asarray(clf.val_labels_).tolist(),
            "probs": np.round(np.asarray(clf.val_probs_, dtype=np.float64), 6).tolist(),
        },
    )
    stage = clf.stage_metrics_.get("fine_tune", {}) if clf.fine_tuned_ else clf.head_info_
    return {
        **_val_metrics(m),
        "temperature": stage.get("temperature", stage.get("temperatures")),
        "features": clf.head_info_.get("features"),
        "unlabeled": _unlabeled_record(clf),
        "ladder": clf.ladder_,
        "budget_seconds": None,  # the user's, filled by _finish
        "train_seconds": None,  # filled last, so it covers everything
        "classes": clf.classes_,
        "counts": data.summary().get("counts"),
        "totals": data.summary().get("totals"),  # images per split (a multi-label image counts once per label above)
        "skipped": [s.to_dict() for s in data.skipped],
        "n_ignored": len(data.ignored),
        "stages": stages,
        "kept_stage": "fine_tune" if clf.fine_tuned_ else "head",
        "backbone": clf.backbone_info_,
        "timings": clf.timings_,
    }


def _val_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's validation figures: a multi-label model's are mAP, F1, subset accuracy, Hamming loss."""
    if m.get("multi_label"):
        return {
            "val_accuracy": float(m["accuracy"]),  # = subset accuracy: comparisons and prints keep working
            "val_subset_accuracy": m["subset_accuracy"],
            "val_hamming_loss": m["hamming_loss"],
            "val_map": m["map_macro"],
            "val_map_micro": m["map_micro"],
            "val_f1_micro": m["f1_micro"],
            "val_f1_macro": m["f1_macro"],
            "val_log_loss": m.get("log_loss"),
            "multi_label": True,
            "thresholds": m.get("thresholds"),
        }
    return {
        "val_accuracy": float(m["accuracy"]),
        "val_top_k_accuracy": m.get(f"top{m['top_k']}_accuracy"),
        "val_macro_f1": m["macro_f1"],
        "val_log_loss": m.get("log_loss"),
        "val_ece": m.get("ece"),
        "val_ece_uncalibrated": m.get("ece_uncalibrated"),
    }


def _test_split(clf: Classifier, progress: Progress) -> dict[str, Any]:
    """The final model on the dataset's test split, reported beside val and never used to choose.

    A random validation slice of the training folder cannot see a shift between folders
    (other scanners, another season, other products): when the test folder disagrees with
    validation by more than sampling noise, the user is told, since the test figure is then
    the one that predicts deployment.
    """
    from graft.training.fit.targets import score, targets_of

    records = clf.data_.splits.get("test") or []
    if not records:
        return {}
    probs, ok, _failed = clf.predict_proba([r.path for r in records])
    multi = bool(getattr(clf.data_, "multi_label", False))
    rec_of = {str(r.path): r for r in records}
    y = targets_of([rec_of[p] for p in ok], len(clf.classes_), multi)
    if not len(y):
        return {}
    m = score(y, probs, clf.classes_, tuple(getattr(clf, "thresholds_", ())))
    val_acc, test_acc = float(clf.metrics_["accuracy"]), float(m["accuracy"])
    n_val = max(1, int(clf.metrics_.get("n", 1)))
    noise = 2 * math.sqrt(max(val_acc * (1 - val_acc), 1e-4) / n_val + max(test_acc * (1 - test_acc), 1e-4) / len(y))
    shift = abs(val_acc - test_acc) > max(0.03, noise)
    if shift:
        progress.warn(
            f"validation accuracy {val_acc:.3f} but test accuracy {test_acc:.3f} ({len(y)} images): the test "
            "folder differs from the training folder more than chance explains; expect the test figure in use"
        )
    if multi:
        return {
            "test_accuracy": test_acc,
            "test_map": m["map_macro"],
            "test_f1_micro": m["f1_micro"],
            "test_f1_macro": m["f1_macro"],
            "test_hamming_loss": m["hamming_loss"],
            "test_n": int(len(y)),
            "test_shift": shift,
        }
    return {"test_accuracy": test_acc, "test_macro_f1": m["macro_f1"], "test_n": int(len(y)), "test_shift": shift}


def run_demo(out: str | os.PathLike, *, progress: Progress | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train on the bundled 100 hand-sign images with the defaults, then predict one of them.

    Returns:
        (metrics.json's content, the prediction for one image of class 7).
    """
    from graft.demo import demo_dataset_path

    data = demo_dataset_path()
    metrics = train_run(data, out, Classifier(), RunOptions(), progress=progress, overwrite=True)
    sample = sorted((data / "7").glob("*"))[0]
    prediction = Classifier.load(RunFolder(out).model_dir).predict([sample], top_k=3)[0]
    return metrics, prediction


def _unlabeled_record(clf: Any) -> dict[str, Any] | None:
    """``--unlabeled``'s record: the head's, with what the budget ladder's rungs took from it (``rungs``)."""
    head = clf.head_info_.get("unlabeled")
    rungs = (clf.stage_metrics_.get("ladder") or {}).get("unlabeled")
    if head is None or rungs is None:
        return head
    return {**head, "rungs": rungs}
