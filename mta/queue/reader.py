"""Batched reads: the lookups many callers make at once go to the reader thread together.

Delivery reads every message (its row, its recipients, its body) just before sending it,
and with many connections busy, many of those reads are asked in the same instant. Each
trip to aiosqlite's thread costs a thread wake-up, a GIL hand-off and a loop wake-up back,
which cost more than the read itself. `BatchedReads` does for these reads what group
commit (writer.py) does for writes: the first caller starts a trip on the next loop
iteration; whoever asks while a trip is out waits for the next one, which takes all of
them (up to `max_batch`). Each trip reads in one read transaction: one WAL snapshot, so a
message, its recipients and its body are seen as of the same commit. A read that raises
fails every read of its trip (as a failed group commit fails its whole batch); the next
trip starts afresh.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import aiosqlite

__all__ = ["BatchedReads"]

K = TypeVar("K")
R = TypeVar("R")


class BatchedReads(Generic[K, R]):
    """`await reads.get(key)`: `read_one(db, key)` of the key, run on `rdb`'s thread in
    a trip with the other keys asked meanwhile."""

    def __init__(self, rdb: aiosqlite.Connection,
                 read_one: Callable[[sqlite3.Connection, K], R], max_batch: int = 256) -> None:
        self._rdb = rdb
        self._read_one = read_one
        self._max_batch = max_batch
        self._queue: list[tuple[K, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((key, fut))
        if self._task is None:
            self._task = loop.create_task(self._trips())
        return await fut

    def _read_all(self, db: sqlite3.Connection, keys: Sequence[K]) -> list[R]:
        """On the reader thread: every key in one read transaction."""
        if db.in_transaction:  # a trip that failed half-way left one open
            db.execute("ROLLBACK")
        db.execute("BEGIN")
        try:
            rows = [self._read_one(db, k) for k in keys]
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return rows

    async def _trips(self) -> None:
        batch: list[tuple[K, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                try:
                    rows = await self._rdb._execute(self._read_all, self._rdb._conn,
                                                    [k for k, _ in batch])
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), row in zip(batch, rows, strict=True):
                    if not fut.done():
                        fut.set_result(row)
                batch = []
        except BaseException:  # cancelled (shutdown): nobody may wait forever
            for _, fut in batch + self._queue:
                fut.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None
