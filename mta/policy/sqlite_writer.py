"""Group commit of policy.db: journals and operations queued on the event loop, written on
one database thread (the base class of the embedded store, sqlite_store.py).

Everything queued while a batch was being written goes into the next, inside one SQLite
transaction that stays open between batches and is committed when someone needs durability
(an operator action, a delivery outcome, a `durable()` waiter), when it has grown to
_MAX_BATCH entries, or _COMMIT_AFTER after its last batch. What must be durable is durable
before the message's 250: ingress awaits `durable(txn_id)` beside the spool's own fsync,
which waits for the COMMIT covering every write of that transaction. A write that fails
rolls the whole open transaction back: the store then reloads its memory (`_reload`) and
every transaction the failure undid is told so by `durable()`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mta.policy.sqlite_journal import Journal, apply_journal
from mta.policy.sqlite_state import Refused

__all__ = ["CACHE_MAX", "GroupCommit", "StoreUnreadable"]

log = logging.getLogger("mta.policy")

T = TypeVar("T")

# Entries per SQLite transaction: large enough to amortise the fsync, small enough that
# one transaction does not grow without bound under a steady load.
_MAX_BATCH = 256
# How long a transaction with nobody waiting for it stays open for more writes.
_COMMIT_AFTER = 0.01
CACHE_MAX = 10_000


@dataclass(eq=False)
class _OpenTxn:
    done: asyncio.Future[None]  # set when its COMMIT (or its rollback) is done
    txns: set[str] = field(default_factory=set)  # message transactions with writes in it
    entries: int = 0


@dataclass(eq=False)
class _Entry:
    """One unit of work for the database thread: a journal, or an operation."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    fut: asyncio.Future[Any] | None  # None: nobody waits (a journal)
    early: bool  # answered once run (before COMMIT); else once committed
    on_result: Callable[[Any], None] | None = None  # on the loop, before anything else runs
    journal: Journal | None = None


class StoreUnreadable(Exception):
    """A write to policy.db failed and memory could not be read back from it: every
    operation fails (4xx at SMTP) until the daemon is restarted."""



class GroupCommit:
    """The write queue of one policy.db: `_journal()` to append decided writes to, `_call`
    for an operation on the database thread, `durable()` to wait for a COMMIT."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db")
        self._rexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db-read")
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        # The SQLite transaction queued entries go into (see _flush); message transaction
        # id -> the COMMIT it waits for; the transactions a failed write undid.
        self._open: _OpenTxn | None = None
        self._sync_wanted = False
        self._urgent = False  # an entry waits for its answer: run the next batch now
        self._kick = asyncio.Event()
        self._unsynced: dict[str, asyncio.Future[None]] = {}
        self._lost: dict[str, BaseException] = {}
        # Set while memory is reloaded after a failed write; operations wait for it (and
        # fail with its exception if policy.db cannot be read back).
        self._recovery: asyncio.Future[None] | None = None
        self._marks = 0

    # Defined by the store: what a written journal taught (unique recipients resolved),
    # and how memory is read back from policy.db after a failed write.
    def _resolved(self, uniques: dict[str, list[int]]) -> None:
        raise NotImplementedError

    async def _reload(self) -> None:
        raise NotImplementedError

    async def _usable(self) -> None:
        if self._conn is None:
            raise RuntimeError("policy store is closed")
        if self._recovery is not None:
            await asyncio.shield(self._recovery)

    def _queue(self, entry: _Entry) -> None:
        if self._open is None:
            self._open = _OpenTxn(asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        if entry.journal is None:
            self._urgent = True  # someone waits for its answer
        self._kick_flusher()

    def _journal(self) -> Journal:
        """The journal the next batch writes, to append to."""
        if self._pending and self._pending[-1].journal is not None:
            return self._pending[-1].journal
        j = Journal()
        self._queue(_Entry(apply_journal, (j,), None, True, self._resolved, j))
        return j

    def _track(self, txn_id: str) -> None:
        """`durable(txn_id)` waits for the COMMIT of what was just queued."""
        open_txn = self._open
        assert open_txn is not None
        self._unsynced[txn_id] = open_txn.done
        open_txn.txns.add(txn_id)
        open_txn.entries += 1
        if open_txn.entries >= _MAX_BATCH:
            self._urgent = True
            self._kick.set()

    async def _call(self, fn: Callable[..., T], *args: Any, early: bool = False,
                    txn: str | None = None,
                    on_result: Callable[[Any], None] | None = None) -> T:
        """Run `fn(conn, *args)` on the database thread after everything queued before it.
        Answered once committed, or with `early` once run (then `txn`, if given, is what
        `durable()` waits on)."""
        if self._conn is None:
            raise RuntimeError("policy store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue(_Entry(fn, args, fut, early, on_result))
        if txn is not None:
            self._track(txn)
        # A caller cancelled mid-write (client gone) cancels only its wait: the operation
        # runs, and the transaction's abort() undoes it.
        return await fut

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on the database thread, answered once committed (an erasure,
        mta.gdpr: policy.db keeps one writer)."""
        return await self._call(fn, *args)

    async def scrub(self) -> None:
        """Leave no deleted bytes in policy.db: commit what is open, VACUUM, then fold and
        truncate the WAL, on the database thread (memory is not touched: VACUUM keeps
        every row)."""
        await self._call(lambda c: None)  # answered once committed: nothing stays open

        def run() -> None:
            c = self._conn
            assert c is not None, "store is closed"
            if c.in_transaction:  # a batch queued meanwhile: committed a little early
                c.execute("COMMIT")
            c.execute("VACUUM")
            for _ in range(50):  # a reader's snapshot keeps the WAL: try again shortly
                if c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return
                time.sleep(0.05)
            raise OSError(f"{self.path}: cannot truncate the write-ahead log")
        await asyncio.get_running_loop().run_in_executor(self._exec, run)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A read on the writer's connection: sees every write queued before it."""
        return await self._call(fn, *args, early=True)

    async def _read_committed(self, fn: Callable[..., T], *args: Any) -> T:
        """On the reader's thread: committed state, never behind a COMMIT."""
        def run() -> T:
            assert self._rconn is not None, "store is closed"
            return fn(self._rconn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._rexec, run)

    async def _settle(self) -> None:
        """Wait until every write queued so far is written (not necessarily committed)."""
        await self._read(lambda c: None)

    async def durable(self, txn_id: str) -> None:
        """Return once every write of `txn_id` answered so far is committed; raise if a
        failed transaction undid any of them (the caller must not accept the message)."""
        done = self._unsynced.get(txn_id)
        if done is not None:
            self._sync_wanted = True
            self._kick_flusher()
            await done  # a COMMIT's future: it never raises
        lost = self._lost.pop(txn_id, None)
        if lost is not None:
            raise lost

    def sync_soon(self) -> None:
        """Start committing what is queued now (a `durable()` call is coming)."""
        if self._open is not None:
            self._sync_wanted = True
            self._kick_flusher()

    async def _durably(self, j: Journal) -> None:
        """Commit the journal `j` was just appended to before returning (operator actions
        and outcomes are answered once durable)."""
        self._marks += 1
        mark = f"\0{self._marks}"
        self._track(mark)
        await self.durable(mark)

    def _kick_flusher(self) -> None:
        if self._urgent or self._sync_wanted:
            self._kick.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Write queued entries on the database thread, in one SQLite transaction that
        stays open between batches and is committed when someone needs durability (a
        `durable()` waiter, an operation answered once committed), when it has grown to
        _MAX_BATCH writes, or _COMMIT_AFTER after the last batch. Journals alone wait for
        one of those, or for an operation or read that must see them: under load, one batch
        and one fsync cover the writes of many messages."""
        loop = asyncio.get_running_loop()
        while self._pending or self._open is not None:
            if not self._urgent and not self._sync_wanted:
                self._kick.clear()
                # Quiet for _COMMIT_AFTER: commit what is there. (A timer, not wait_for:
                # no task per wait.)
                timer = loop.call_later(_COMMIT_AFTER, self._quiet)
                await self._kick.wait()
                timer.cancel()
            self._urgent = False
            batch, self._pending = self._pending, []
            open_txn = self._open
            assert open_txn is not None
            commit = (self._sync_wanted or not batch or open_txn.entries >= _MAX_BATCH
                      or any(not e.early for e in batch))
            if commit:
                self._open, self._sync_wanted = None, False

            def answer(results: list[tuple[bool, Any]], batch: list[_Entry] = batch,
                       early: bool = True) -> None:
                for e, (ok, value) in zip(batch, results, strict=True):
                    if e.early != early:
                        continue
                    if ok and e.on_result is not None:
                        e.on_result(value)
                    if e.fut is not None and not e.fut.done():
                        (e.fut.set_result if ok else e.fut.set_exception)(value)

            def ran(results: list[tuple[bool, Any]]) -> None:  # on the database thread
                loop.call_soon_threadsafe(answer, results)

            try:
                results = await loop.run_in_executor(
                    self._exec, self._run_batch, [(e.fn, e.args) for e in batch], ran, commit)
            except Exception as e:
                await self._failed(e, batch, open_txn)
                continue
            if commit:
                self._committed(open_txn)
            answer(results, early=False)

    def _quiet(self) -> None:
        self._sync_wanted = True
        self._kick.set()

    def _committed(self, open_txn: _OpenTxn) -> None:
        for txn in open_txn.txns:
            if self._unsynced.get(txn) is open_txn.done:
                del self._unsynced[txn]
        open_txn.done.set_result(None)

    async def _failed(self, error: Exception, batch: list[_Entry], open_txn: _OpenTxn) -> None:
        """The database thread rolled the transaction back: every write since its BEGIN is
        undone, answered or not, and so is what was queued on top of it. Memory no longer
        matches policy.db, so it is loaded again; meanwhile the store refuses new work."""
        log.error("policy store: transaction failed, rolled back: %s", error)
        loop = asyncio.get_running_loop()
        recovery = self._recovery = loop.create_future()
        recovery.add_done_callback(lambda f: f.exception())  # retrieved by waiters, if any
        dropped, self._pending = self._pending, []
        self._urgent = False
        for e in (*batch, *dropped):
            if e.fut is not None and not e.fut.done():
                e.fut.set_exception(error)
        undone = [open_txn] if self._open in (None, open_txn) else [open_txn, self._open]
        self._open, self._sync_wanted = None, False
        for t in undone:
            for txn in t.txns:
                # Marks (_durably) are always awaited, so always told; a message
                # transaction only if it reaches durable() (bounded meanwhile).
                if txn.startswith("\0") or len(self._lost) < CACHE_MAX:
                    self._lost[txn] = error
            self._committed(t)
        try:
            await self._reload()
            log.warning("policy store: memory reloaded from %s", self.path)
        except Exception as e:
            log.exception("policy store: cannot reload %s; refusing policy checks until "
                          "restarted", self.path)
            recovery.set_exception(StoreUnreadable(f"cannot reload {self.path}: {e}"))
            return  # stays failed: every check answers 4xx
        self._recovery = None
        recovery.set_result(None)

    def _run_batch(self, ops: list[tuple[Callable[..., Any], tuple[Any, ...]]],
                   ran: Callable[[list[tuple[bool, Any]]], None],
                   commit: bool) -> list[tuple[bool, Any]]:
        c = self._conn
        assert c is not None, "store is closed"
        out: list[tuple[bool, Any]] = []
        try:
            if not c.in_transaction:
                c.execute("BEGIN IMMEDIATE")
            for fn, args in ops:
                if fn is apply_journal:  # decided already: nothing in it may fail alone
                    out.append((True, fn(c, *args)))
                    continue
                c.execute("SAVEPOINT op")
                try:
                    out.append((True, fn(c, *args)))
                except Refused as r:
                    c.execute("ROLLBACK TO op")
                    out.append((True, r.result))
                except Exception as e:
                    c.execute("ROLLBACK TO op")
                    out.append((False, e))
                c.execute("RELEASE op")
            ran(out)
            if commit:
                c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return out


