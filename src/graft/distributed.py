"""Rank and world helpers over ``torch.distributed``: one place that knows whether this is one process of many.

graft runs N processes through ``torch.distributed.run`` (torchrun), which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``. Everything here
is a no-op in a single process, so library code calls it unconditionally. The
process group uses gloo on CPU and NCCL on CUDA, always with a bounded timeout
(``GRAFT_DIST_TIMEOUT`` seconds): a collective that a peer never joins ends in an
error, never a hang. Rank 0 alone writes files; the others compute and stay quiet.
"""

from __future__ import annotations

import atexit
import os
import pickle
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "all_gather_object",
    "barrier",
    "broadcast_object",
    "init",
    "is_distributed",
    "is_main",
    "local_world_size",
    "on_rank_zero",
    "rank",
    "shard",
    "timeout_s",
    "world_size",
]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 900.0
"""Longest a collective waits for its peers: rank 0 alone fits the head meanwhile (minutes on 200k rows)."""


def timeout_s() -> float:
    """The collective timeout in seconds (``GRAFT_DIST_TIMEOUT``, default :data:`DEFAULT_TIMEOUT_S`)."""
    try:
        return max(1.0, float(os.environ.get("GRAFT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def world_size() -> int:
    """Processes in the job (1 outside torchrun)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_world_size() -> int:
    """Processes of the job on this machine (they share its cores)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())) or 1)) if world_size() > 1 else 1


def is_distributed() -> bool:
    """True in a job of several processes."""
    return world_size() > 1


def is_main() -> bool:
    """True on the process that writes files and talks to the user (rank 0, or the only one)."""
    return rank() == 0


def init(device: str = "auto") -> bool:
    """Join the process group (idempotent); False in a single process.

    gloo for CPU work, NCCL when ``device`` is CUDA; each process gets
    ``cores // local processes`` threads, so two processes on two cores do not
    oversubscribe them.
    """
    if not is_distributed():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    cuda = torch.cuda.is_available() and device != "cpu" and not device.startswith("cpu")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // local_world_size()))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s()))
    # Left to the interpreter's teardown, gloo's threads were sometimes still joinable when
    # static destructors ran: "terminate called without an active exception", SIGABRT after
    # all the work was done (seen once in CI on `graft embed --devices 2`).
    atexit.register(_leave)
    return True


def _leave() -> None:
    """Leave the process group at exit (each process alone; no collective)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _group_ready() -> bool:
    if not is_distributed():
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        init()
    return True


def barrier() -> None:
    """Wait until every process gets here (bounded by the collective timeout)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every process (pickled; for decisions and small results)."""
    if not _group_ready():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not _group_ready():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_rank_zero(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its exception) to every process.

    For work that must happen once (fitting the head, scoring, checking the run folder):
    the others wait at the broadcast. An exception on rank 0 is raised on every rank,
    so all processes stop together with the same error instead of some waiting forever.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    result: tuple[str, Any] = ("ok", None)
    if is_main():
        try:
            result = ("ok", fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            result = ("error", e if _picklable(e) else RuntimeError(f"rank 0: {type(e).__name__}: {e}"))
    kind, value = broadcast_object(result)
    if kind == "error":
        raise value
    return value


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - any pickling failure means "send a summary instead"
        return False


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every ``world_size()``-th one from ``rank()`` (disjoint, covering)."""
    return list(items[rank() :: world_size()])
