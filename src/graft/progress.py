"""Progress reporting without tying the library to a terminal.

Library code asks a :class:`Progress` for tasks; the default does nothing, the CLI
passes a rich-backed one (bars with ETA), and callers can pass their own.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["Progress", "Task", "NullProgress", "LogProgress", "logger"]

logger = logging.getLogger("graft")


class Task(Protocol):
    """One progress bar."""

    def advance(self, n: int = 1) -> None: ...

    def update(self, *, total: int | None = None, info: str | None = None) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    """Factory of tasks plus a channel for one-line messages."""

    def task(self, description: str, total: int | None = None) -> Task: ...

    def message(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, *, total: int | None = None, info: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Silent progress: messages go to the ``graft`` logger only."""

    def task(self, description: str, total: int | None = None) -> Task:
        return _NullTask()

    def message(self, text: str) -> None:
        logger.info(text)

    def warn(self, text: str) -> None:
        logger.warning(text)


class LogProgress(NullProgress):
    """Progress that prints messages and warnings (for scripts and notebooks)."""

    def message(self, text: str) -> None:
        print(text)

    def warn(self, text: str) -> None:
        print(f"warning: {text}")
