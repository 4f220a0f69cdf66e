"""What a ``--budget`` climb has done so far, so that ``graft train --resume`` continues it.

The climb writes ``ladder.json`` beside the rungs' checkpoints (``RUN/checkpoints/``) once its
plan is made and whenever a rung starts or ends: the plan (the probe's epoch costs and the
epochs per rung), the seconds spent so far, and each rung's planned and finished epochs. A
resumed climb reads it back: it skips the probe and the plan, takes finished rungs back from
their checkpoints without training them again, continues the rung in progress from its last
checkpoint on the same schedule, and counts the seconds already spent against the budget.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft import distributed
from graft.fileio import atomic_write_text
from graft.training.fit.budget_plan import RUNGS, Costs

__all__ = ["STATE_FILE", "LadderState", "Estimate", "read_state"]

STATE_FILE = "ladder.json"

#: (epoch costs per rung, epochs per rung, validation scoring seconds, finishing seconds, plan lines)
Estimate = tuple[dict[str, Costs], dict[str, int], float, float, list[str]]


@dataclass
class LadderState:
    """The climb's record: its plan, the seconds spent before this process, and each rung's epochs.

    Attributes:
        folder: the checkpoint folder (``ladder.json`` and ``ladder-<rung>/``); None: nothing is written.
        started: ``time.perf_counter()`` when this process's fit began.
        spent_before: seconds the climb spent in earlier processes (0 for a fresh run).
        rungs: rung name -> {"planned": epochs, "run": epochs finished (absent while in progress)}.
        resumed: whether this climb continues an earlier one.
        done: epochs the rung in progress had finished when the earlier process ended (its last checkpoint).
    """

    folder: Path | None
    started: float
    spent_before: float = 0.0
    estimate: Estimate | None = None
    rungs: dict[str, dict[str, int]] = field(default_factory=dict)
    resumed: bool = False
    done: dict[str, int] = field(default_factory=dict)

    def spent(self) -> float:
        """Seconds of the budget used so far, earlier processes included."""
        return self.spent_before + time.perf_counter() - self.started

    def epochs(self, rung: str, fresh: int, per_epoch: float, left: float) -> int:
        """The epochs ``rung`` runs to: ``fresh`` for a rung this climb starts, a finished rung's epochs
        (read back, not trained again), and for the rung in progress its plan, as far as ``left``
        seconds at ``per_epoch`` each still allow after the epochs it had finished.
        """
        rec = self.rungs.get(rung) if self.resumed else None
        if rec is None:
            return fresh
        if "run" in rec:
            return int(rec["run"])
        done = self.done.get(rung, 0)
        more = int(max(left, 0.0) // max(per_epoch, 1e-6))
        return min(int(rec["planned"]), done + more)

    def continues(self, rung: str) -> bool:
        """Whether ``rung`` was started by an earlier process (its checkpoints carry it on)."""
        return self.resumed and rung in self.rungs

    def start(self, rung: str, epochs: int) -> None:
        self.rungs[rung] = {**self.rungs.get(rung, {}), "planned": int(epochs)}
        self.write()

    def skip(self, rung: str) -> None:
        self.rungs[rung] = {"planned": 0, "run": 0}
        self.write()

    def finish(self, rung: str, epochs_run: int) -> None:
        self.rungs[rung] = {**self.rungs.get(rung, {}), "run": int(epochs_run)}
        self.write()

    def write(self) -> None:
        """Record the state (rank 0, atomically); a climb without a checkpoint folder records nothing."""
        if self.folder is None or not distributed.is_main() or self.estimate is None:
            return
        costs, epochs, val_cost, finish, lines = self.estimate
        doc = {
            "spent_seconds": self.spent(),
            "costs": {k: [c.first, c.later, c.views] for k, c in costs.items()},
            "epochs": epochs,
            "val_cost": val_cost,
            "finish": finish,
            "plan": lines,
            "rungs": self.rungs,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / STATE_FILE, json.dumps(doc, indent=1))


def read_state(folder: str | os.PathLike | None, started: float, resume: bool) -> tuple[LadderState, str | None]:
    """The climb's state: read back from ``folder`` where ``resume`` and it is intact, else a fresh one.

    Returns the state and a note for the user where a record was found damaged (the climb then
    starts again). The seconds spent include the finished epochs of the rung that was in progress,
    which its last checkpoint records.
    """
    path = None if folder is None else Path(folder)
    fresh = LadderState(path, started)
    if not resume or path is None or not (path / STATE_FILE).exists():
        return fresh, None
    try:
        doc = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        state = _parse(doc, path, started)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        return fresh, f"{path / STATE_FILE} is damaged ({type(e).__name__}); the ladder starts again"
    for name, rec in state.rungs.items():
        if "run" not in rec:  # the rung that was in progress
            seconds, state.done[name] = _finished_epochs(path / f"ladder-{name}")
            state.spent_before += seconds
    return state, None


def _parse(doc: dict[str, Any], path: Path, started: float) -> LadderState:
    """A :class:`LadderState` from ``ladder.json``'s content; ValueError/TypeError/KeyError where it does not fit."""
    spent = float(doc["spent_seconds"])
    if not math.isfinite(spent) or spent < 0:
        raise ValueError("spent_seconds")
    costs = {str(k): Costs(float(v[0]), float(v[1]), int(v[2])) for k, v in dict(doc["costs"]).items()}
    epochs = {str(k): int(v) for k, v in dict(doc["epochs"]).items()}
    if not {r.name for r in RUNGS[1:]} <= set(costs) & set(epochs):
        raise ValueError("its rungs are not this ladder's")
    lines = [str(x) for x in list(doc["plan"])]
    rungs = {
        str(name): {k: int(v) for k, v in dict(rec).items() if k in ("planned", "run")}
        for name, rec in dict(doc["rungs"]).items()
    }
    if any("planned" not in r for r in rungs.values()):
        raise ValueError("a rung without its planned epochs")
    estimate: Estimate = (costs, epochs, float(doc["val_cost"]), float(doc["finish"]), lines)
    return LadderState(path, started, spent, estimate, rungs, resumed=True)


def _finished_epochs(folder: Path) -> tuple[float, int]:
    """(seconds, count) of the epochs a rung's last checkpoint records; (0, 0) where it is missing or unreadable."""
    try:
        history = json.loads((folder / "last" / "state.json").read_text(encoding="utf-8")).get("history", [])
        return float(sum(float(r.get("seconds", 0.0)) for r in history)), len(history)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0, 0
