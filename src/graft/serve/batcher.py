"""Micro-batching: images from concurrent requests share one model call.

Requests put preprocessed images on a bounded asyncio queue and await a future. One
worker task takes the first waiting image, gathers more for up to ``max_wait_ms`` (or
until ``max_batch``), runs the model once in a thread (the event loop stays free to
accept and decode), and resolves every future. Under load batches fill up and
throughput rises; a lone request waits at most ``max_wait_ms`` extra.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["MicroBatcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """More images are waiting than the server accepts; the client should retry later."""


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters reported by ``/health``."""

    batches: int = 0
    images: int = 0
    largest_batch: int = 0
    model_seconds: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "batches": self.batches,
            "images": self.images,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.images / self.batches, 2) if self.batches else 0.0,
            "model_seconds": round(self.model_seconds, 3),
        }


class MicroBatcher:
    """Collect images into batches for ``predict`` (N, 3, H, W) -> (N, C).

    Args:
        predict: the model call; runs in a dedicated thread.
        max_batch: largest batch per model call.
        max_wait_ms: how long the first image of a batch waits for company.
        max_queue: images allowed to wait; beyond it :meth:`submit` raises QueueFullError.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
    ) -> None:
        self.predict = predict
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.max_queue = max(1, int(max_queue))
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Start batching in the running loop (again after :meth:`stop`: one app may be served twice)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graft-model")
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop:
            # A new event loop (the app served again, or a test client per request): the old
            # task and queue belong to a loop that no longer runs, so they are dropped.
            self._loop = loop
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._task = loop.create_task(self._run(), name="graft-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._queue = None

    async def submit(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Probabilities for preprocessed images (in order); waits for their batch(es)."""
        if self._queue is None or self._loop is not asyncio.get_running_loop():
            await self.start()
        if self._queue is None:  # start() creates the queue inside the running loop
            raise RuntimeError("MicroBatcher used before start()")
        if self._queue.qsize() + len(arrays) > self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} images are already waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = []
        for a in arrays:
            fut = loop.create_future()
            self._queue.put_nowait(_Item(a, fut))
            futures.append(fut)
        try:
            rows = await asyncio.gather(*futures)
        finally:
            for f in futures:  # on timeout/cancel, drop results nobody will read
                f.cancel()
        return np.stack(rows)

    async def _run(self) -> None:
        if self._queue is None:
            raise RuntimeError("MicroBatcher used before start()")
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            items = [first]
            deadline = loop.time() + self.max_wait
            # Poll rather than wait_for(queue.get()): on Python < 3.12 a timeout racing a
            # put can drop the item. 0.5 ms steps cost nothing next to a model call.
            while len(items) < self.max_batch:
                while len(items) < self.max_batch and not self._queue.empty():
                    items.append(self._queue.get_nowait())
                remaining = deadline - loop.time()
                if len(items) >= self.max_batch or remaining <= 0:
                    break
                await asyncio.sleep(min(0.0005, remaining))
            items = [it for it in items if not it.future.done()]  # timed-out requests
            if not items:
                continue
            batch = np.stack([it.array for it in items])
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._pool, self.predict, batch)
            except Exception as e:  # noqa: BLE001 - fail these requests, keep serving
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            s = self.stats
            s.batches += 1
            s.images += len(items)
            s.largest_batch = max(s.largest_batch, len(items))
            s.model_seconds += time.perf_counter() - t0
            for it, row in zip(items, probs):
                if not it.future.done():
                    it.future.set_result(row)
