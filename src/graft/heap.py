"""glibc heap controls: give freed memory back to the OS (a no-op where libc is not glibc).

Why graft needs them: glibc keeps freed blocks below its mmap threshold (which grows
to 32 MB as large blocks are freed) on its heaps for reuse, and heaps fragment. Stage 1
allocates and frees many arrays of 1-60 MB: ONNX Runtime's arena and the batches while
embedding, then the head fit's chunks and cross-validation subsets and the OOD fit's
folds. Each phase then reuses the previous one's free blocks, faulting their pages back
in, and leaves them resident: 20,000 images, cold cache, the head fit alone took the
process from 1,055 to 1,741 MiB. With large blocks mmapped (freed memory leaves at
once) the whole stage peaked at 1,314 MiB.
"""

from __future__ import annotations

import ctypes
import functools
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["malloc_trim", "large_blocks_returned"]

_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
#: Inside :func:`large_blocks_returned`: blocks from this size are mmapped, so free() unmaps them.
RETURN_FROM = 4 << 20
#: After it: the largest threshold glibc's own adaptation reaches (64-bit), so later work
#: (fine-tuning) keeps reusing heap blocks as with the default. Setting the threshold at
#: all turns the adaptation off; 4 MB for a whole fine-tune made its steps 35-50% slower
#: (pages of every large activation faulted in again each step), 32 MB measured within noise.
AFTER = 32 << 20


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist on glibc only
        return libc
    except (OSError, AttributeError):
        return None


def malloc_trim() -> None:
    """Return the free pages of every glibc heap to the OS."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def large_blocks_returned() -> Iterator[None]:
    """Within the block, blocks of :data:`RETURN_FROM` or more are mmapped (freed memory leaves at once)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, RETURN_FROM)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, AFTER)
            libc.malloc_trim(0)
