"""The two ends of a budget climb: what stage 1 hands it (:class:`LadderStart`) and what it hands
back (:class:`LadderResult`: the table, the plan, the kept rung and where the budget went).

Apart from the climb (:mod:`graft.training.fit.ladder`) so that what goes in and what comes out
read on their own, without the climb's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from graft.features.dataset import SplitFeatures
from graft.network import GraftNet
from graft.training.finetune.options import FineTuneConfig
from graft.training.finetune.policy import FineTunePolicy
from graft.training.fit.rungs import RungResult
from graft.training.fit.stage_two import FineTuneStage
from graft.training.fit.stages import HeadStage
from graft.training.fit.wide import WideSource, WideStage
from graft.training.head.semi import PseudoSource
from graft.transforms.eval import Preprocessing

__all__ = ["LadderStart", "LadderResult"]


@dataclass(frozen=True)
class LadderStart:
    """Where the climb starts: what stage 1 fitted, the data, and how the validation split is scored.

    Attributes:
        net: stage 1's network (changed in place: it ends as the kept rung's network).
        data: the scanned splits stage 1 was fitted on (:class:`~graft.data.records.DatasetSplits`).
        head / feats: the stage-1 head result and the training features it was fitted on.
        val: validation (paths, labels), scored for the table only.
        score: validation probabilities of a network through the prediction path.
        preprocessing: the backbone's evaluation preprocessing.
        wide: stage 1's embedding, to try the wide-features rung first (None: no such rung).
        pool: ``--unlabeled``'s images where cross-validation kept a method: the fine-tuning rungs
            train on pseudo-labelled ones too (None: labelled images only).
    """

    net: GraftNet
    data: Any
    head: HeadStage
    feats: SplitFeatures
    val: tuple[Sequence[str], np.ndarray]
    score: Callable[[nn.Module], np.ndarray]
    preprocessing: Preprocessing
    wide: WideSource | None = None
    pool: PseudoSource | None = None


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
    wide: WideStage | None = None  # the wide-features rung, where it was kept (``net`` is then stage 1's)
    probe_seconds: float = 0.0  # timing the fine-tuning rungs before the plan
    unused_seconds: float | None = None  # budget left when the climb ended (None: not measured)
    unlabeled: dict[str, Any] | None = None  # what the rungs took from --unlabeled (None: nothing offered)

    def table(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rungs]

    def spent(self) -> list[str]:
        """Where the budget went: seconds per rung, and what was left unused."""
        used = sum(r.seconds for r in self.rungs) + self.probe_seconds
        unused = self.budget_seconds - used if self.unused_seconds is None else self.unused_seconds
        rows = [f"{r.rung}: {r.seconds:.0f} s" + (f" ({r.note})" if r.note else "") for r in self.rungs]
        k = 2 if len(self.rungs) > 1 and self.rungs[1].rung == "wide" else 1  # the probes follow head (and wide)
        lines = rows[:k] + [f"timing probes: {self.probe_seconds:.0f} s"] + rows[k:]
        rest = self.budget_seconds - used - max(unused, 0)  # scoring, recalibration, what the rows do not count
        other = [f"scoring and the rest: {rest:.0f} s"] if rest >= 1 else []
        return lines + other + [f"unused: {max(unused, 0):.0f} s of {self.budget_seconds:.0f} s"]
