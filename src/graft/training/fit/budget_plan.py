"""The ladder's rungs and its time arithmetic: epoch costs, the plan, and what still fits.

Pure functions of estimated seconds (no training), so :mod:`graft.training.fit.ladder` reads as
the climb itself and the planning rules can be tested on numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

__all__ = [
    "RUNGS",
    "MORE",
    "UNUSED_MAX",
    "TOP_SHARE",
    "MIN_WHOLE_EPOCHS",
    "Costs",
    "Rung",
    "Schedule",
    "epochs_now",
    "fits",
    "observed_ratio",
    "plan",
    "plan_lines",
    "planned_seconds",
]


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: how many backbone layer groups train (0: none, -1: all) and at most how long."""

    name: str
    what: str
    unfreeze: int
    max_epochs: int


#: The rungs, cheapest first. "top" trains the last two layer groups (EfficientNet: the last
#: two block stages with the head convolution), where the frozen prefix is cached and an epoch
#: costs a fraction of the whole network's; "all" is what moved data far from ImageNet
#: (sign_digits: only whole-backbone fine-tuning beat stage 1, RESULTS.md). Epoch caps: a
#: cosine schedule needs a length; early stopping on the held-out slice usually ends sooner.
RUNGS: tuple[Rung, ...] = (
    Rung("head", "frozen backbone", 0, 0),
    Rung("top", "last 2 block groups", 2, 6),
    Rung("all", "whole backbone", -1, 12),
)
#: Where the time the rungs above leave goes (the whole backbone did not fit, or a rung stopped
#: early): the last two block groups again, from the best network so far, with a fresh short
#: schedule. Cheaper than the whole backbone by the cached prefix, so it fits where that does not.
MORE = Rung("top+", "last 2 block groups again, from the best so far", 2, 6)
#: The share of a budget a plan may leave unused while a rung that fits was not tried.
UNUSED_MAX = 0.25
#: Share of the time left after stage 1 that the cheaper rung may use when the whole
#: backbone also fits: it is the hedge for photos close to ImageNet, the larger share goes
#: to the rung that can move furthest.
TOP_SHARE = 1 / 3
#: The whole backbone runs only where this many of its epochs fit, when planned and again when
#: its turn comes (a rung before it may have overrun): one epoch from stage 1 lost on the
#: held-out slice in three of four measured runs (sign_digits 0.912 against the head's 0.959,
#: then 0.964 and 0.981 after two and three; cats_dogs_filtered 0.980 against 0.995; a user's
#: 2,900 photos 0.844 against 0.901; flowers gained 0.015), so its time goes to :data:`MORE`.
MIN_WHOLE_EPOCHS = 2


@dataclass
class Costs:
    """Estimated seconds of a rung's epochs over the whole training set (from the probe)."""

    first: float  # an epoch that decodes images (for "top": also fills the prefix cache)
    later: float  # a later epoch ("top": the cached suffix only)
    views: int  # epochs at the ``first`` cost

    def epochs(self, e: int) -> float:
        return self.first * min(e, self.views) + self.later * max(e - self.views, 0)


def observed_ratio(history: Sequence[dict[str, Any]], est: Costs) -> float:
    """Real over estimated seconds of a rung's epochs (clamped to 1/4..4): how far the probe was off.

    The probe times one step per epoch, so its per-image cost carries fixed overheads and
    the machine's load at that moment. Its bias is shared by the next rung's probe, whose
    estimate is scaled by this ratio. All the rung's epochs count, not the first alone:
    the first also pays one-off costs (warm-up, the held-out slice's prefix pass).
    """
    real = sum(float(r["seconds"]) for r in history)
    planned = est.epochs(len(history))
    if not history or planned <= 0:
        return 1.0
    return float(min(max(real / planned, 0.25), 4.0))


@dataclass
class Schedule:
    """The plan as the rungs run: epoch costs per rung, planned epochs, validation scoring and finishing
    seconds. Each rung's observed speed rescales what is left (the climb passes the state's own
    ``costs``, so ``ladder.json`` records them rescaled)."""

    costs: dict[str, Costs]
    epochs: dict[str, int]
    val_cost: float
    finish: float

    def deadline(self, later: Sequence[Rung], end: float) -> float:
        """When a rung must end: ``end`` less the ``later`` rungs' planned epochs and scoring, its own
        scoring and the finishing pass. MORE only fills what the others leave: keep it out of ``later``."""
        kept_back = sum(
            self.costs[r.name].epochs(self.epochs[r.name]) + self.val_cost for r in later if self.epochs[r.name]
        )
        return end - self.finish - self.val_cost - kept_back

    def rescale(self, ratio: float, rungs: Sequence[Rung]) -> None:
        """Scale the costs of ``rungs`` (those still to run), the finishing pass and the scoring by ``ratio``."""
        for r in rungs:
            c = self.costs[r.name]
            self.costs[r.name] = Costs(c.first * ratio, c.later * ratio, c.views)
        self.finish *= ratio
        self.val_cost *= ratio


def fits(costs: Costs, seconds: float, cap: int) -> int:
    """The most epochs (up to ``cap``) whose estimated cost fits in ``seconds``."""
    return max((e for e in range(cap + 1) if costs.epochs(e) <= seconds), default=0)


def epochs_now(index: int, planned: int, costs: Costs, seconds: float) -> int:
    """Epochs the rung at ``index`` runs now, with ``seconds`` left before its deadline.

    The first rung keeps its planned share. A later one takes what is left, at probe costs
    corrected by how far the previous rung's real epochs were from their estimate, but only
    where :data:`MIN_WHOLE_EPOCHS` of them fit: one the plan left out comes back when an
    earlier rung stopped early and freed time for that many, and a planned one that now fits
    fewer is skipped (its time goes to :data:`MORE`). ``index`` past the rungs is :data:`MORE`:
    whatever of its epochs fits.
    """
    if index == 1:
        return fits(costs, seconds, planned)
    if index >= len(RUNGS):
        return fits(costs, seconds, MORE.max_epochs)
    n = fits(costs, seconds, RUNGS[index].max_epochs)
    return n if n >= MIN_WHOLE_EPOCHS else 0


def plan(avail: float, costs: dict[str, Costs], val_cost: float) -> dict[str, int]:
    """Epochs per rung, :data:`MORE` included: the time goes to the rungs, cheapest first, until none fits.

    "top" takes up to ``TOP_SHARE`` of the time while "all" fits ``MIN_WHOLE_EPOCHS``, else all
    the time it can use; what "top" and "all" leave goes to :data:`MORE` (more epochs of
    "top" from the best network), so a plan leaves more than :data:`UNUSED_MAX` of
    ``avail`` unused only where every rung is at its cap or none fits one epoch.
    """
    top_cap = RUNGS[1].max_epochs
    all_cap = RUNGS[2].max_epochs
    e_top = fits(costs["top"], avail * TOP_SHARE - val_cost, top_cap)
    e_all = fits(costs["all"], avail - costs["top"].epochs(e_top) - (val_cost if e_top else 0) - val_cost, all_cap)
    if e_all < MIN_WHOLE_EPOCHS:
        e_top, e_all = fits(costs["top"], avail - val_cost, top_cap), 0
    used = costs["top"].epochs(e_top) + costs["all"].epochs(e_all) + val_cost * (bool(e_top) + bool(e_all))
    e_more = fits(costs["top"], avail - used - val_cost, MORE.max_epochs) if e_top else 0
    return {"top": e_top, "all": e_all, MORE.name: e_more}


def planned_seconds(epochs: dict[str, int], costs: dict[str, Costs], val_cost: float) -> float:
    """Seconds a plan of :func:`plan` spends (each rung that runs also scores validation once)."""
    c = {**costs, MORE.name: costs["top"]}
    return sum(c[name].epochs(e) + val_cost for name, e in epochs.items() if e)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def plan_lines(
    stage1: float, budget: float, left: float, epochs: dict[str, int], costs: dict[str, Costs], finish: float
) -> list[str]:
    lines = [f"budget {_fmt(budget)}: {_fmt(stage1)} spent before fine-tuning, {_fmt(max(left, 0))} left"]
    for rung in RUNGS[1:]:
        c = costs[rung.name]
        e = epochs[rung.name]
        if not e:
            need = MIN_WHOLE_EPOCHS if rung is RUNGS[-1] else 1
            what = "one epoch (~{}) does" if need == 1 else f"{need} epochs (~{{}}) do"
            lines.append(f"  {rung.name} ({rung.what}): skipped, {what.format(_fmt(c.epochs(need)))} not fit")
            continue
        each = f"~{_fmt(c.later)}" + (
            f" (first {c.views} ~{_fmt(c.first)})" if c.views and c.first > 1.5 * c.later else ""
        )
        lines.append(f"  {rung.name} ({rung.what}): up to {e} epochs x {each}, ~{_fmt(c.epochs(e))}")
    more = epochs.get(MORE.name, 0)
    if more:
        lines.append(
            f"  {MORE.name} ({MORE.what}): what the rungs above leave, up to {more} epochs, "
            f"~{_fmt(costs['top'].epochs(more))}"
        )
    lines.append(f"  then recalibration and scoring: ~{_fmt(finish)}; rungs are kept by held-out training images")
    return lines
