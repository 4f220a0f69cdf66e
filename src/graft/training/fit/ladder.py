"""The transfer ladder under a time budget: frozen head, wide features, the last block groups, the whole backbone.

The wide-features rung (:mod:`graft.training.fit.wide`) comes first, where the stage-1 backbone
has offline siblings with its normalisation: no training, so on a CPU it is the cheapest step.
The fine-tuning rungs then climb from the head's network; time they leave goes to
:data:`~graft.training.fit.budget_plan.MORE` (more epochs of the last two groups from the best
fine-tuned network), and the summary (:meth:`LadderResult.spent`) says where the budget went.

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

With ``--unlabeled``, where cross-validation kept a method for the head
(:mod:`graft.training.head.semi`), the fine-tuning rungs train on pseudo-labelled unlabelled
images beside the labelled ones: labelled again from the training images outside the held-out
slice (so no held-out label reaches a rung), at most as many as there are labelled images.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from graft import distributed
from graft.features.dataset import SplitFeatures
from graft.features.wide import wide_candidates
from graft.network import GraftNet
from graft.progress import NullProgress, Progress
from graft.training.finetune.options import FineTuneConfig, TrainEnv
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FitResult
from graft.training.fit.budget_plan import MORE, RUNGS, Rung, Schedule, epochs_now, observed_ratio, plan, plan_lines
from graft.training.fit.ladder_io import LadderResult, LadderStart
from graft.training.fit.ladder_slice import held_out_slice, pseudo_labelled, refit_head_without
from graft.training.fit.ladder_state import Estimate, LadderState, read_state
from graft.training.fit.rungs import LADDER_CONFIG, RungContext, RungResult, probe, recalibrate, run_rung
from graft.training.fit.stages import HeadStage
from graft.training.fit.targets import loss_weights
from graft.training.fit.wide import WIDE_COST, WideSource, WideStage, fit_wide
from graft.transforms.eval import Preprocessing

__all__ = [
    "LADDER_CONFIG",
    "RUNGS",
    "Rung",
    "RungResult",
    "LadderResult",
    "LadderStart",
    "WideSource",
    "better",
    "climb",
]


def climb(start: LadderStart, *, budget: tuple[float, float], env: TrainEnv) -> LadderResult:
    """Climb the ladder from stage 1's network ``start.net`` (changed in place: it ends as the kept rung's network).

    Args:
        start: what stage 1 fitted, the data, and how validation is scored (:class:`LadderStart`).
        budget: (seconds, ``time.perf_counter()`` when the fit began): the budget counts from there.
        env: device, precision, workers, seed, ``balanced``, ``checkpoint_dir`` (the rungs' checkpoints), progress.
    """
    budget_seconds, started = budget
    prog = env.progress or NullProgress()
    net = start.net
    table = [RungResult("head", RUNGS[0].what, val_accuracy=float(start.head.metrics["accuracy"]))]
    table[0].seconds = time.perf_counter() - started
    result = LadderResult(table, [], "head", budget_seconds)
    paths, y, held = held_out_slice(start.data, env.seed)
    if not held.any():
        return _head_only(result, prog)
    classes = list(start.data.classes)
    saved = _snapshot(net)  # stage 1, head on all of train
    semi_fit, extra = pseudo_labelled(start, (paths, held), len(classes), env, result)
    _head_rung(net, table[0], start.head, start.feats, (paths, held, classes), env.balanced, env.seed, semi_fit)
    state, note = read_state(env.checkpoint_dir, started, env.resume)
    if note:
        prog.warn(note)
    end = started + budget_seconds - state.spent_before  # a resumed climb: the seconds its earlier processes spent
    ws = _wide_rung(start.wide, table, (paths, held, classes), env, end) if start.wide is not None else None
    ctx = _context(env, start.preprocessing, (paths, y, held), start.val, classes, start.score, prog, extra)
    ctx = dataclasses.replace(ctx, thresholds=start.head.thresholds)
    _plan(result, state, ctx, net, (len(paths), end))
    first = table[1] if ws is not None and better(_score(table[1]), _score(table[0])) else table[0]
    kept, best_fit = _climb_rungs(ctx, net, (table, first), end, result.history, state)
    kept.kept = True
    result.kept = kept.rung
    if best_fit is None:
        net.load_state_dict(saved)  # no fine-tuned winner: stage 1, head on all of train
        result.wide = ws if kept.rung == "wide" else None
    else:
        fit, probs, result.policy, result.config = best_fit
        result.stage = recalibrate(ctx, net, fit, probs, (paths, y, held), result.policy, kept)
    result.unused_seconds = end - time.perf_counter()
    for line in result.spent():
        prog.message(f"budget spent: {line}")
    return result


def _head_only(result: LadderResult, prog: Progress) -> LadderResult:
    """Too few training images to hold out a slice: the head is kept and nothing is fine-tuned."""
    head = result.rungs[0]
    head.kept = True
    head.note = "too few training images to hold out a slice for an honest choice: no fine-tuning"
    prog.warn(f"budget ladder: {head.note}")
    return result


def _stopped_early(table: list[RungResult], rung: str) -> bool:
    return any(r.rung == rung and r.note == "stopped early" for r in table)


def _score(row: RungResult) -> _Score:
    return (row.held_out_accuracy, row.held_out_loss)


def _wide_rung(
    wide: WideSource,
    table: list[RungResult],
    slice_: tuple[list[str], np.ndarray, list[str]],
    env: TrainEnv,
    end: float,
) -> WideStage | None:
    """The wide-features rung, where its estimated cost fits: the head on wide features, scored on the held-out slice."""
    paths, held, classes = slice_
    if not wide_candidates(wide.embedded):  # another family than the Lites: no backbone to add, no row
        return None
    row = RungResult("wide", "+ other offline backbones' features")
    prog = env.progress or NullProgress()
    # The added embedding, and a head fit on about 3x the columns (it measured as costly as the embedding on a CPU).
    estimate = WIDE_COST * (float(wide.embedded.timings.get("embed", 0.0)) + wide.stage1.seconds)
    if estimate > end - time.perf_counter():
        row.note = "does not fit in the budget"
        table.append(row)
        return None
    t0 = time.perf_counter()
    cw = loss_weights(wide.embedded.train.y, len(classes)) if env.balanced else None
    ws = fit_wide(wide.embedded, wide.stage1, wide.embed, class_weight=cw, seed=env.seed, progress=prog)
    if ws is None:  # no backbone to add (another family than the Lites, none offline): no such rung
        return None
    table.append(row)
    held_head, row.held_out_loss = distributed.on_rank_zero(
        refit_head_without, ws.head, ws.embedded.train, paths, held, classes, env.balanced, env.seed
    )
    row.held_out_accuracy = float(held_head.metrics["accuracy"])
    row.val_accuracy = float(ws.head.metrics["accuracy"])
    row.seconds = time.perf_counter() - t0
    return ws


def _context(
    env: TrainEnv,
    preprocessing: Preprocessing,
    slice_: tuple[list[str], np.ndarray, np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    classes: list[str],
    score: Callable[[nn.Module], np.ndarray],
    progress: Progress,
    extra: tuple[list[str], np.ndarray] | None = None,
) -> RungContext:
    """What the rungs share: the held-out split of ``slice_`` (paths, labels, held-out mask) and how they run.

    ``extra``: pseudo-labelled (paths, labels) the rungs train on beside the labelled images (None: none).
    """
    from graft.features.embedder import choose_precision, default_num_workers

    paths, y, held = slice_
    train_set = ([p for p, h in zip(paths, held) if not h], y[~held])
    if extra is not None and len(extra[0]):
        train_set = (train_set[0] + list(extra[0]), np.concatenate([train_set[1], extra[1]]))
    held_set = ([p for p, h in zip(paths, held) if h], y[held])
    precision = env.precision
    run = TrainEnv(
        device=env.device,
        precision="auto" if str(precision or "auto").lower() == "auto" else choose_precision(precision, env.device),
        num_workers=default_num_workers() if env.num_workers is None else env.num_workers,
        seed=env.seed,
        class_weight=loss_weights(train_set[1], len(classes)) if env.balanced else None,
    )
    return RungContext(run, preprocessing, (train_set, held_set, val), classes, score, progress, env.checkpoint_dir)


def _head_rung(
    net: GraftNet,
    row: RungResult,
    head_st: HeadStage,
    feats: SplitFeatures,
    slice_: tuple[list[str], np.ndarray, list[str]],
    balanced: bool,
    seed: int,
    linear_fit: Any = None,
) -> None:
    """Score the head rung on the held-out slice (refitted without it) and put that head into ``net``.

    ``linear_fit``: that head already fitted (``--unlabeled``'s kept method, on the same rows).
    """
    paths, held, classes = slice_
    t0 = time.perf_counter()
    held_head, row.held_out_loss = distributed.on_rank_zero(
        refit_head_without, head_st, feats, paths, held, classes, balanced, seed, linear_fit
    )
    row.held_out_accuracy = float(held_head.metrics["accuracy"])
    row.seconds += time.perf_counter() - t0
    net.head.load_state_dict(held_head.head.state_dict())


_Fit = tuple[FitResult, np.ndarray, FineTunePolicy, FineTuneConfig]  # a rung's fit, validation probs, policy, config


def _plan(result: LadderResult, state: LadderState, ctx: RungContext, net: GraftNet, sizes: tuple[int, float]) -> None:
    """The plan, printed: probed and planned now (and recorded in ``state``), or read back by a resumed climb.

    ``sizes``: (training images, the climb's end on ``time.perf_counter()``). The plan's lines and the
    seconds it took (the probes) go to ``result``.
    """
    n_train, end = sizes
    t_probe = time.perf_counter()
    if state.estimate is None:
        state.estimate = _estimate(ctx, net, n_train, end, time.perf_counter() - state.started, result.budget_seconds)
        state.write()
    else:
        ctx.progress.message(
            f"budget ladder: continuing the climb; {state.spent_before:.0f} s of the budget were spent"
        )
    result.plan = state.estimate[-1]
    result.probe_seconds = time.perf_counter() - t_probe
    for line in result.plan:
        ctx.progress.message(line)


def _climb_rungs(
    ctx: RungContext,
    net: GraftNet,
    rows: tuple[list[RungResult], RungResult],
    end: float,
    history: list[dict[str, Any]],
    state: LadderState,
) -> tuple[RungResult, _Fit | None]:
    """Fine-tune each rung that fits, from the best network so far; (the best rung's row, its fit or None).

    ``rows``: the table so far and its best row (head or wide), which a fine-tuned rung must
    beat. ``net`` (the head's network) ends with the best fine-tuned rung's weights where one
    won; each rung's epochs are appended to ``history``. Time the rungs leave goes to
    :data:`MORE` while an epoch of it fits.
    """
    if state.estimate is None:  # climb() plans (or reads the plan back) before any rung
        raise RuntimeError("the ladder climbs only after its plan is made")
    table, first = rows
    costs, epochs, val_cost, finish, _lines = state.estimate
    costs[MORE.name] = costs["top"]
    sched = Schedule(costs, epochs, val_cost, finish)
    # ``chain``: the network the next rung climbs from (head or fine-tuned); ``best``: the row kept so far.
    chain: tuple[RungResult, _Score, dict[str, torch.Tensor]] = (table[0], _score(table[0]), _snapshot(net))
    best: tuple[RungResult, _Score] = (first, _score(first))
    best_fit: _Fit | None = None
    schedule = list(RUNGS[1:]) + [MORE]
    for i, rung in enumerate(schedule, start=1):
        row = RungResult(rung.name, rung.what)
        table.append(row)
        if rung is MORE and chain[0] is table[0] and _stopped_early(table, RUNGS[1].name):
            table.pop()  # it would repeat "top" from the same start, which stopped improving: no row
            continue
        row.epochs_planned, deadline = _epochs_for(state, sched, i, rung, end)
        if row.epochs_planned < 1:
            _does_not_fit(table, row, rung, state)
            continue
        t0 = time.perf_counter()
        fit = _run_recorded(ctx, net, rung, row, state, epochs=row.epochs_planned, deadline=deadline)
        history += fit[0].history
        sched.rescale(observed_ratio(fit[0].history, sched.costs[rung.name]), schedule[i:])
        if better(_score(row), chain[1]):
            chain = (row, _score(row), _snapshot(net))
        else:
            net.load_state_dict(chain[2])  # the next rung climbs from the best network so far
        if better(_score(row), best[1]):
            best = (row, _score(row))
            best_fit = fit
        row.seconds = time.perf_counter() - t0
    net.load_state_dict(chain[2])  # where a fine-tuned rung was kept, it is the chain's best
    return best[0], best_fit


def _epochs_for(state: LadderState, sched: Schedule, i: int, rung: Rung, end: float) -> tuple[int, float]:
    """(epochs, deadline) of ``rung``, number ``i`` of the schedule: as many epochs as fit before its deadline,
    or what a resumed climb's record says; rank 0's clock decides for every process."""
    deadline = sched.deadline(RUNGS[i + 1 :], end)
    left = deadline - time.perf_counter()
    fresh = epochs_now(i, sched.epochs[rung.name], sched.costs[rung.name], left)
    return distributed.broadcast_object(state.epochs(rung.name, fresh, sched.costs[rung.name].later, left)), deadline


def _does_not_fit(table: list[RungResult], row: RungResult, rung: Rung, state: LadderState) -> None:
    """A rung with no epoch to run: its row says so (and the state records it skipped); a filler
    (:data:`MORE`) that found nothing to fill leaves no row."""
    if rung is MORE:
        table.pop()
        return
    row.note = "does not fit in the budget"
    state.skip(rung.name)


def _run_recorded(
    ctx: RungContext, net: GraftNet, rung: Rung, row: RungResult, state: LadderState, *, epochs: int, deadline: float
) -> _Fit:
    """Fine-tune ``rung``, its start and end recorded in ``state`` (``ladder.json``) for a resumed climb;
    a rung an earlier process started continues from its last checkpoint."""
    resumed = state.continues(rung.name)
    state.start(rung.name, epochs)
    fit = run_rung(ctx, net, rung, epochs, deadline, row, resume=resumed)
    state.finish(rung.name, len(fit[0].history))
    return fit


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


def _estimate(ctx: RungContext, net: GraftNet, n_train: int, end: float, stage1_s: float, budget_s: float) -> Estimate:
    """Probe each rung (rank 0's figures), then plan: (costs, epochs per rung, val scoring s, finish s, plan lines)."""
    train_set, held_set, val = ctx.sets
    costs = {r.name: distributed.broadcast_object(probe(ctx, net, r)) for r in RUNGS[1:]}
    per_image = costs["all"].later / max(len(train_set[0]) + len(held_set[0]), 1) / 3  # forward only
    val_cost = per_image * len(val[0])
    finish = per_image * n_train + val_cost  # recalibration pass over train + scoring
    epochs = plan(end - time.perf_counter() - finish, costs, val_cost)
    lines = plan_lines(stage1_s, budget_s, end - time.perf_counter(), epochs, costs, finish)
    return costs, epochs, val_cost, finish, lines
