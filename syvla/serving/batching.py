"""Natural batching: run the model on everything that queued while it was busy.

Ray 2.60's `@serve.batch` forms a batch as soon as its wait window closes,
even while the previous batch still runs; the batches then queue on the
`max_concurrent_batches` semaphore. Under load with a short window that means
many batches of one. `NaturalBatcher` sits behind it: a single worker task
takes every pending request (up to `max_size`, oldest first) each time the
model becomes free, so batches grow with the load and a lone robot never
waits. `@serve.batch`'s window still matters when the model is idle: robots
that send in lockstep reach the first batch together.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable


class NaturalBatcher:
    """`await submit_many(items)` -> `fn(items')` results, where `items'` batches everyone waiting.

    `fn(list) -> list` (same length, same order) is synchronous and runs in a
    worker thread, one call at a time. An exception from `fn` fails that
    batch's requests only. Must be used from one event loop.
    """

    def __init__(self, fn: Callable[[list], list], max_size: int):
        if max_size <= 0:
            raise ValueError(f"NaturalBatcher.max_size must be > 0, got {max_size}")
        self._fn = fn
        self.max_size = max_size
        self._pending: collections.deque[tuple[Any, asyncio.Future]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)  # recent, for metrics/tests

    async def submit(self, item: Any) -> Any:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: list) -> list:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # First use, or the loop we ran on is gone (e.g. a test client's per-request loop).
            self._pending = collections.deque(p for p in self._pending if p[1].get_loop() is loop)
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run())
        self._pending.extend(zip(items, futures))
        self._wake.set()
        # A cancelled caller cancels its futures; the worker skips them, and a
        # batch already running completes for the others.
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = []
                while self._pending and len(batch) < self.max_size:
                    item, fut = self._pending.popleft()
                    if not fut.done():
                        batch.append((item, fut))
                if not batch:
                    continue
                self.batch_sizes.append(len(batch))
                try:
                    results = await asyncio.to_thread(self._fn, [item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
                except Exception as exc:  # noqa: BLE001 - delivered to the batch's callers
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for (_, fut), result in zip(batch, results):
                        if not fut.done():
                            fut.set_result(result)
