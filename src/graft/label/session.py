"""A labelling session: the queue of images (suggested order), the answers store, skip and undo."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from graft.exceptions import DataError
from graft.label.store import AnswerStore

__all__ = ["Item", "LabelSession", "queue_from_csv", "queue_from_folder"]


@dataclass(frozen=True)
class Item:
    """One image to label: its path relative to the folder, and what a model or ``graft suggest`` said of it."""

    relpath: str
    guess: str = ""
    reason: str = ""


def queue_from_folder(folder: Path, paths: Sequence[str]) -> list[Item]:
    """Every image, in folder order."""
    return [Item(os.path.relpath(p, folder)) for p in paths]


def queue_from_csv(path: str | os.PathLike, folder: Path) -> list[Item]:
    """The images of a ``graft suggest --csv`` file, in its order (paths relative to ``folder``)."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{p}: cannot be read as a CSV file ({e}); pass the file graft suggest --csv wrote") from None
    items = []
    for n, row in enumerate(rows, 2):
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DataError(f"{p}, row {n}: no path; pass the file graft suggest --csv wrote")
        full = (folder / rel).resolve()
        if not full.is_relative_to(folder.resolve()) or not full.is_file():
            raise DataError(f"{p}, row {n}: {rel} is not an image inside {folder}; pass the folder it was made for")
        items.append(Item(rel, (row.get("guess") or "").strip(), (row.get("reason") or "").strip()))
    if not items:
        raise DataError(f"{p} lists no images; run graft suggest --csv again")
    return items


class LabelSession:
    """The images still to label (answered ones left out), what is shown now, and what can be undone.

    Only images of the queue are ever served: a client names an image by its position, never by a path.
    """

    def __init__(self, folder: str | os.PathLike, queue: Sequence[Item], store: AnswerStore) -> None:
        self.folder = Path(folder).resolve()
        self.store = store
        self.items = list(queue)
        self.todo = [i for i, it in enumerate(self.items) if it.relpath not in store.answers]
        self.history: list[int] = []  # answered in this session, for undo

    @property
    def classes(self) -> list[str]:
        return self.store.classes

    def image_path(self, index: int) -> Path:
        if not 0 <= index < len(self.items):
            raise KeyError(index)
        return self.folder / self.items[index].relpath

    def state(self) -> dict[str, Any]:
        """What the page shows: the classes, progress and the current image (None when all are done)."""
        done = sum(1 for it in self.items if it.relpath in self.store.answers)
        cur = self.todo[0] if self.todo else None
        item = None
        if cur is not None:
            it = self.items[cur]
            item = {"id": cur, "name": it.relpath, "guess": it.guess, "reason": it.reason}
        return {
            "classes": self.classes,
            "total": len(self.items),
            "done": done,
            "left": len(self.todo),
            "item": item,
            "can_undo": bool(self.history),
            "out": self.store.path.name,
        }

    def _current(self, index: int) -> None:
        if not self.todo or self.todo[0] != index:
            raise LookupError("that image is no longer the current one; reload the page")

    def answer(self, index: int, label: str) -> None:
        """Record ``label`` for the current image (on disk before this returns), then move on."""
        self._current(index)
        if label not in self.classes:
            raise ValueError(f"unknown class {label!r}; one of {', '.join(self.classes)}")
        self.store.add(self.items[index].relpath, label)
        self.history.append(self.todo.pop(0))

    def skip(self, index: int) -> None:
        """Move the current image to the end of the queue, unanswered."""
        self._current(index)
        self.todo.append(self.todo.pop(0))

    def undo(self) -> None:
        """Take back the last answer of this session and show that image again."""
        if not self.history:
            raise LookupError("nothing to undo")
        index = self.history.pop()
        self.store.remove(self.items[index].relpath)
        self.todo.insert(0, index)
