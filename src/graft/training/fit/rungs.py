"""One rung of the budget ladder: its fine-tune, its timing probe and, for the kept rung, recalibration.

:func:`~graft.training.fit.ladder.climb` plans the rungs and chooses among them; this module
runs each one. Every rung trains on the training images less the held-out slice, and that
slice stands where validation stands in ``--fine-tune`` (early stopping, best epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.network import GraftNet
from graft.progress import Progress
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FitResult, train_network
from graft.training.fit.budget_plan import Costs, Rung
from graft.training.fit.stage_two import FineTuneStage, recalibrated_metrics, refit_after_fine_tune
from graft.training.fit.targets import score as score_metrics
from graft.transforms.eval import Preprocessing

__all__ = ["LADDER_CONFIG", "RungContext", "RungResult", "probe", "recalibrate", "run_rung"]

#: The same for both rungs, so that the rungs differ only in depth: the ``--fine-tune`` settings
#: (RESULTS.md) except the learning rate. A rung gets only the epochs its budget allows (5-12 on two
#: CPU cores), and 3e-4 converged in fewer of them than 1e-4 on the held-out slices of both shared
#: datasets unlike ImageNet (BENCHMARKS.md, "Session 11: the rungs' learning rate"). One cached
#: view of the frozen prefix, not two: the top rung took 0.67-0.82x the time at equal held-out
#: accuracy (cats_dogs_filtered 199 against 197 of 200, hymenoptera 24 of 24 both; BENCHMARKS.md,
#: "Cheaper CPU epochs"): a rung of a few epochs gains less from a second augmented view than
#: the image epoch that fills it costs.
LADDER_CONFIG = FineTuneConfig(lr=3e-4, prefix_views=1)
_PROBE_TRAIN = 32  # training images of the timing probe (one step of 32 per epoch)
_PROBE_HELD = 8  # held-out images of the timing probe

_Set = tuple[Sequence[str], np.ndarray]  # (paths, labels)


@dataclass
class RungResult:
    """One row of the ladder table."""

    rung: str
    what: str
    epochs_planned: int = 0
    epochs_run: int = 0
    held_out_accuracy: float | None = None  # on the held-out slice of train: what the choice used
    held_out_loss: float | None = None  # mean cross-entropy on that slice: breaks exact accuracy ties
    val_accuracy: float | None = None  # reported, never used to choose
    seconds: float = 0.0
    kept: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RungContext:
    """What every rung of one climb shares.

    Attributes:
        env: how each rung's fine-tune runs: device, precision, workers, seed and class weights
            (each rung adds its own stage name, deadline, checkpoints and progress).
        preprocessing: the backbone's evaluation preprocessing (training augments on top of it).
        sets: the training images less the held-out slice, the held-out slice, and validation
            (scored for the table only).
        classes / score: the class names, and validation probabilities of a network.
        progress / checkpoint_dir: the climb's reporter, and where the rungs' checkpoints go (None: nowhere).
        thresholds: a multi-label model's stage-1 thresholds (empty: single-label).
    """

    env: TrainEnv
    preprocessing: Preprocessing
    sets: tuple[_Set, _Set, _Set]
    classes: list[str]
    score: Callable[[nn.Module], np.ndarray]
    progress: Progress
    checkpoint_dir: str | os.PathLike | None = None
    thresholds: tuple[float, ...] = ()  # multi-label: the stage-1 thresholds the rungs are scored at


def _train(
    net: GraftNet,
    train: _Set,
    held: _Set,
    cfg: FineTuneConfig,
    policy: FineTunePolicy,
    env: TrainEnv,
    pre: Preprocessing,
) -> FitResult:
    """One rung's fine-tune: the held-out slice of train stands where validation stands in ``--fine-tune``."""
    from graft.transforms.train import build_train_transform

    env = dataclasses.replace(env, eval_name="held-out")
    transforms = (build_train_transform(cfg.train_preprocessing(pre), strength=cfg.augment), pre)
    return train_network(net, net.backbone, train, held, transforms=transforms, config=cfg, policy=policy, env=env)


def run_rung(
    ctx: RungContext, net: GraftNet, rung: Rung, epochs: int, deadline: float, row: RungResult, *, resume: bool = False
) -> tuple[FitResult, np.ndarray, FineTunePolicy, FineTuneConfig]:
    """Fine-tune one rung (train set, held-out stop set), score validation for the table, fill ``row``.

    ``resume``: continue from the rung's last checkpoint (a resumed ``--budget`` run); a rung whose
    checkpoint already holds ``epochs`` epochs trains no further and comes back with its best weights.
    """
    train_set, held_set, val = ctx.sets
    cfg = dataclasses.replace(LADDER_CONFIG, epochs=epochs, unfreeze=rung.unfreeze)
    policy = cfg.policy()
    ckpt = Path(ctx.checkpoint_dir) / f"ladder-{rung.name}" if ctx.checkpoint_dir else None
    env = dataclasses.replace(
        ctx.env,
        checkpoint_dir=ckpt,
        stage=f"ladder {rung.name}",
        deadline=deadline,
        progress=ctx.progress,
        resume=resume and ckpt is not None,
    )
    fit = _train(net, train_set, held_set, cfg, policy, env, ctx.preprocessing)
    probs = distributed.on_rank_zero(ctx.score, net)
    net.to(memory_format=torch.contiguous_format)  # scoring may change rank 0's layout; DDP needs all alike
    row.epochs_run = len(fit.history)
    row.held_out_accuracy = float(fit.best_val_acc)
    row.held_out_loss = float(fit.best_val_loss) if np.isfinite(fit.best_val_loss) else None
    row.val_accuracy = float(score_metrics(np.asarray(val[1]), probs, ctx.classes, ctx.thresholds)["accuracy"])
    # Early stopping names the real cause where it fired: a deadline may only have shortened the schedule.
    row.note = "stopped early" if fit.stopped_early else ("stopped by the budget" if fit.stopped_by_budget else "")
    return fit, probs, policy, cfg


def probe(ctx: RungContext, net: GraftNet, rung: Rung) -> Costs:
    """Time a few real steps of ``rung`` on a copy of ``net``; scale them to the whole training set.

    Images are decoded in the training process (no worker start-up in the timings); the
    speed plan the real run uses is measured here once and cached. The first epoch of
    each kind is discarded as warm-up where a second one was run.
    """
    train, held, _val = ctx.sets
    k = min(len(train[0]), _PROBE_TRAIN)
    m = min(len(held[0]), _PROBE_HELD)
    views = 1 if rung.unfreeze != -1 else 0  # "top": epoch 1 fills the prefix cache, 2 fills again, 3 uses it
    cfg = dataclasses.replace(
        LADDER_CONFIG,
        epochs=3 if views else 2,
        batch_size=min(LADDER_CONFIG.batch_size, k),
        warmup_epochs=0,
        patience=10,
        prefix_views=2 if views else 0,
        unfreeze=rung.unfreeze,
    )
    env = dataclasses.replace(ctx.env, num_workers=0, stage=f"probe {rung.name}")
    fit = _train(
        copy.deepcopy(net),
        (train[0][:k], train[1][:k]),
        (held[0][:m], held[1][:m]),
        cfg,
        cfg.policy(),
        env,
        ctx.preprocessing,
    )
    secs = [float(r["seconds"]) for r in fit.history]
    scale = (len(train[0]) + len(held[0])) / max(k + m, 1)
    first = secs[1] if len(secs) > 1 else secs[0]
    later = secs[2] if views and len(secs) > 2 else first
    # the probe fills two views to time a fill epoch after the warm-up; the rung fills LADDER_CONFIG's
    return Costs(first * scale, later * scale, LADDER_CONFIG.prefix_views if views else cfg.epochs)


def recalibrate(
    ctx: RungContext,
    net: GraftNet,
    fit: FitResult,
    probs: np.ndarray,
    train: tuple[list[str], np.ndarray, np.ndarray],
    policy: FineTunePolicy,
    row: RungResult,
) -> FineTuneStage:
    """The kept rung's temperature (held-out slice) and OOD refit, and its calibrated validation metrics.

    ``train``: all training paths, their labels and the held-out mask.
    """
    env = ctx.env
    classes = ctx.classes
    labels = np.asarray(ctx.sets[2][1])
    embedding = {"device": env.device, "precision": env.precision, "num_workers": env.num_workers}
    t, ood, thresholds = refit_after_fine_tune(
        net, train, ctx.preprocessing, seed=env.seed, progress=ctx.progress, **embedding
    )
    before = score_metrics(labels, probs, classes, ctx.thresholds)
    metrics, probs = recalibrated_metrics((before, probs), (t, thresholds), labels, classes)
    summary = {
        "val_accuracy": metrics["accuracy"],
        "seconds": row.seconds,
        "best_epoch": fit.best_epoch,
        "stopped_early": fit.stopped_early,
        "unfrozen_groups": policy.unfrozen_groups,
        "kept": True,
        "calibration_images": int(train[2].sum()),
        "temperature": t.tolist() if isinstance(t, np.ndarray) else t,
        "rung": row.rung,
    }
    return FineTuneStage(True, fit, metrics, probs, summary, ood, t, thresholds=thresholds)
