"""The transfer ladder under a time budget: frozen head, then the last block groups, then the whole backbone.

``Classifier.fit(data, budget=...)`` and ``graft train DATA --budget 20m``. After stage 1,
a few fine-tuning steps of each further rung are timed on a copy of the network, the plan
is printed, and the ladder climbs as far as the budget allows; each rung stops early when
its held-out loss stops improving, and before an epoch that would pass the budget.

The choice stays honest: a stratified 10% of the training images
(:func:`~graft.training.fit.stage_two.calibration_split`) is held out of every rung (the frozen
head is refitted without it to score the first rung on the same footing). Early stopping,
the choice of rung and the new temperature use that slice alone. The validation split is
scored for the ladder table and never decides anything, so the reported accuracy is a
measurement, not a selection.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.features.dataset import SplitFeatures
from graft.metrics import compute_metrics, expected_calibration_error, log_loss
from graft.network import GraftNet
from graft.progress import NullProgress, Progress
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FitResult, train_network
from graft.training.fit.budget_plan import RUNGS, Costs, Rung, epochs_now, observed_ratio, plan, plan_lines
from graft.training.fit.stage_two import FineTuneStage, calibration_split, refit_after_fine_tune, rescale_probs
from graft.training.fit.stages import HeadStage, fit_head_stage
from graft.training.head.fit import class_weights_balanced
from graft.transforms.eval import Preprocessing

__all__ = ["RUNGS", "Rung", "RungResult", "LadderResult", "better", "climb"]


#: The same for both rungs, so that the rungs differ only in depth: the ``--fine-tune`` settings
#: (RESULTS.md) except the learning rate. A rung gets only the epochs its budget allows (5-12 on two
#: CPU cores), and 3e-4 converged in fewer of them than 1e-4 on the held-out slices of both shared
#: datasets unlike ImageNet (BENCHMARKS.md, "Session 11: the rungs' learning rate").
LADDER_CONFIG = FineTuneConfig(lr=3e-4)
_PROBE_TRAIN, _PROBE_HELD = 32, 8  # images of the timing probe (one step of 32 per epoch)


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


@dataclass
class LadderResult:
    """What the climb did: the table, the printed plan and, where a fine-tuned rung won, its stage result."""

    rungs: list[RungResult]
    plan: list[str]
    kept: str
    budget_seconds: float
    stage: FineTuneStage | None = None  # None: the stage-1 model is kept
    history: list[dict[str, Any]] = field(default_factory=list)
    policy: FineTunePolicy | None = None
    config: FineTuneConfig | None = None

    def table(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rungs]


def climb(
    net: GraftNet,
    data: Any,
    stage1: tuple[HeadStage, SplitFeatures],
    val: tuple[Sequence[str], np.ndarray],
    *,
    score: Callable[[nn.Module], np.ndarray],
    preprocessing: Preprocessing,
    budget: tuple[float, float],
    env: TrainEnv,
) -> LadderResult:
    """Climb the ladder from stage 1's ``net`` (changed in place: it ends as the kept rung's network).

    Args:
        stage1: the stage-1 head result and the training features it was fitted on.
        val: validation (paths, labels), scored for the table only.
        score: validation probabilities of a network through the prediction path.
        budget: (seconds, ``time.perf_counter()`` when the fit began): the budget counts from there.
        env: device, precision, workers, seed, ``balanced``, ``checkpoint_dir`` (the rungs' checkpoints), progress.
    """
    from graft.features.embedder import choose_precision, default_num_workers

    budget_seconds, started = budget
    device, precision, num_workers, seed = env.device, env.precision, env.num_workers, env.seed
    balanced, checkpoint_dir = env.balanced, env.checkpoint_dir
    prog = env.progress or NullProgress()
    end = started + budget_seconds
    head_st, feats = stage1
    table = [RungResult("head", RUNGS[0].what, val_accuracy=float(head_st.metrics["accuracy"]))]
    table[0].seconds = time.perf_counter() - started
    result = LadderResult(table, [], "head", budget_seconds)
    paths, y, held = _held_out_slice(data, seed)
    if not held.any():
        table[0].kept = True
        table[0].note = "too few training images to hold out a slice for an honest choice: no fine-tuning"
        prog.warn(f"budget ladder: {table[0].note}")
        return result
    classes = list(data.classes)
    saved = _snapshot(net)  # stage 1, head on all of train
    _head_rung(net, table[0], head_st, feats, (paths, held, classes), balanced, seed)
    train_set = ([p for p, h in zip(paths, held) if not h], y[~held])
    held_set = ([p for p, h in zip(paths, held) if h], y[held])
    run_kw: dict[str, Any] = dict(
        preprocessing=preprocessing,
        device=device,
        precision="auto" if str(precision or "auto").lower() == "auto" else choose_precision(precision, device),
        num_workers=default_num_workers() if num_workers is None else num_workers,
        seed=seed,
        class_weight=class_weights_balanced(y[~held], len(classes)) if balanced else None,
    )
    estimate = _estimate(
        net, train_set, held_set, len(val[0]), len(paths), end, table[0].seconds, budget_seconds, run_kw
    )
    result.plan = estimate[-1]
    for line in result.plan:
        prog.message(line)
    kept, best_fit = _climb_rungs(
        net,
        table,
        (train_set, held_set, val),
        estimate[:-1],
        end,
        score,
        checkpoint_dir,
        prog,
        classes,
        run_kw,
        result.history,
    )
    table[kept].kept = True
    result.kept = RUNGS[kept].name
    if best_fit is None:
        net.load_state_dict(saved)  # no fine-tuned winner: stage 1, head on all of train
        return result
    fit, probs, result.policy, result.config = best_fit
    result.stage = _recalibrate(
        net, fit, probs, (paths, y, held), val, classes, result.policy, table[kept], prog, **run_kw
    )
    return result


def _head_rung(
    net: GraftNet,
    row: RungResult,
    head_st: HeadStage,
    feats: SplitFeatures,
    slice_: tuple[list[str], np.ndarray, list[str]],
    balanced: bool,
    seed: int,
) -> None:
    """Score the head rung on the held-out slice (refitted without it) and put that head into ``net``."""
    paths, held, classes = slice_
    t0 = time.perf_counter()
    held_head, row.held_out_loss = distributed.on_rank_zero(
        _refit_head_without, head_st, feats, paths, held, classes, balanced, seed
    )
    row.held_out_accuracy = float(held_head.metrics["accuracy"])
    row.seconds += time.perf_counter() - t0
    net.head.load_state_dict(held_head.head.state_dict())


def _climb_rungs(
    net: GraftNet,
    table: list[RungResult],
    sets: tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray], tuple[Sequence[str], np.ndarray]],
    estimate: tuple[dict[str, Costs], dict[str, int], float, float],
    end: float,
    score: Callable[[nn.Module], np.ndarray],
    checkpoint_dir: str | os.PathLike | None,
    prog: Progress,
    classes: list[str],
    run_kw: dict[str, Any],
    history: list[dict[str, Any]],
) -> tuple[int, tuple[FitResult, np.ndarray, FineTunePolicy, FineTuneConfig] | None]:
    """Fine-tune each rung that fits, from the best network so far; (index of the best rung, its fit or None).

    ``net`` ends with the best fine-tuned rung's weights where one beat the head.
    """
    costs, epochs, val_cost, finish = estimate
    best: tuple[int, _Score, dict[str, torch.Tensor]] = (
        0,
        (table[0].held_out_accuracy, table[0].held_out_loss),
        _snapshot(net),
    )
    best_fit: tuple[FitResult, np.ndarray, FineTunePolicy, FineTuneConfig] | None = None
    for i, rung in enumerate(RUNGS[1:], start=1):
        row = RungResult(rung.name, rung.what)
        table.append(row)
        later = sum(costs[r.name].epochs(epochs[r.name]) + val_cost for r in RUNGS[i + 1 :] if epochs[r.name])
        deadline = end - finish - val_cost - later
        n = distributed.broadcast_object(  # rank 0's clock decides for every process
            epochs_now(i, epochs[rung.name], costs[rung.name], deadline - time.perf_counter())
        )
        row.epochs_planned = n
        if n < 1:
            row.note = "does not fit in the budget"
            continue
        t0 = time.perf_counter()
        ckpt = Path(checkpoint_dir) / f"ladder-{rung.name}" if checkpoint_dir else None
        fit, probs, policy, cfg = _run_rung(net, rung, n, deadline, row, sets, score, ckpt, prog, classes, run_kw)
        history += fit.history
        ratio = observed_ratio(fit.history, costs[rung.name])
        for r in RUNGS[i + 1 :]:
            costs[r.name] = Costs(costs[r.name].first * ratio, costs[r.name].later * ratio, costs[r.name].views)
        finish, val_cost = finish * ratio, val_cost * ratio
        if better((row.held_out_accuracy, row.held_out_loss), best[1]):
            best = (i, (row.held_out_accuracy, row.held_out_loss), _snapshot(net))
            best_fit = (fit, probs, policy, cfg)
        else:
            net.load_state_dict(best[2])  # the next rung climbs from the best network so far
        row.seconds = time.perf_counter() - t0
    if best_fit is not None:
        net.load_state_dict(best[2])
    return best[0], best_fit


_Score = tuple[float | None, float | None]  # (held-out accuracy, held-out loss) of a rung


def better(rung: _Score, best: _Score) -> bool:
    """Whether a rung's (held-out accuracy, held-out loss) beats the best so far.

    Higher accuracy wins. On a tie, which a slice of 24-350 images makes common, the lower
    loss on the same images wins: it ranks the same predictions more finely. A missing or
    equal loss keeps the earlier, cheaper rung.
    """
    acc, loss = rung
    best_acc, best_loss = best
    if acc is None:
        return False
    if best_acc is None or acc != best_acc:
        return best_acc is None or acc > best_acc
    return loss is not None and best_loss is not None and loss < best_loss


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s weights that later training cannot change."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _held_out_slice(data: Any, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The usable training images, their labels, and the mask of the held-out slice (all False: too few)."""
    skipped = {Path(s.path) for s in data.skipped}
    records = [r for r in data.splits["train"] if r.path not in skipped]
    y = np.array([r.label for r in records], dtype=np.int64)
    return [str(r.path) for r in records], y, calibration_split(y, seed=seed)


def _estimate(
    net: GraftNet,
    train_set: tuple[list[str], np.ndarray],
    held_set: tuple[list[str], np.ndarray],
    n_val: int,
    n_train: int,
    end: float,
    stage1_s: float,
    budget_s: float,
    run_kw: dict[str, Any],
) -> tuple[dict[str, Costs], dict[str, int], float, float, list[str]]:
    """Probe each rung (rank 0's figures), then plan: (costs, epochs per rung, val scoring s, finish s, plan lines)."""
    costs = {r.name: distributed.broadcast_object(_probe(net, r, train_set, held_set, **run_kw)) for r in RUNGS[1:]}
    per_image = costs["all"].later / max(len(train_set[0]) + len(held_set[0]), 1) / 3  # forward only
    val_cost = per_image * n_val
    finish = per_image * n_train + val_cost  # recalibration pass over train + scoring
    epochs = plan(end - time.perf_counter() - finish, costs, val_cost)
    lines = plan_lines(stage1_s, budget_s, end - time.perf_counter(), epochs, costs, finish)
    return costs, epochs, val_cost, finish, lines


def _run_rung(
    net: GraftNet,
    rung: Rung,
    epochs: int,
    deadline: float,
    row: RungResult,
    sets: tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray], tuple[Sequence[str], np.ndarray]],
    score: Callable[[nn.Module], np.ndarray],
    ckpt: Path | None,
    progress: Progress,
    classes: list[str],
    run_kw: dict[str, Any],
) -> tuple[FitResult, np.ndarray, FineTunePolicy, FineTuneConfig]:
    """Fine-tune one rung (train set, held-out stop set), score validation for the table, fill ``row``."""
    train_set, held_set, val = sets
    cfg = dataclasses.replace(LADDER_CONFIG, epochs=epochs, unfreeze=rung.unfreeze)
    policy = cfg.policy()
    fit = _train(net, train_set, held_set, cfg, policy, deadline, ckpt, progress, f"ladder {rung.name}", **run_kw)
    probs = distributed.on_rank_zero(score, net)
    net.to(memory_format=torch.contiguous_format)  # scoring may change rank 0's layout; DDP needs all alike
    row.epochs_run, row.held_out_accuracy = len(fit.history), float(fit.best_val_acc)
    row.held_out_loss = float(fit.best_val_loss) if np.isfinite(fit.best_val_loss) else None
    row.val_accuracy = float(compute_metrics(np.asarray(val[1]), probs, classes)["accuracy"])
    # Early stopping names the real cause where it fired: a deadline may only have shortened the schedule.
    row.note = "stopped early" if fit.stopped_early else ("stopped by the budget" if fit.stopped_by_budget else "")
    return fit, probs, policy, cfg


def _refit_head_without(
    head_st: HeadStage,
    feats: SplitFeatures,
    paths: list[str],
    held: np.ndarray,
    classes: list[str],
    balanced: bool,
    seed: int,
) -> tuple[HeadStage, float]:
    """Stage 1's head (same features, same C) refitted without the held-out images; its held-out loss."""
    held_paths = {p for p, h in zip(paths, held) if h}
    n0 = len(feats.paths)  # view-0 rows come first, in ``feats.paths`` order
    path_of = dict(zip(feats.groups[:n0].tolist(), feats.paths))
    out = np.array([path_of.get(int(g)) in held_paths for g in feats.groups], dtype=bool)
    first = np.zeros(len(out), dtype=bool)
    first[:n0] = True

    def rows(mask: np.ndarray) -> SplitFeatures:
        keep = np.flatnonzero(mask)
        return SplitFeatures(
            feats.X[keep], feats.y[keep], feats.groups[keep], [path_of[int(g)] for g in feats.groups[keep]]
        )

    train, test = rows(~out), rows(out & first)
    cw = class_weights_balanced(train.y, len(classes)) if balanced else None
    st = fit_head_stage(head_st.spec, train, test, classes, C=head_st.info.get("C"), class_weight=cw, seed=seed)
    return st, log_loss(test.y, st.val_probs)


def _train(
    net: GraftNet,
    train: tuple[list[str], np.ndarray],
    held: tuple[list[str], np.ndarray],
    cfg: FineTuneConfig,
    policy: FineTunePolicy,
    deadline: float | None,
    ckpt: Path | None,
    progress: Progress,
    stage: str,
    *,
    preprocessing: Preprocessing,
    device: str,
    precision: str,
    num_workers: int,
    seed: int,
    class_weight: np.ndarray | None,
) -> FitResult:
    """One rung's fine-tune: the held-out slice of train stands where validation stands in ``--fine-tune``."""
    from graft.transforms.train import build_train_transform

    env = TrainEnv(
        device=device,
        precision=precision,
        num_workers=num_workers,
        seed=seed,
        class_weight=class_weight,
        checkpoint_dir=ckpt,
        stage=stage,
        eval_name="held-out",
        deadline=deadline,
        progress=progress,
    )
    transforms = (build_train_transform(preprocessing, strength=cfg.augment), preprocessing)
    return train_network(net, net.backbone, train, held, transforms=transforms, config=cfg, policy=policy, env=env)


def _probe(
    net: GraftNet, rung: Rung, train: tuple[list[str], np.ndarray], held: tuple[list[str], np.ndarray], **run_kw: Any
) -> Costs:
    """Time a few real steps of ``rung`` on a copy of ``net``; scale them to the whole training set.

    Images are decoded in the training process (no worker start-up in the timings); the
    speed plan the real run uses is measured here once and cached. The first epoch of
    each kind is discarded as warm-up where a second one was run.
    """
    k, m = min(len(train[0]), _PROBE_TRAIN), min(len(held[0]), _PROBE_HELD)
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
    probe = copy.deepcopy(net)
    policy = cfg.policy()
    kw = {**run_kw, "num_workers": 0}
    fit = _train(
        probe,
        (train[0][:k], train[1][:k]),
        (held[0][:m], held[1][:m]),
        cfg,
        policy,
        None,
        None,
        NullProgress(),
        f"probe {rung.name}",
        **kw,
    )
    secs = [float(r["seconds"]) for r in fit.history]
    scale = (len(train[0]) + len(held[0])) / max(k + m, 1)
    first = secs[1] if len(secs) > 1 else secs[0]
    later = secs[2] if views and len(secs) > 2 else first
    return Costs(first * scale, later * scale, cfg.prefix_views if views else cfg.epochs)


def _recalibrate(
    net: GraftNet,
    fit: FitResult,
    probs: np.ndarray,
    train: tuple[list[str], np.ndarray, np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    classes: list[str],
    policy: FineTunePolicy,
    row: RungResult,
    progress: Progress,
    *,
    preprocessing: Preprocessing,
    device: str,
    precision: str,
    num_workers: int,
    seed: int,
    **_: Any,
) -> FineTuneStage:
    """The kept rung's temperature (held-out slice) and OOD refit, and its calibrated validation metrics."""
    labels = np.asarray(val[1])
    embedding = {"device": device, "precision": precision, "num_workers": num_workers}
    t, ood = refit_after_fine_tune(net, train, preprocessing, seed=seed, progress=progress, **embedding)
    metrics = compute_metrics(labels, probs, classes)
    if t is not None:
        raw, probs = probs, rescale_probs(probs, t)
        metrics = {
            **compute_metrics(labels, probs, classes),
            "ece_uncalibrated": expected_calibration_error(raw, labels)[0],
        }
    summary = {
        "val_accuracy": metrics["accuracy"],
        "seconds": row.seconds,
        "best_epoch": fit.best_epoch,
        "stopped_early": fit.stopped_early,
        "unfrozen_groups": policy.unfrozen_groups,
        "kept": True,
        "calibration_images": int(train[2].sum()),
        "temperature": t,
        "rung": row.rung,
    }
    return FineTuneStage(True, fit, metrics, probs, summary, ood, t)
