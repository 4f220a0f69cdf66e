"""``--devices N``: start the same command as N processes through ``torch.distributed.run`` (torchrun).

graft does not manage processes itself: it builds torchrun's own arguments
(``--standalone`` on one machine; ``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint``
across machines) and runs its elastic agent in this process with ``-m graft`` and
the command line minus the launch options. The agent watches the workers: when one
dies, it stops the others (SIGTERM, then SIGKILL) and this module turns its report
into one line naming the rank and the cause (:class:`~graft.exceptions.DistributedError`).
Workers record graft's own errors in torchrun's error file (:func:`record_worker_error`),
so the line carries the real message rather than an exit code.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any, Callable, Sequence

from graft import distributed
from graft.exceptions import DistributedError, Interrupted
from graft.validation import invalid_parameter

__all__ = [
    "LAUNCH_OPTIONS",
    "failure_line",
    "first_failure",
    "in_worker",
    "is_peer_failure",
    "launch",
    "record_worker_error",
    "strip_launch_options",
    "torchrun_args",
]

#: Options the launcher consumes (each takes one value); the workers never see them.
LAUNCH_OPTIONS = ("--devices", "--nnodes", "--node-rank", "--rdzv-endpoint")

log = logging.getLogger("graft")

#: Set in the workers' environment: the launcher prints their errors, so they stay silent.
LAUNCHED_ENV = "GRAFT_LAUNCHED"


def in_worker() -> bool:
    """True inside a process that torchrun started (with graft's launcher or by hand)."""
    return distributed.is_distributed() or "TORCHELASTIC_RUN_ID" in os.environ


def strip_launch_options(argv: Sequence[str]) -> list[str]:
    """``argv`` without the launch options and their values (``--devices 2`` and ``--devices=2``)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in LAUNCH_OPTIONS:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def torchrun_args(
    worker_argv: Sequence[str], *, devices: int, nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str | None = None
) -> list[str]:
    """torchrun's command line for ``python -m graft WORKER_ARGV`` on ``devices`` local processes."""
    if devices < 1:
        raise invalid_parameter("devices", "graft", "a number of processes per machine, at least 1", devices)
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise invalid_parameter("node_rank", "graft", f"a machine number from 0 to {nnodes - 1}", node_rank)
    args = ["--nproc_per_node", str(devices), "--max_restarts", "0", "--monitor_interval", "0.2"]
    if nnodes == 1 and not rdzv_endpoint:
        args = ["--standalone", *args]
    else:
        if not rdzv_endpoint:
            raise invalid_parameter(
                "rdzv_endpoint", "graft", "HOST:PORT of machine 0, reachable from every machine (--nnodes > 1)", None
            )
        args += ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--rdzv_endpoint", rdzv_endpoint]
    return [*args, "-m", "graft", *worker_argv]


def launch(
    worker_argv: Sequence[str],
    *,
    devices: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    hint: str = "",
    finished: Callable[[], bool] | None = None,
) -> None:
    """Run ``graft WORKER_ARGV`` as ``devices`` processes here (``nnodes`` machines in all) and wait for them.

    ``hint`` ends the failure line (e.g. how to resume). ``finished`` says whether the job's
    work was done and written (a run folder marked done): a rank that dies after that, in
    its clean-up, is a warning, not a failure of the job.

    Raises:
        DistributedError: a worker failed; one line naming its rank and cause.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(
        torchrun_args(worker_argv, devices=devices, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // devices)))
    os.environ[LAUNCHED_ENV] = "1"
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's chatter; we print one line
    try:
        torchrun.run(args)
    except SignalException as e:  # Ctrl-C or SIGTERM to the launcher: the agent has stopped the workers
        raise Interrupted(int(e.sigval)) from None
    except ChildFailedError as e:
        if finished is not None and finished():
            log.warning(
                "%s after the job had finished; its results are complete", failure_line(e.failures, stopped=False)
            )
            return
        _rank, first = first_failure(e.failures)
        input_error = first.exitcode in (2, 3)  # graft's "fix the input" codes: resuming would not help
        err = DistributedError(failure_line(e.failures) + (f". {hint}" if hint and not input_error else ""))
        err.exit_code = first.exitcode if first.exitcode > 0 else 1
        raise err from None
    finally:
        os.environ.pop(LAUNCHED_ENV, None)


def _message(f: Any) -> str:
    m = f.message
    return str(m.get("message", "") if isinstance(m, dict) else m or "")


#: Exit codes of a rank the agent stopped: killed by SIGTERM, or graft's own exit on it (and on Ctrl-C).
_STOPPED = (-signal.SIGTERM, 128 + signal.SIGTERM, 128 + signal.SIGINT)


def first_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """(rank, failure) of the cause among torchrun's failures: the lowest rank that failed for a reason of its own.

    A rank the agent stopped (SIGTERM) or one that only lost its peers is a consequence;
    the cause is, first, a rank killed by another signal, then one that recorded an error,
    then one that merely exited non-zero.
    """

    def weight(item: tuple[int, Any]) -> tuple[int, int]:
        r, f = item
        text = _message(f)
        if f.exitcode in _STOPPED or "lost contact" in text:
            return (3, r)
        if f.exitcode < 0:
            return (0, r)
        return (1 if text and not text.startswith("To enable traceback") else 2, r)

    return min(failures.items(), key=weight)


def failure_line(failures: dict[int, Any], *, stopped: bool = True) -> str:
    """One line for torchrun's failures: the rank that caused them (:func:`first_failure`) and why.

    ``stopped``: end with "the other processes were stopped".
    """
    rank, f = first_failure(failures)
    msgs = [_message(g).lower() for r, g in failures.items() if r != rank]
    peers_timed_out = any("lost contact" in m and ("timed out" in m or "timeout" in m) for m in msgs)
    if f.exitcode == -signal.SIGKILL and peers_timed_out:  # the agent's kill of a rank that had stopped answering
        cause = f"stopped answering (the others' collectives timed out), then killed by SIGKILL (pid {f.pid})"
    elif f.exitcode < 0:
        cause = f"killed by {f.signal_name()} (pid {f.pid})"
    else:
        text = _message(f)
        cause = text if text and not text.startswith("To enable traceback") else f"exited with code {f.exitcode}"
    cause = cause.rstrip(" .")  # an error message's own full stop would read ".;"
    return f"rank {rank} failed: {cause}" + ("; the other processes were stopped" if stopped else "")


def record_worker_error(e: BaseException) -> None:
    """Write ``e`` to torchrun's error file, in the format its agent reads, so the launcher can name it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": str(e), "extraInfo": {"py_callstack": "", "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass  # the launcher falls back to the exit code


def is_peer_failure(e: BaseException) -> bool:
    """True for the error a rank gets when another rank died or hung (a collective broke or timed out)."""
    try:
        import torch.distributed as dist

        if isinstance(e, dist.DistError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(e).lower()
    clues = ("connection closed by peer", "connection reset by peer", "gloo", "nccl", "timed out", "broken pipe")
    return isinstance(e, RuntimeError) and distributed.is_distributed() and any(c in text for c in clues)
