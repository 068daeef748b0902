"""Group commit of one spool shard: every write, on one connection, by one task.

Callers never write themselves. `put()` (a message, with its body and recipients), `call()`
(any other write: outcomes, the admin operations) and `bare()` queue an operation and wait
on a future; one writer task takes everything queued (up to `max_batch`), runs it in one
transaction, commits (one fsync), then resolves each future. An operation that finds the
writer idle waits `wait` seconds ([spool] commit_wait) for others to share its commit;
under load, operations that arrive while a commit is running share the next one. If a
commit fails, the transaction is rolled back, every operation in that batch fails with
`SpoolFullError` (452 4.3.1) or `SpoolError` (451 4.3.0), nothing committed earlier is
touched, and the next batch tries again. A bare call (VACUUM) runs alone, outside any
transaction, between two batches.

The spool (spool.py) says what a put writes (`insert_puts`: its tables); this module only
knows how writes are grouped.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from mta.queue.records import SpoolError, SpoolFullError

__all__ = ["Call", "GroupCommit", "Put"]


@dataclass(slots=True)
class Put:
    """A message to write: its row, body and recipient rows (the spool's `insert_puts`)."""

    message: tuple[Any, ...]
    body: bytes | None
    recipients: list[tuple[Any, ...]]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class Call:
    """Any other write: `fn(db)` inside the batch's transaction (or, bare, alone)."""

    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]
    result: Any = field(default=None)
    bare: bool = False  # run alone, outside any transaction (VACUUM)
    # `fn` is plain (not a coroutine function): it takes the sqlite3 connection and runs
    # on the database thread, inside the batch's one trip there (delivery outcomes).
    sync: bool = False


def _as_spool_error(exc: BaseException) -> SpoolError:
    """Map a failed commit to the error (and SMTP reply) the callers get."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return SpoolFullError(f"spool full: {exc}")
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC outside SQLite
        return SpoolFullError(f"spool full: {exc}")
    return SpoolError(f"spool write failed: {exc}")


class GroupCommit:
    """The writer task of one spool shard's connection `db`. `close()` commits what is
    queued and stops it."""

    def __init__(self, db: aiosqlite.Connection, max_batch: int,
                 insert_puts: Callable[[sqlite3.Connection, list[Put]], None], *,
                 wait: float = 0.0) -> None:
        self._db = db
        self._max_batch = max_batch
        self._wait = wait
        self._insert_puts = insert_puts
        self._ops: collections.deque[Put | Call] = collections.deque()
        self._wake = asyncio.Event()
        self._bare = 0  # bare calls queued (Spool.scrub)
        self.closing = False
        self._task = asyncio.get_running_loop().create_task(self._write_loop())
        # Counters for metrics and the benchmark: how well group commit is grouping.
        self.commits = 0
        self.committed_ops = 0
        # Called with (seconds, operations) after each group commit (metrics).
        self.observe_commit: Callable[[float, int], None] | None = None

    def check_open(self) -> None:
        if self.closing:
            raise SpoolError("spool is closed")

    async def put(self, message: tuple[Any, ...], body: bytes,
                  recipients: list[tuple[Any, ...]]) -> None:
        """Write one message in the next group commit; returns once it is committed."""
        self.check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(Put(message, body, recipients, fut))
        self._wake.set()
        await fut

    async def call(self, fn: Callable[[Any], Any], *, sync: bool = False) -> Any:
        """`fn(db)` in the next group commit; its result once committed. `sync`: `fn` is
        a plain function of the sqlite3 connection (run on the database thread)."""
        self.check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(Call(fn, fut, sync=sync))
        self._wake.set()
        return await fut

    async def bare(self, fn: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> Any:
        """`fn(db)` alone, outside any transaction, between two group commits."""
        self.check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(Call(fn, fut, bare=True))
        self._bare += 1
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Commit what is queued, then stop (raises what stopped the writer, if anything
        did)."""
        self.closing = True
        self._wake.set()
        await self._task

    async def _write_loop(self) -> None:
        try:
            await self._write_batches()
        except BaseException as exc:
            # A bug or a cancelled writer must not leave callers waiting forever.
            self.closing = True
            while self._ops:
                op = self._ops.popleft()
                if not op.future.done():
                    op.future.set_exception(SpoolError(f"spool writer stopped: {exc!r}"))
            raise

    async def _write_batches(self) -> None:
        while True:
            if not self._ops:
                if self.closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                if self._wait > 0 and not self.closing:
                    await asyncio.sleep(self._wait)  # let others join this commit
                continue
            n = min(len(self._ops), self._max_batch)
            if self._bare:  # rare (an erasure): a bare call runs alone, after this batch
                first = self._ops[0]
                if isinstance(first, Call) and first.bare:
                    self._ops.popleft()
                    self._bare -= 1
                    await self._run_bare(first)
                    continue
                n = next((i for i, op in enumerate(itertools.islice(self._ops, n))
                          if isinstance(op, Call) and op.bare), n)
            batch = [self._ops.popleft() for _ in range(n)]
            started = time.perf_counter()
            await self._commit(batch)
            if self.observe_commit is not None:
                self.observe_commit(time.perf_counter() - started, n)

    async def _commit(self, batch: list[Put | Call]) -> None:
        db = self._db
        puts = [op for op in batch if isinstance(op, Put)]
        calls = [op for op in batch if isinstance(op, Call)]
        try:
            if all(c.sync for c in calls):  # the hot path: puts and delivery outcomes
                await db._execute(self._commit_all, db._conn, puts, calls)
            else:  # an admin operation awaits statement by statement
                await db.execute("BEGIN IMMEDIATE")
                if puts:
                    await db._execute(self._insert_puts, db._conn, puts)
                for call in calls:
                    call.result = (await db._execute(call.fn, db._conn) if call.sync
                                   else await call.fn(db))
                await db.execute("COMMIT")
        except Exception as exc:  # any failure fails the whole batch, nothing half-done
            await self._rollback()
            err = _as_spool_error(exc)
            for op in batch:
                if not op.future.done():
                    e = type(err)(str(err))
                    e.__cause__ = exc
                    op.future.set_exception(e)
            return
        finally:
            for p in puts:
                p.body = None  # the body is on disk now (or rejected): let it go
        self.commits += 1
        self.committed_ops += len(batch)
        for op in batch:
            if not op.future.done():
                op.future.set_result(op.result if isinstance(op, Call) else None)

    def _commit_all(self, db: sqlite3.Connection, puts: list[Put], calls: list[Call]) -> None:
        """A whole batch of puts and plain calls, BEGIN to COMMIT, on the database thread:
        one hand-off per group commit instead of one per statement (each costs a thread
        wake-up and a loop wake-up back). A failure leaves the transaction to the
        rollback."""
        db.execute("BEGIN IMMEDIATE")
        if puts:
            self._insert_puts(db, puts)
        for call in calls:
            call.result = call.fn(db)
        db.execute("COMMIT")

    async def _run_bare(self, call: Call) -> None:
        try:
            result = await call.fn(self._db)
        except Exception as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            return
        if not call.future.done():
            call.future.set_result(result)

    async def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL, SQLITE_IOERR).
        if self._db.in_transaction:
            try:
                await self._db.execute("ROLLBACK")
            except Exception:  # the batch is failed already; the next BEGIN will tell
                pass
