"""The durable spool: accepted messages and their recipients' delivery state, in SQLite.

Owns the database file of one spool shard (`spool-NN.sqlite` in the spool directory) and
every write to it. SQLite runs in WAL mode with `synchronous=FULL`, so a COMMIT returns only
after the write-ahead log is fsynced: when `put()` returns an id, the message survives a
crash or power loss, and `250` may be sent.

Group commit (writer.py): callers never write themselves. `put()`, `record()` and the
admin operations queue an operation and wait on a future; one writer task takes everything
queued (up to `max_batch`), runs it in one transaction, commits (one fsync), then resolves
each future. If a commit fails, every operation in that batch fails with `SpoolFullError`
(452 4.3.1) or `SpoolError` (451 4.3.0), nothing committed earlier is touched, and the next
batch tries again. This module says what each operation writes.

Reads (`get`, `list`, `read_body`, `stats`, `iter_pending`) use a second connection, so
they never wait for a commit (WAL readers see the last committed state). Bodies are only
ever read by `read_body` and `get_with_body` and written by `put`. A message just put is
kept in memory as `get_with_body` would read it until that first read (the delivery
straight after acceptance), and dropped by any write of it before then.

A message whose recipients are all final (delivered, bounced or expired) becomes `done` and
its body is deleted in the same transaction; callers that need the original for a DSN read
it before recording the bounce. `purge()` removes old `done` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from mta.queue.envelope import Envelope
from mta.queue.ids import IdGenerator, is_queue_id
from mta.queue.reader import BatchedReads
from mta.queue.records import (
    FINAL_STATES,
    MESSAGE_STATES,
    MessageInfo,
    Outcome,
    PendingRecipient,
    RecipientInfo,
    SpoolError,
)
from mta.queue.schema import migrate
from mta.queue.writer import GroupCommit, Put
from mta.rfc5321.reply import Reply, ReplyParseError

__all__ = ["Spool"]

# SQLite caps the number of ? in one statement (32766 since 3.32); stay far below it.
_IN_CHUNK = 500

_MESSAGE_COLS = ("id, tenant, mail_from, params, client_ip, helo, auth_user, received_at, "
                 "state, size, msg_class, expires_at, pool, parents")
_RECIPIENT_COLS = ("idx, address, notify, orcpt, state, attempts, next_attempt, last_reply, "
                   "site, updated_at, warned")


def _get_rows(db: sqlite3.Connection, msg_id: str) -> tuple[Any, list[Any]]:
    """A message's row and its recipients' rows (reader thread)."""
    row = _first(db.execute(f"SELECT {_MESSAGE_COLS} FROM messages WHERE id=?",
                            (msg_id,)).fetchall())
    if row is None:
        return None, []
    return row, db.execute(f"SELECT msg_id, {_RECIPIENT_COLS} FROM recipients "
                           f"WHERE msg_id=? ORDER BY idx", (msg_id,)).fetchall()


def _get_rows_body(db: sqlite3.Connection, msg_id: str) -> tuple[Any, list[Any], Any]:
    """_get_rows, and the body too while the message is queued (reader thread)."""
    row, rcpts = _get_rows(db, msg_id)
    if row is None or row[8] != "queued":  # state: nothing to deliver, no body read
        return row, rcpts, None
    body = _first(db.execute("SELECT body FROM bodies WHERE id=?", (msg_id,)).fetchall())
    return row, rcpts, body


def _parents(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


# What a message just put is kept as in memory until its first delivery reads it (`_fresh`):
# at most this many bytes of bodies, past which a put keeps nothing (the read goes to disk).
FRESH_BYTES = 32 << 20

# Built once: json.dumps with arguments makes a new encoder per call (one per put).
_params_json = json.JSONEncoder(separators=(",", ":")).encode


def _reply_to_text(reply: Reply | None) -> str | None:
    if reply is None:
        return None
    return reply.to_bytes().decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n")


def _reply_from_text(text: str | None) -> Reply | None:
    if not text:
        return None
    try:
        return Reply.parse(text)
    except ReplyParseError:
        return None


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, tenant, mail_from, params, client_ip, helo, auth_user, "
    "received_at, state, size, rcpt_count, updated_at, msg_class, expires_at, pool, "
    "parents) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_INSERT_BODY = "INSERT INTO bodies (id, body) VALUES (?, ?)"
_INSERT_RECIPIENT = (
    "INSERT INTO recipients (msg_id, idx, address, notify, orcpt, state, updated_at, "
    "last_reply) VALUES (?,?,?,?,?,?,?,?)")


def _insert_puts(db: sqlite3.Connection, puts: list[Put]) -> None:
    """What a group commit writes for the messages put in it: their rows, bodies and
    recipients, one statement each (on the database thread, in the batch's transaction)."""
    db.executemany(_INSERT_MESSAGE, [p.message for p in puts])
    db.executemany(_INSERT_BODY, [(p.message[0], p.body) for p in puts])
    db.executemany(_INSERT_RECIPIENT,
                   list(itertools.chain.from_iterable(p.recipients for p in puts)))


def _open_lock(directory: Path, shard: int) -> int:
    """Create the directory and take the shard's lock: two processes on one shard would
    hand out the same ids."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"spool-{shard:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"spool shard {shard} in {directory} is open in another process"
                         ) from None
    return fd


async def _pages(db: aiosqlite.Connection, size: int) -> int:
    async with db.execute("PRAGMA page_size") as cur:
        row = await cur.fetchone()
    return max(1, size // int(row[0] if row else 4096))


def _first(rows: Iterable[Any]) -> Any:
    return next(iter(rows), None)


def _chunks(items: list[str], n: int = _IN_CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Spool:
    """One spool shard. Build with `await Spool.open(...)`, finish with `await close()`."""

    def __init__(self, *, path: Path, wdb: aiosqlite.Connection, rdb: aiosqlite.Connection,
                 ids: IdGenerator, max_batch: int, clock: Callable[[], float],
                 lock_fd: int, commit_wait: float = 0.0) -> None:
        self.path = path
        self._wdb = wdb
        self._rdb = rdb
        self._ids = ids
        self._clock = clock
        self._lock_fd = lock_fd
        self._writer = GroupCommit(wdb, max_batch, _insert_puts, wait=commit_wait)
        # Delivery's reads of a message and its body, batched (reader.py).
        self._deliveries = BatchedReads(rdb, _get_rows_body)
        # Messages just put, as `get_with_body` would read them back, until the first read:
        # a delivery straight after acceptance needs no trip to the reader thread. Every
        # other write of a message drops its entry first (a bulk write drops them all), so
        # an entry is always what the database holds.
        self._fresh: dict[str, tuple[MessageInfo, bytes]] = {}
        self._fresh_bytes = 0

    # Counters for metrics and the benchmark: how well group commit is grouping.
    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def committed_ops(self) -> int:
        return self._writer.committed_ops

    @property
    def observe_commit(self) -> Callable[[float, int], None] | None:
        """Called with (seconds, operations) after each group commit (metrics)."""
        return self._writer.observe_commit

    @observe_commit.setter
    def observe_commit(self, fn: Callable[[float, int], None] | None) -> None:
        self._writer.observe_commit = fn

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def open(cls, directory: Path, *, max_batch: int = 512, shard: int = 0,
                   clock: Callable[[], float] = time.time,
                   busy_timeout: float = 5.0, max_size: int = 0,
                   commit_wait: float = 0.0) -> Spool:
        """Open (creating or migrating) shard `shard` of the spool in `directory`.

        `max_size` ([spool] max_size, bytes, 0 = no cap) caps the database file: a put
        that would grow it further fails with SpoolFullError (452 4.3.1).

        `commit_wait` ([spool] commit_wait): how long a write that finds the writer idle
        waits for others to share its commit.

        `busy_timeout`: how long a write waits for a lock held by another connection (only
        an operator's sqlite3 shell can hold one) before the batch fails with 451.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        directory = Path(directory)
        lock_fd = await asyncio.to_thread(_open_lock, directory, shard)
        path = directory / f"spool-{shard:02d}.sqlite"
        wdb = rdb = None
        try:
            wdb = await aiosqlite.connect(path, isolation_level=None)
            async with wdb.execute("PRAGMA journal_mode=WAL") as cur:
                row = await cur.fetchone()
            if not row or str(row[0]).lower() != "wal":
                raise SpoolError(f"{path}: cannot switch to WAL mode (got {row})")
            # FULL: the WAL is fsynced at every commit. NORMAL would lose the last commits
            # on power loss, and "250 after DATA" promises they are on disk.
            await wdb.execute("PRAGMA synchronous=FULL")
            await wdb.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            if max_size:
                await wdb.execute(f"PRAGMA max_page_count={await _pages(wdb, max_size)}")
            # Refuses a newer spool (SchemaTooNewError, a SpoolError naming the file); backs
            # up an older one before migrating it (dbupgrade.SchemaBackupError if it can't).
            await migrate(wdb, clock=clock)
            rdb = await aiosqlite.connect(path, isolation_level=None)
            await rdb.execute("PRAGMA query_only=ON")
            await rdb.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            async with wdb.execute("SELECT max(id) FROM messages") as cur:
                row = await cur.fetchone()
            ids = IdGenerator(shard, clock=clock, after=row[0] if row else None)
        except BaseException:
            for db in (rdb, wdb):
                if db is not None:
                    await db.close()
            os.close(lock_fd)
            raise
        return cls(path=path, wdb=wdb, rdb=rdb, ids=ids, max_batch=max_batch, clock=clock,
                   lock_fd=lock_fd, commit_wait=commit_wait)

    async def close(self) -> None:
        """Commit what is queued, then close the database and release the shard."""
        if self._writer.closing:
            return
        try:
            await self._writer.close()
            # Fold the WAL into the database so the next start does not replay it.
            with contextlib.suppress(sqlite3.Error):
                await self._wdb.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            await self._rdb.close()
            await self._wdb.close()
            os.close(self._lock_fd)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- writes (all through the group-commit writer) ------------------------------------

    def new_id(self) -> str:
        """A fresh queue id, for callers that must know it before `put` (the Received:
        header, policy reservations)."""
        return self._ids.next()

    async def put(self, envelope: Envelope, body: bytes, msg_id: str | None = None, *,
                  held: Reply | None = None) -> str:
        """Store a message durably; returns its queue id once the commit is fsynced.

        `msg_id` must come from `new_id()` of this spool; by default a new one is taken.
        `held`: stored held (for `release` or `delete`, never delivered before), with this
        reason as each recipient's last reply. Raises SpoolFullError (reply 452 4.3.1) or
        SpoolError (451 4.3.0).
        """
        if not envelope.recipients:
            raise ValueError("a message needs at least one recipient")
        self._check_open()
        msg_id = msg_id or self._ids.next()
        now = self._clock()
        message = (msg_id, envelope.tenant, envelope.mail_from,
                   _params_json(envelope.mail_params),
                   envelope.client_ip, envelope.helo, envelope.auth_user,
                   envelope.received_at or now, "held" if held else "queued", len(body),
                   len(envelope.recipients), now, envelope.msg_class, envelope.expires_at,
                   envelope.pool, ",".join(envelope.parents))
        state, reason = ("held", _reply_to_text(held)) if held else ("queued", None)
        recipients = [(msg_id, i, r.address, r.notify, r.orcpt, state, now, reason)
                      for i, r in enumerate(envelope.recipients)]
        await self._writer.put(message, body, recipients)
        if not held and self._fresh_bytes + len(body) <= FRESH_BYTES:
            info = self._message(message[:10] + message[12:], [RecipientInfo(
                i, r.address, r.notify, r.orcpt, "queued", 0, 0.0, None, None, now)
                for i, r in enumerate(envelope.recipients)])
            self._fresh[msg_id] = (info, body)
            self._fresh_bytes += len(body)
        return msg_id

    def _stale(self, msg_id: str | None = None) -> None:
        """A write of `msg_id` (None: of any message) is coming: its fresh copy goes."""
        if msg_id is None:
            self._fresh.clear()
            self._fresh_bytes = 0
        elif (entry := self._fresh.pop(msg_id, None)) is not None:
            self._fresh_bytes -= len(entry[1])

    async def record(self, outcomes: list[Outcome]) -> None:
        """Apply delivery outcomes; durable when this returns.

        `deferred` keeps a recipient queued (or held) with a new next_attempt; the other
        states are final. A recipient that is already final is never changed again, so a
        late or repeated outcome cannot resurrect a delivered recipient.
        """
        if not outcomes:
            return
        for o in outcomes:
            if o.state not in ("deferred", *FINAL_STATES):
                raise ValueError(f"unknown outcome state {o.state!r}")
            self._stale(o.msg_id)
        await self._call(lambda db: self._apply_outcomes(db, outcomes), sync=True)

    async def hold(self, msg_id: str) -> bool:
        """Stop delivery of a queued message's pending recipients. False if not queued."""
        self._stale(msg_id)
        async def fn(db: aiosqlite.Connection) -> bool:
            now = self._clock()
            cur = await db.execute(
                "UPDATE messages SET state='held', updated_at=? WHERE id=? AND state='queued'",
                (now, msg_id))
            if cur.rowcount == 0:
                return False
            await db.execute("UPDATE recipients SET state='held', updated_at=? "
                             "WHERE msg_id=? AND state='queued'", (now, msg_id))
            return True
        return bool(await self._call(fn))

    async def release(self, msg_id: str) -> bool:
        """Undo `hold`; the recipients keep their retry schedule. False if not held."""
        self._stale(msg_id)
        async def fn(db: aiosqlite.Connection) -> bool:
            now = self._clock()
            cur = await db.execute(
                "UPDATE messages SET state='queued', updated_at=? WHERE id=? AND state='held'",
                (now, msg_id))
            if cur.rowcount == 0:
                return False
            await db.execute("UPDATE recipients SET state='queued', updated_at=? "
                             "WHERE msg_id=? AND state='held'", (now, msg_id))
            return True
        return bool(await self._call(fn))

    async def delete(self, msg_id: str) -> bool:
        """Remove a message, its body and its recipients without delivering or bouncing."""
        self._stale(msg_id)
        async def fn(db: aiosqlite.Connection) -> bool:
            await db.execute("DELETE FROM recipients WHERE msg_id=?", (msg_id,))
            await db.execute("DELETE FROM bodies WHERE id=?", (msg_id,))
            cur = await db.execute("DELETE FROM messages WHERE id=?", (msg_id,))
            return cur.rowcount > 0
        return bool(await self._call(fn))

    async def purge(self, accepted_before: float, *, limit: int = 10_000) -> int:
        """Delete up to `limit` `done` messages accepted before the given unix time; returns
        how many. The daemon calls this periodically so finished mail does not pile up."""
        bound = f"{int(accepted_before * 1000):012x}"  # ids sort by acceptance time
        # Only `done` messages go, and none of those has a fresh copy (record dropped it).

        async def fn(db: aiosqlite.Connection) -> int:
            async with db.execute("SELECT id FROM messages WHERE state='done' AND id < ? "
                                  "ORDER BY id LIMIT ?", (bound, limit)) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                await db.execute(f"DELETE FROM recipients WHERE msg_id IN ({marks})", chunk)
                await db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
            return len(ids)
        return int(await self._call(fn))

    async def transact(self, fn: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> Any:
        """Run `fn(db)` in the writer's next group commit; its result once committed (an
        erasure, mta.gdpr: the spool's other writes still have a single owner)."""
        self._stale()
        return await self._call(fn)

    async def scrub(self) -> None:
        """Leave no deleted bytes on disk: VACUUM, then fold and truncate the WAL, on the
        writer's connection between two commits (an erasure; the queue waits meanwhile)."""
        self._stale()
        async def fn(db: aiosqlite.Connection) -> None:
            await db.execute("VACUUM")
            for _ in range(50):  # a reader's snapshot keeps the WAL: try again shortly
                async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                    row = await cur.fetchone()
                if row is None or row[0] == 0:
                    return
                await asyncio.sleep(0.05)
            raise SpoolError("cannot truncate the write-ahead log: a reader holds it")
        await self._writer.bare(fn)

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only query on the reader's connection (mta.gdpr's export)."""
        return await self._read(sql, args)

    # --- reads ---------------------------------------------------------------------------

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One query, run to completion in a single trip to the reader thread.

        A cursor kept open across awaits (execute, then fetch, then close) keeps SQLite's
        read transaction open; with many readers interleaving on the one connection it
        never closed, the WAL snapshot never moved, and a message whose put() had returned
        stayed invisible to get() (tests/queue: test_a_put_is_visible_to_get_at_once).
        """
        return list(await self._rdb.execute_fetchall(sql, args))

    async def get(self, msg_id: str) -> MessageInfo | None:
        """The message with all its recipients, or None."""
        if not is_queue_id(msg_id):
            return None
        # Both queries in one trip to the reader thread (every delivery asks this);
        # each runs to completion, as _read's do.
        row, rcpts = await self._rdb._execute(_get_rows, self._rdb._conn, msg_id)
        if row is None:
            return None
        return self._message(row, [self._recipient(r) for r in rcpts])

    async def get_with_body(self, msg_id: str) -> tuple[MessageInfo | None, bytes | None]:
        """`get`, and for a queued message `read_body` too, in one trip to the reader
        thread, with the other deliveries' reads asked meanwhile (reader.py): (None, None)
        if unknown; the body is None unless the message is queued and its body is there."""
        if not is_queue_id(msg_id):
            return None, None
        fresh = self._fresh.pop(msg_id, None)
        if fresh is not None:
            self._fresh_bytes -= len(fresh[1])
            return fresh
        row, rcpts, body = await self._deliveries.get(msg_id)
        if row is None:
            return None, None
        info = self._message(row, [self._recipient(r) for r in rcpts])
        return info, None if body is None else bytes(body[0])

    async def read_body(self, msg_id: str) -> bytes:
        """The message bytes. KeyError if unknown, deleted, or done (bodies are dropped)."""
        row = _first(await self._read("SELECT body FROM bodies WHERE id=?", (msg_id,)))
        if row is None:
            raise KeyError(msg_id)
        return bytes(row[0])

    async def list(self, *, state: str | None = None, limit: int = 100,
                   after: str | None = None, tenant: str | None = None,
                   site: str | None = None) -> list[MessageInfo]:
        """Messages in id (= acceptance) order, with recipients; page with `after`. Only
        `tenant`'s, and only those with a recipient at `site` ("": not routed yet), when
        given. The filters use no index of their own (an index is paid on every accepted
        message; a filtered page is an operator's look): one query, at worst a scan of
        the spool's rows."""
        if state is not None and state not in MESSAGE_STATES:
            raise ValueError(f"unknown message state {state!r}")
        limit = max(1, min(limit, 10_000))
        where, args = ["id > ?"], [after or ""]
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if site is not None:
            where.append("id IN (SELECT msg_id FROM recipients WHERE coalesce(site, '') = ?)")
            args.append(site)
        rows = await self._read(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE {' AND '.join(where)} "
                f"ORDER BY id LIMIT ?", (*args, limit))
        by_id: dict[str, list[RecipientInfo]] = {r[0]: [] for r in rows}
        for chunk in _chunks(list(by_id)):
            marks = ",".join("?" * len(chunk))
            for r in await self._read(
                    f"SELECT msg_id, {_RECIPIENT_COLS} FROM recipients "
                    f"WHERE msg_id IN ({marks}) ORDER BY msg_id, idx", chunk):
                by_id[r[0]].append(self._recipient(r))
        return [self._message(r, by_id[r[0]]) for r in rows]

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts: messages by state, recipients by state, queued recipients by site
        ("" for recipients whose site is not known yet)."""
        out: dict[str, dict[str, int]] = {"messages": {}, "recipients": {}, "sites": {}}
        queries = (
            ("messages", "SELECT state, count(*) FROM messages GROUP BY state"),
            ("recipients", "SELECT state, count(*) FROM recipients GROUP BY state"),
            ("sites", "SELECT coalesce(site, ''), count(*) FROM recipients "
                      "WHERE state='queued' GROUP BY site"),
        )
        for key, sql in queries:
            out[key] = {str(k): int(n) for k, n in await self._read(sql)}
        return out

    async def shape(self, edges: Sequence[float], now: float,
                    tenant: str | None = None) -> list[tuple[str, bool, int, int]]:
        """qshape's counts, one query: (site, held, age bucket, recipients) for every
        recipient still to deliver, of `tenant` only when given. A recipient of a held
        message counts as held; the bucket of the others is the first of `edges`
        (minutes since the message was received) its age is under, or len(edges)."""
        cases = " ".join(f"WHEN a < {float(e)!r} THEN {i}" for i, e in enumerate(edges))
        sql = (f"SELECT site, held, CASE {cases} ELSE {len(edges)} END, count(*) FROM ("
               "SELECT coalesce(r.site, '') AS site, m.state = 'held' AS held, "
               "(? - m.received_at) / 60.0 AS a FROM recipients r "
               "JOIN messages m ON m.id = r.msg_id "
               "WHERE m.state IN ('queued', 'held') AND (r.state = 'queued' OR "
               "(m.state = 'held' AND r.state = 'held'))"
               + (" AND m.tenant = ?" if tenant is not None else "")
               + ") GROUP BY 1, 2, 3")
        args: list[Any] = [now] + ([tenant] if tenant is not None else [])
        return [(str(site), bool(held), int(b), int(n))
                for site, held, b, n in await self._read(sql, args)]

    async def iter_pending(self, batch: int = 1000) -> AsyncIterator[list[PendingRecipient]]:
        """Stream every `queued` recipient in (msg_id, index) order, `batch` at a time.

        Recovery after a restart feeds these to the scheduler. Each batch is one keyset
        query on the pending index, so memory stays at two batches whatever the spool
        holds: the next batch is read (on the reader thread) while the caller handles this
        one.
        """
        sql = ("SELECT r.msg_id, r.idx, m.tenant, r.address, r.site, r.attempts, "
               "r.next_attempt, m.received_at, m.pool, m.parents "
               "FROM recipients r INDEXED BY recipients_pending "
               "JOIN messages m ON m.id = r.msg_id "
               "WHERE r.state = 'queued' AND (r.msg_id, r.idx) > (?, ?) "
               "ORDER BY r.msg_id, r.idx LIMIT ?")
        ahead: asyncio.Future[list[Any]] = asyncio.ensure_future(self._read(sql, ("", -1, batch)))
        try:
            while True:
                rows = await ahead
                if not rows:
                    return
                if len(rows) == batch:
                    last = rows[-1]
                    ahead = asyncio.ensure_future(self._read(sql, (last[0], last[1], batch)))
                yield [PendingRecipient(*r[:-1], parents=_parents(r[-1])) for r in rows]
                if len(rows) < batch:
                    return
        finally:
            if not ahead.done():  # the caller stopped early: drop the read ahead
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead

    # --- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        self._writer.check_open()

    async def _call(self, fn: Callable[[Any], Any], *, sync: bool = False) -> Any:
        """`fn(db)` in the next group commit: a coroutine function on the aiosqlite
        connection, or with `sync` a plain function on the sqlite3 connection (run on the
        database thread)."""
        return await self._writer.call(fn, sync=sync)

    def _apply_outcomes(self, db: sqlite3.Connection, outcomes: list[Outcome]) -> None:
        """On the database thread, inside the batch's transaction (a sync call)."""
        now = self._clock()
        deferred = [(int(o.attempted), o.next_attempt, _reply_to_text(o.reply), o.site, now,
                     int(o.warned), o.msg_id, o.index)
                    for o in outcomes if o.state == "deferred"]
        final = [(o.state, int(o.attempted), _reply_to_text(o.reply), o.site, now,
                  o.msg_id, o.index) for o in outcomes if o.state != "deferred"]
        # "state IN (queued, held)": a final recipient is never changed again.
        if deferred:
            db.executemany(
                "UPDATE recipients SET attempts = attempts + ?, next_attempt = ?, "
                "last_reply = coalesce(?, last_reply), site = coalesce(?, site), "
                "updated_at = ?, warned = max(warned, ?) "
                "WHERE msg_id = ? AND idx = ? AND state IN ('queued', 'held')",
                deferred)
        if not final:
            return
        db.executemany(
            "UPDATE recipients SET state = ?, attempts = attempts + ?, "
            "last_reply = coalesce(?, last_reply), site = coalesce(?, site), updated_at = ? "
            "WHERE msg_id = ? AND idx = ? AND state IN ('queued', 'held')", final)
        touched = sorted({o.msg_id for o in outcomes if o.state != "deferred"})
        for chunk in _chunks(touched):
            marks = ",".join("?" * len(chunk))
            # A message is done when none of its recipients is still queued or held; its
            # body is no longer needed.
            db.execute(
                f"UPDATE messages SET state = 'done', updated_at = ? "
                f"WHERE id IN ({marks}) AND state != 'done' AND NOT EXISTS ("
                f"SELECT 1 FROM recipients r WHERE r.msg_id = messages.id "
                f"AND r.state IN ('queued', 'held'))", (now, *chunk))
            db.execute(
                f"DELETE FROM bodies WHERE id IN ({marks}) AND id IN ("
                f"SELECT id FROM messages WHERE id IN ({marks}) AND state = 'done')",
                (*chunk, *chunk))

    @staticmethod
    def _message(row: Any, recipients: list[RecipientInfo]) -> MessageInfo:
        (msg_id, tenant, mail_from, params, client_ip, helo, auth_user, received_at, state,
         size, msg_class, expires_at, pool, parents) = row
        return MessageInfo(msg_id, tenant, mail_from, json.loads(params), client_ip, helo,
                           auth_user, received_at, state, size, recipients, msg_class,
                           expires_at, pool, _parents(parents))

    @staticmethod
    def _recipient(row: Any) -> RecipientInfo:
        (_msg_id, idx, address, notify, orcpt, state, attempts, next_attempt, last_reply, site,
         updated_at, warned) = row
        return RecipientInfo(idx, address, notify, orcpt, state, attempts, next_attempt,
                             _reply_from_text(last_reply), site, updated_at, bool(warned))
