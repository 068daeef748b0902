"""Recent answers of the costly counts the console pages show (queue stats, the qshape
table), shared by every page and browser of this process.

Counting 100,000 queued recipients by site and age is one spool query of about 150 ms
(a join over every queued recipient); a console of several operators with pages that
reload would repeat it for each. Here an answer younger than `fresh` seconds is served as
it is; an older one, up to `stale` seconds, is served at once while one refresh runs in the
background (stale-while-revalidate), so only the first page after a quiet spell waits for
the count; past `stale` the request waits for a new count. Requests that miss at the same
time share one computation. Each answer carries its age, and the pages say it ("counted 3 s
ago"). A console action that changes the queue drops the answers, so the operator sees
the effect of their own action on the next page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

__all__ = ["Snapshots"]

log = logging.getLogger("mta.console")


class Snapshots:
    def __init__(self, *, fresh: float = 10.0, stale: float = 60.0, idle: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fresh, self.stale, self.idle = fresh, stale, idle
        # key -> (last asked for, how to count it), for keep_warm.
        self._used: dict[Hashable, tuple[float, Callable[[], Awaitable[Any]]]] = {}
        self._clock = clock
        self._values: dict[Hashable, tuple[float, Any]] = {}  # key -> (taken at, value)
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self._generation = 0  # bumped by clear(): a count begun before is not kept

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
        """The value of `key` and its age in seconds."""
        now = self._clock()
        self._used[key] = (now, compute)
        hit = self._values.get(key)
        if hit is not None:
            age = now - hit[0]
            if age < self.fresh:
                return hit[1], age
            if age < self.stale:
                self._start(key, compute)  # refreshed for the next page
                return hit[1], age
        value = await asyncio.shield(self._start(key, compute))
        return value, 0.0

    def _start(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.get_running_loop().create_task(
                self._run(key, compute, self._generation))
            # A background refresh that fails is logged, never an unretrieved exception.
            task.add_done_callback(_retrieve)
        return task

    async def _run(self, key: Hashable, compute: Callable[[], Awaitable[Any]],
                   generation: int) -> Any:
        try:
            taken = self._clock()
            value = await compute()
            if generation == self._generation:
                self._values[key] = (taken, value)
            return value
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]

    def warm(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> None:
        """Count `key` now, in the background, unless a fresh answer is there."""
        self._used[key] = (self._clock(), compute)
        hit = self._values.get(key)
        if hit is None or self._clock() - hit[0] >= self.fresh:
            self._start(key, compute)

    async def keep_warm(self) -> None:
        """Run for the console's lifetime (a task): see the module's docstring."""
        while True:
            await asyncio.sleep(self.fresh / 2)
            now = self._clock()
            for key, (used, compute) in list(self._used.items()):
                if now - used > self.idle:
                    del self._used[key]  # nobody looks at it any more
                    continue
                hit = self._values.get(key)
                if hit is None or now - hit[0] >= self.fresh:
                    self._start(key, compute)

    def clear(self) -> None:
        """Forget every answer (after an action that changed the queue)."""
        self._generation += 1
        self._values.clear()
        self._running.clear()  # a count under way still answers its own waiters

    async def aclose(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("console: a count failed: %s", task.exception())
