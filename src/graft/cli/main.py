"""``graft`` command line: a thin layer over the library.

One module per command group; each exposes a plain function that typer wraps and
only parses, calls the library and renders. graft's own errors (``GraftError``)
become one clean line on stderr and their exit code (see :mod:`graft.exceptions`);
any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from typing import Any

import typer

from graft.cli import backbones as _backbones
from graft.cli import curve as _curve
from graft.cli import demo as _demo
from graft.cli import doctor as _doctor
from graft.cli import embed as _embed
from graft.cli import evaluate as _evaluate
from graft.cli import explain as _explain
from graft.cli import export as _export
from graft.cli import label as _label
from graft.cli import predict as _predict
from graft.cli import report as _report
from graft.cli import serve as _serve
from graft.cli import suggest as _suggest
from graft.cli import train as _train
from graft.exceptions import Interrupted

app = typer.Typer(
    name="graft",
    help="Turn a folder of labelled images into an accurate image classifier, by transfer learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("train")(_train.train)
app.command("embed")(_embed.embed)
app.command("evaluate")(_evaluate.evaluate)
app.command("predict")(_predict.predict)
app.command("backbones")(_backbones.backbones)
app.command("demo")(_demo.demo)
app.command("report")(_report.report)
app.command("explain")(_explain.explain)
app.command("features")(_explain.features)
app.command("dream")(_explain.dream)
app.command("attack")(_explain.attack)
app.command("export")(_export.export)
app.command("serve")(_serve.serve)
app.command("doctor")(_doctor.doctor)
app.command("curve")(_curve.curve)
app.command("suggest")(_suggest.suggest)
app.command("label")(_label.label)


def _click_errors() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """(usage errors, aborts) of click, and of the copy of click that newer typer releases bundle."""
    import importlib

    usage: list[type[Exception]] = []
    aborts: list[type[BaseException]] = []
    for name in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "ClickException"):
            usage.append(mod.ClickException)
        if hasattr(mod, "Abort"):
            aborts.append(mod.Abort)
    return tuple(usage), tuple(aborts)


def _run_app(argv: list[str] | None) -> object:
    """The command; in a process of a multi-process job, a broken collective becomes one :class:`DistributedError`."""
    from graft.exceptions import DistributedError
    from graft.launch import is_peer_failure

    try:
        return app(args=argv, standalone_mode=False)
    except RuntimeError as e:
        if not is_peer_failure(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"lost contact with another process ({first[:200]})") from None


def _is_main() -> bool:
    from graft import distributed

    return distributed.is_main()


def _worker_error(e: Exception) -> bool:
    """Record a worker's error for the launcher; True where this process should print it itself.

    Under ``--devices N`` the launcher prints the one line (naming the rank); under torchrun by
    hand each rank that fails prints its own line, prefixed with its rank.
    """
    import os

    from graft import distributed
    from graft.launch import LAUNCHED_ENV, in_worker, record_worker_error

    if not in_worker():
        return True
    record_worker_error(e)
    if os.environ.get(LAUNCHED_ENV):
        return False
    e.args = (f"rank {distributed.rank()}: {e}",)
    return True


#: Errors of a disk that refused a write (full, over quota or a size limit, read-only).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _storage_error(e: OSError) -> Exception:
    from graft.fileio import storage_error

    return storage_error(e)


def _catch_signals() -> dict[int, Any]:
    """Ctrl-C (SIGINT) and SIGTERM (``docker stop``, systemd) raise :class:`Interrupted` in this process.

    Not a KeyboardInterrupt, which typer turns into a silent exit code: the run marks itself
    interrupted on the way out and :func:`main` prints how to continue. Processes forked from
    this one (decoders) keep the default behaviour.
    """
    import os
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (main() called from a thread of a test)
    pid = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() == pid:
            raise Interrupted(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _interrupted(e: Interrupted) -> None:
    """One line on an interruption (the launcher's or a single process's; a launched worker stays quiet)."""
    import os

    from graft.cli._common import err_console, interrupt_note
    from graft.launch import LAUNCHED_ENV

    if _is_main() and not os.environ.get(LAUNCHED_ENV):
        how = "Ctrl-C" if e.signum == signal.SIGINT else signal.Signals(e.signum).name
        note = interrupt_note()
        err_console.print(f"interrupted ({how})" + (f". {note}" if note else ""), soft_wrap=True)
    sys.exit(e.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``graft`` console script."""
    from rich.text import Text

    from graft.cli._common import ConsoleLogHandler, err_console, set_argv
    from graft.exceptions import GraftError

    usage_errors, aborts = _click_errors()
    set_argv(sys.argv[1:] if argv is None else argv)
    previous = _catch_signals()
    # The library's log warnings, printed as the CLI prints everything, whatever level another
    # library set on the root logger (ONNX Runtime's quantiser is quietened through it).
    graft_log, warnings = logging.getLogger("graft"), ConsoleLogHandler()
    level = graft_log.level
    graft_log.addHandler(warnings)
    graft_log.setLevel(min(level or logging.WARNING, logging.WARNING))
    try:
        rv = _run_app(argv)
    except Interrupted as e:
        _interrupted(e)
    except GraftError as e:
        # graft's own errors are one line; anything else is a bug and keeps its traceback.
        if _worker_error(e):
            err_console.print(Text("error: ", style="red") + Text(str(e)), highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a write the disk refused, wherever it happened: never a bug, one line
        if e.errno not in _DISK_ERRNOS:
            raise
        err_console.print(Text("error: ", style="red") + Text(str(_storage_error(e))), highlight=False, soft_wrap=True)
        sys.exit(1)
    except usage_errors as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except aborts:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        _interrupted(Interrupted())
    finally:  # main() called in-process (tests) leaves the caller's handlers as they were
        graft_log.removeHandler(warnings)
        graft_log.setLevel(level)
        for sig, old in previous.items():
            signal.signal(sig, old)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
