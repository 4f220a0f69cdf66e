"""Shared CLI plumbing: rich progress, console output, error handling."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Callable, Iterator

from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderHook
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.segment import Segment
from rich.text import Text

__all__ = [
    "console",
    "err_console",
    "RichProgress",
    "QuietProgress",
    "SilentProgress",
    "make_progress",
    "process_seconds",
    "set_argv",
    "command_argv",
    "ConsoleLogHandler",
    "on_interrupt",
    "interrupt_note",
    "printable",
]

_ARGV: list[str] = []
_ON_INTERRUPT: list[Callable[[], str | None]] = []


def on_interrupt(note: Callable[[], str | None]) -> None:
    """What the "interrupted" line adds when Ctrl-C or SIGTERM stops this command (e.g. how to resume)."""
    _ON_INTERRUPT[:] = [note]


def interrupt_note() -> str | None:
    return _ON_INTERRUPT[-1]() if _ON_INTERRUPT else None


def set_argv(argv: list[str]) -> None:
    """Remember the command line ``main`` ran (``--devices N`` re-runs it in each process)."""
    _ARGV[:] = [str(a) for a in argv]


def command_argv() -> list[str]:
    """The arguments of this ``graft`` invocation (without the program name)."""
    return list(_ARGV)


# Characters that steer a terminal: C0 controls but tab and newline (ESC starts colour, cursor
# and screen-clearing sequences and OSC 52 clipboard writes), DEL, C1 controls (CSI, OSC), and
# the bidirectional overrides that make text read other than it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character that could steer the terminal shown as its escape (``\\x1b``).

    File, folder and class names come from the user's disk: a name holding ``ESC[2J`` must
    print as those characters, not clear the screen. Everything graft prints to a terminal
    passes through here (the consoles below apply it to every line they render).
    """
    return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


class _Printable:
    """A renderable whose text segments are :func:`printable` (rich's own control codes pass)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for seg in console.render(self.inner, options):
            yield seg if seg.control else Segment(printable(seg.text), seg.style)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.inner)


class _Sanitise(RenderHook):
    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Printable(r) for r in renderables]


def _console(**kw: Any) -> Console:
    c = Console(markup=False, highlight=False, **kw)
    c.push_render_hook(_Sanitise())
    return c


# No rich markup anywhere: file and class names like "IMG_001 [edited].jpg" or "[/]" print as
# they are, and no name reaches the terminal as control characters. Styles are applied with
# rich.text.Text where wanted.
console = _console()
err_console = _console(stderr=True)


class ConsoleLogHandler(logging.Handler):
    """The ``graft`` logger's warnings as ``warning: ...`` lines on stderr, printable like all CLI output."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own convention: a bad record never ends the program
            self.handleError(record)
            return
        err_console.print(Text("warning: ", style="yellow") + Text(text), highlight=False, soft_wrap=True)


def process_seconds() -> float:
    """Wall time since this process started (interpreter start-up and imports included)."""
    try:
        import os

        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


class _RichTask:
    def __init__(self, owner: RichProgress, task_id: TaskID) -> None:
        self.owner, self.task_id = owner, task_id

    def advance(self, n: int = 1) -> None:
        self.owner.bars.advance(self.task_id, n)

    def update(self, *, total: int | None = None, info: str | None = None) -> None:
        kw: dict[str, Any] = {}
        if total is not None:
            kw["total"] = total
        if info is not None:
            kw["info"] = info
        self.owner.bars.update(self.task_id, **kw)

    def close(self) -> None:
        self.owner.bars.stop_task(self.task_id)
        self.owner.bars.update(self.task_id, visible=False)


class RichProgress:
    """Progress bars with ETA on stderr; messages and warnings printed above them."""

    def __init__(self) -> None:
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        self.warnings: list[str] = []

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def task(self, description: str, total: int | None = None) -> _RichTask:
        return _RichTask(self, self.bars.add_task(description, total=total, info=""))

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        # User text (file names like "IMG [edited].jpg") is never read as rich markup.
        self.bars.console.print(Text("warning: ", style="yellow") + Text(text), highlight=False, soft_wrap=True)


class QuietProgress:
    """--quiet: no bars, no messages; warnings still go to stderr (one line each)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def task(self, description: str, total: int | None = None):
        from graft.progress import NullProgress

        return NullProgress().task(description, total)

    def message(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        print(f"warning: {printable(text)}", file=sys.stderr)


class SilentProgress(QuietProgress):
    """The other processes of a multi-process job: rank 0 shows bars, messages and warnings for all."""

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def make_progress(quiet: bool) -> RichProgress | QuietProgress:
    from graft import distributed

    if not distributed.is_main():
        return SilentProgress()
    return QuietProgress() if quiet else RichProgress()


def launch_if_asked(
    devices: int,
    nnodes: int,
    node_rank: int,
    rdzv_endpoint: str | None,
    *,
    device: str = "auto",
    extra: list[str] | None = None,
    hint: str = "",
    finished: Callable[[], bool] | None = None,
) -> bool:
    """``--devices N`` (or ``--nnodes``): re-run this command as N processes through torchrun; True if it did.

    Inside a process torchrun started, join the process group instead and return False
    (the command then runs as one rank of the job). ``hint`` and ``finished``: see :func:`graft.launch.launch`.
    """
    from graft import distributed
    from graft.launch import in_worker, launch, strip_launch_options

    if in_worker():
        distributed.init(device)
        return False
    if devices == 1 and nnodes == 1:
        return False
    argv = strip_launch_options(command_argv()) + list(extra or [])
    launch(
        argv,
        devices=devices,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        hint=hint,
        finished=finished,
    )
    return True
