"""NaturalBatcher: batches grow with the load, results go to their callers, failures stay in their batch."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from syvla.serving.batching import NaturalBatcher


def slow_square(calls: list):
    def fn(items):
        calls.append(list(items))
        time.sleep(0.05)
        if "boom" in items:
            raise ValueError("boom")
        return [x * x for x in items]
    return fn


def test_requests_arriving_while_busy_form_the_next_batch():
    calls = []
    batcher = NaturalBatcher(slow_square(calls), max_size=8)

    async def main():
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)  # the model is now busy with [1]
        rest = await asyncio.gather(*(batcher.submit(x) for x in range(2, 22)))
        return await first, rest

    first, rest = asyncio.run(main())
    assert first == 1 and rest == [x * x for x in range(2, 22)]
    assert calls == [[1], list(range(2, 10)), list(range(10, 18)), list(range(18, 22))]  # FIFO, capped at 8


def test_a_failing_batch_fails_only_its_callers_and_cancelled_callers_are_skipped():
    calls = []
    batcher = NaturalBatcher(slow_square(calls), max_size=2)

    async def main():
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        boom = asyncio.create_task(batcher.submit("boom"))
        bystander = asyncio.create_task(batcher.submit(3))
        cancelled = asyncio.create_task(batcher.submit(4))
        later = asyncio.create_task(batcher.submit(5))
        await asyncio.sleep(0)
        cancelled.cancel()
        results = await asyncio.gather(busy, boom, bystander, cancelled, later, return_exceptions=True)
        return results

    busy, boom, bystander, cancelled, later = asyncio.run(main())
    assert busy == 0 and isinstance(boom, ValueError) and isinstance(bystander, ValueError)
    assert isinstance(cancelled, asyncio.CancelledError) and later == 25
    assert calls == [[0], ["boom", 3], [5]]


def test_runs_in_a_worker_thread_one_batch_at_a_time():
    threads, active, peak = set(), [0], [0]
    lock = threading.Lock()

    def fn(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threads.add(threading.get_ident())
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return items

    batcher = NaturalBatcher(fn, max_size=3)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(main()) == list(range(10))
    assert peak[0] == 1 and threading.get_ident() not in threads
    with pytest.raises(ValueError, match="max_size"):
        NaturalBatcher(fn, max_size=0)
