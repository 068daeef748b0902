"""The embedded policy store: counters and credits in memory, policy.db written behind.

One process owns policy.db (an exclusive lock on `policy.db.lock`; several workers or nodes
share their state through Redis instead, `[cluster] redis_url`). That lets the store keep
what every recipient checks in memory, on the event loop: the counters of the current
windows, the spendable credit lots, the reservations in flight and the licence alerts. A
reservation is decided and answered there, with no thread hop and no SQL, exactly (one loop,
one decision at a time), and what SQLite must record is appended to a `Journal`
(sqlite_journal.py).

The database thread writes the journal with group commit: everything queued while a batch
was being written goes into the next, inside one SQLite transaction that stays open between
batches and is committed when someone needs durability (an operator action, a delivery
outcome, a `durable()` waiter), when it has grown to _MAX_BATCH entries, or _COMMIT_AFTER
after its last batch. What must be durable is durable before the message's 250: ingress
awaits `durable(txn_id)` beside the spool's own fsync, which waits for the COMMIT covering
every write of that transaction. A crash loses only reservations of messages that were
never accepted; at start the store loads policy.db back into memory, and the engine's
reconciliation keeps exactly the charges whose message is in the spool.

One thing memory does not hold: the unique recipients of a month (they can be millions).
SQLite tells whether a recipient is new when the journal is written, and the store counts
every recipient it has not heard back about as new; that upper bound refuses nothing while
the month's count is far from its limit. Near the limit, RCPT asks SQLite in order with the
other writes (`_op_unique_exact`), so the limit is exact.

Operator actions (tenants, suspensions, limits, credit lots) and reads run as functions on
the database thread, in the same queue as the journals, so they see every write before
them. The MAIL FROM snapshot (suspensions, limits) is read on a second connection in its own
thread, so it never queues behind a COMMIT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mta.policy.sqlite_journal import Journal, apply_journal
from mta.policy.store import (
    LedgerEntry,
    Lot,
    OperatorLimit,
    ReserveRequest,
    ReserveResult,
    Snapshot,
    Suspension,
    UniqueBucket,
)
from mta.policy.tenants import Tenant, tenant_from_json, tenant_to_json

__all__ = ["SqliteStore"]

log = logging.getLogger("mta.policy")

T = TypeVar("T")

# Entries per SQLite transaction: large enough to amortise the fsync, small enough that
# one transaction does not grow without bound under a steady load.
_MAX_BATCH = 256
# How long a transaction with nobody waiting for it stays open for more writes.
_COMMIT_AFTER = 0.01
# A reader (the sqlite3 shell, a backup) may hold a lock briefly.
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants(name TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suspensions(
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, msg_class TEXT NOT NULL, reason TEXT,
    since REAL NOT NULL, until REAL, lifted REAL);
CREATE INDEX IF NOT EXISTS suspensions_tenant ON suspensions(tenant);
CREATE TABLE IF NOT EXISTS operator_limits(
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    until REAL NOT NULL, reason TEXT, since REAL NOT NULL, lifted REAL);
CREATE INDEX IF NOT EXISTS operator_limits_tenant ON operator_limits(tenant);
CREATE TABLE IF NOT EXISTS lots(
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, amount INTEGER NOT NULL,
    remaining INTEGER NOT NULL, purchased REAL NOT NULL, expires REAL NOT NULL,
    paid INTEGER NOT NULL, expired INTEGER NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS lots_tenant ON lots(tenant, expires);
CREATE TABLE IF NOT EXISTS ledger(
    id INTEGER PRIMARY KEY, time REAL NOT NULL, tenant TEXT NOT NULL, lot INTEGER NOT NULL,
    delta INTEGER NOT NULL, kind TEXT NOT NULL, msg_id TEXT NOT NULL DEFAULT '',
    recipient TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS ledger_tenant ON ledger(tenant, id);
CREATE TRIGGER IF NOT EXISTS ledger_append_only_u BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_append_only_d BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS counters(key TEXT PRIMARY KEY, n INTEGER NOT NULL,
    expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uniq(tenant TEXT, month TEXT, rcpt TEXT, refs INTEGER NOT NULL,
    PRIMARY KEY(tenant, month, rcpt)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations(
    id INTEGER PRIMARY KEY, txn TEXT NOT NULL, owner TEXT NOT NULL, tenant TEXT NOT NULL,
    rcpt TEXT NOT NULL, counters TEXT NOT NULL, uniques TEXT NOT NULL, lot INTEGER,
    wallet TEXT, state TEXT NOT NULL, msg_id TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_txn ON reservations(txn);
-- Outcomes look up held credits only; start-up loads the rest (the table holds only
-- reservations in flight and held credits). Fewer indexes: less work per reservation.
DROP INDEX IF EXISTS reservations_msg;
DROP INDEX IF EXISTS reservations_owner;
CREATE INDEX IF NOT EXISTS reservations_held ON reservations(msg_id, rcpt)
    WHERE state='held';
CREATE TABLE IF NOT EXISTS dedupe(tenant TEXT, message_id TEXT, rcpt TEXT, txn TEXT,
    state TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY(tenant, message_id, rcpt, txn)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_txn ON dedupe(txn);
CREATE TABLE IF NOT EXISTS alerts(key TEXT PRIMARY KEY, time REAL NOT NULL) WITHOUT ROWID;
"""

# Seconds a pending duplicate marker of a crashed session is kept before pruning.
_ORPHAN_DEDUPE_AGE = 2 * 86400.0


def _lot(row: sqlite3.Row) -> Lot:
    return Lot(id=row["id"], tenant=row["tenant"], amount=row["amount"],
               remaining=row["remaining"], purchased=row["purchased"],
               expires=row["expires"], paid=bool(row["paid"]), expired=bool(row["expired"]),
               note=row["note"])


def _ledger(c: sqlite3.Connection, now: float, tenant: str, lot: int, delta: int, kind: str,
            msg_id: str = "", rcpt: str = "", note: str = "") -> None:
    c.execute("INSERT INTO ledger(time, tenant, lot, delta, kind, msg_id, recipient, note) "
              "VALUES(?,?,?,?,?,?,?,?)", (now, tenant, lot, delta, kind, msg_id, rcpt, note))


# --- operations run on the database thread ---------------------------------------------

class _Refused(Exception):
    """Raised inside an operation to answer `result` once its writes are rolled back."""

    def __init__(self, result: Any) -> None:
        self.result = result


def _op_unique_exact(c: sqlite3.Connection, u: UniqueBucket, rcpt: str) -> tuple[bool, int]:
    """Count `rcpt` among `u`'s month, refusing it if it is new and the month is full.
    Returns (accepted, 1 if it was new)."""
    refs = c.execute("INSERT INTO uniq(tenant, month, rcpt, refs) VALUES(?,?,?,1) "
                     "ON CONFLICT DO UPDATE SET refs = refs + 1 RETURNING refs",
                     (u.tenant, u.month, rcpt)).fetchone()[0]
    if refs > 1:
        return True, 0
    n = c.execute("INSERT INTO counters(key, n, expires) VALUES(?, 1, ?) ON CONFLICT(key) DO "
                  "UPDATE SET n = n + 1, expires = max(expires, excluded.expires) RETURNING n",
                  (u.key, u.expires)).fetchone()[0]
    if u.limit and n > u.limit:
        raise _Refused((False, 0))  # the savepoint undoes both writes
    return True, 1


def _op_add_lot(c: sqlite3.Connection, tenant: str, amount: int, paid: bool,
                purchased: float, expires: float, note: str) -> Lot:
    row = c.execute("INSERT INTO lots(tenant, amount, remaining, purchased, expires, paid, "
                    "note) VALUES(?,?,?,?,?,?,?) RETURNING *",
                    (tenant, amount, amount, purchased, expires, int(paid), note)).fetchone()
    # Unpaid credits are not spendable: they enter the balance with the "paid" row.
    _ledger(c, purchased, tenant, row["id"], amount if paid else 0, "add", note=note)
    return _lot(row)


def _op_mark_paid(c: sqlite3.Connection, lot_id: int, now: float) -> Lot | None:
    row = c.execute("SELECT * FROM lots WHERE id=?", (lot_id,)).fetchone()
    if row is None:
        return None
    if row["paid"]:
        return _lot(row)
    if row["expired"] or row["expires"] <= now:
        raise ValueError(f"credit lot {lot_id} has expired")
    row = c.execute("UPDATE lots SET paid=1 WHERE id=? RETURNING *", (lot_id,)).fetchone()
    _ledger(c, now, row["tenant"], lot_id, row["remaining"], "paid")
    return _lot(row)


def _op_check_duplicate(c: sqlite3.Connection, tenant: str, message_id: str, rcpt: str,
                        txn_id: str, since: float, now: float) -> bool:
    seen = c.execute("SELECT 1 FROM dedupe WHERE tenant=? AND message_id=? AND rcpt=? AND "
                     "state='committed' AND time>=? LIMIT 1",
                     (tenant, message_id, rcpt, since)).fetchone()
    if seen:
        return True
    # Pending until this transaction commits: an aborted attempt must not make its own
    # retry look like a duplicate. Two attempts in flight at once are both sent (at least
    # once beats never).
    c.execute("INSERT OR REPLACE INTO dedupe(tenant, message_id, rcpt, txn, state, time) "
              "VALUES(?,?,?,?, 'pending', ?)", (tenant, message_id, rcpt, txn_id, now))
    return False


def _op_prune(c: sqlite3.Connection, now: float, dedupe_since: float,
              uniq_before: str) -> None:
    c.execute("DELETE FROM uniq WHERE month < ?", (uniq_before,))
    c.execute("DELETE FROM counters WHERE expires < ? AND expires > 0", (now,))
    c.execute("DELETE FROM dedupe WHERE state='committed' AND time < ?", (dedupe_since,))
    c.execute("DELETE FROM dedupe WHERE state='pending' AND time < ?",
              (now - _ORPHAN_DEDUPE_AGE,))


def _read_rules(c: sqlite3.Connection, tenants: Sequence[str], now: float
                ) -> tuple[list[Suspension], list[OperatorLimit]]:
    """The suspensions and operator limits of `tenants` in force at `now`."""
    marks = ",".join("?" * len(tenants))
    c.execute("BEGIN")  # one snapshot for both reads
    try:
        sus = [Suspension(r["id"], r["tenant"], r["msg_class"], r["reason"] or "",
                          r["since"], r["until"])
               for r in c.execute(
                   f"SELECT * FROM suspensions WHERE tenant IN ({marks}) AND lifted "
                   "IS NULL AND (until IS NULL OR until > ?) ORDER BY id", (*tenants, now))]
        lim = [OperatorLimit(r["id"], r["tenant"], r["name"], r["value"], r["until"],
                             r["reason"] or "", r["since"])
               for r in c.execute(
                   f"SELECT * FROM operator_limits WHERE tenant IN ({marks}) AND "
                   "lifted IS NULL AND until > ? ORDER BY id", (*tenants, now))]
    finally:
        c.execute("COMMIT")
    return sus, lim


@dataclass(eq=False)
class _Held:
    """A reservation in flight (between RCPT and commit or release), as memory holds it."""

    owner: str
    rcpt: str
    keys: tuple[str, ...]  # counters it bumped (licence, message windows)
    uniques: tuple[tuple[str, str, str], ...]  # (tenant, month, counter key)
    lot: int | None  # the credit lot it took from
    wallet: str | None
    msg_id: str | None = None


@dataclass(eq=False)
class _LotState:
    """A credit lot not yet expired: as read or created, and what memory changes of it
    (`remaining` is the truth, policy.db follows it)."""

    lot: Lot
    remaining: int
    paid: bool

    @property
    def id(self) -> int:
        return self.lot.id

    @property
    def tenant(self) -> str:
        return self.lot.tenant

    @property
    def expires(self) -> float:
        return self.lot.expires

    def public(self) -> Lot:
        return dataclasses.replace(self.lot, remaining=self.remaining, paid=self.paid)


@dataclass
class _State:
    """What memory holds, as loaded from policy.db at open (and after a failed write)."""

    counts: dict[str, int] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    lots: dict[int, _LotState] = field(default_factory=dict)
    wallets: dict[str, list[_LotState]] = field(default_factory=dict)  # spending order
    alerts: set[str] = field(default_factory=set)
    txns: dict[str, list[_Held]] = field(default_factory=dict)
    dedupe: set[str] = field(default_factory=set)  # transactions with pending markers


def _load_state(c: sqlite3.Connection) -> _State:
    s = _State()
    for key, n, expires in c.execute("SELECT key, n, expires FROM counters"):
        s.counts[key], s.expires[key] = n, expires
    for row in c.execute("SELECT * FROM lots WHERE expired=0 ORDER BY expires, id"):
        lot = s.lots[row["id"]] = _LotState(_lot(row), row["remaining"], bool(row["paid"]))
        s.wallets.setdefault(lot.tenant, []).append(lot)
    s.alerts = {key for (key,) in c.execute("SELECT key FROM alerts")}
    for row in c.execute("SELECT * FROM reservations WHERE state='reserved' ORDER BY id"):
        s.txns.setdefault(row["txn"], []).append(_Held(
            row["owner"], row["rcpt"], tuple(json.loads(row["counters"])),
            tuple(tuple(u) for u in json.loads(row["uniques"])), row["lot"], row["wallet"],
            row["msg_id"]))
    s.dedupe = {t for (t,) in c.execute("SELECT DISTINCT txn FROM dedupe WHERE "
                                        "state='pending'")}
    return s


STATE_TTL = 1.0  # seconds; see SqliteStore._remember
_CACHE_MAX = 10_000


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


class SqliteStore:
    """PolicyStore on one SQLite file. Open with `await SqliteStore.open(path)`."""

    shared = False  # one process: its queue ids are unique

    def __init__(self, path: Path) -> None:
        self.path = path
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db")
        self._rexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db-read")
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
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
        self._s = _State()
        # Unique counter key -> recipients added but not yet resolved by SQLite.
        self._unresolved: dict[str, int] = {}
        self._settling: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._marks = 0
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._states: dict[tuple[str, ...], tuple[float, Any]] = {}

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """Raises OSError if another process has `path` open."""
        store = cls(Path(path))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(store._exec, store._connect)
            await loop.run_in_executor(store._rexec, store._connect_reader)
            store._s = await loop.run_in_executor(store._exec, _load_state, store._conn)
        except BaseException:
            await store.aclose()
            raise
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Memory holds the truth while this process runs: a second writer would not see it.
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EBUSY, f"{self.path} is in use by another mta process (one "
                          "process per policy.db; several workers or nodes share policy "
                          "state through [cluster] redis_url)") from None
        self._lock_fd = fd
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        c.row_factory = sqlite3.Row
        c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        c.execute("PRAGMA journal_mode=WAL")
        # FULL: a reservation acknowledged to the client survives power loss too.
        c.execute("PRAGMA synchronous=FULL")
        c.executescript(_SCHEMA)
        self._conn = c

    def _connect_reader(self) -> None:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        c.row_factory = sqlite3.Row
        c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._rconn = c

    async def aclose(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            self._sync_wanted = True  # commit what is open now, not after _COMMIT_AFTER
            self._kick.set()
            await asyncio.shield(self._flusher)
        loop = asyncio.get_running_loop()
        for executor, attr in ((self._rexec, "_rconn"), (self._exec, "_conn")):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                await loop.run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # --- plumbing -----------------------------------------------------------------------
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

    def _resolved(self, uniques: dict[str, list[int]]) -> None:
        """A journal was written: learn which of its recipients were new this month."""
        for key, (added, change) in uniques.items():
            self._unresolved[key] = self._unresolved.get(key, 0) - added
            self._s.counts[key] = self._s.counts.get(key, 0) + change

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
                if txn.startswith("\0") or len(self._lost) < _CACHE_MAX:
                    self._lost[txn] = error
            self._committed(t)
        try:
            self._s = await loop.run_in_executor(self._exec, _load_state, self._conn)
            self._unresolved.clear()
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
                except _Refused as r:
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


    # --- tenants ------------------------------------------------------------------------
    async def get_tenant(self, name: str) -> Tenant | None:
        hit = self._tenants.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        row = await self._read_committed(lambda c: c.execute(
            "SELECT spec FROM tenants WHERE name=?", (name,)).fetchone())
        tenant = tenant_from_json(row[0]) if row else None
        self._remember(self._tenants, name, tenant)
        return tenant

    # Tenants, suspensions and operator limits change only through an operator; reading
    # them from SQLite on every MAIL FROM cost more than the rest of the message path. They
    # are cached for STATE_TTL: writes through this store drop the cache at once, writes by
    # another process sharing the file are seen within STATE_TTL.
    def _remember(self, cache: dict[Any, tuple[float, Any]], key: Any, value: Any) -> None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = (time.monotonic() + STATE_TTL, value)

    def _invalidate(self) -> None:
        self._tenants.clear()
        self._states.clear()

    async def put_tenant(self, tenant: Tenant) -> None:
        self._invalidate()
        await self._call(lambda c: c.execute(
            "INSERT OR REPLACE INTO tenants(name, spec) VALUES(?, ?)",
            (tenant.name, tenant_to_json(tenant))))
        self._invalidate()

    async def delete_tenant(self, name: str) -> bool:
        result = await self._call(lambda c: c.execute(
            "DELETE FROM tenants WHERE name=?", (name,)).rowcount > 0)
        self._invalidate()
        return result

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._read(lambda c: c.execute(
            "SELECT spec FROM tenants ORDER BY name").fetchall())
        return [tenant_from_json(r[0]) for r in rows]

    # --- suspensions and operator limits --------------------------------------------------
    async def add_suspension(self, tenant: str, msg_class: str, reason: str,
                             until: float | None, now: float) -> Suspension:
        def op(c: sqlite3.Connection) -> Suspension:
            row = c.execute("INSERT INTO suspensions(tenant, msg_class, reason, since, until) "
                            "VALUES(?,?,?,?,?) RETURNING id",
                            (tenant, msg_class, reason, now, until)).fetchone()
            return Suspension(row[0], tenant, msg_class, reason, now, until)
        result = await self._call(op)
        self._invalidate()
        return result

    async def lift_suspension(self, tenant: str, msg_class: str | None, now: float) -> int:
        sql = "UPDATE suspensions SET lifted=? WHERE tenant=? AND lifted IS NULL"
        args: tuple[Any, ...] = (now, tenant)
        if msg_class is not None:
            sql += " AND msg_class=?"
            args += (msg_class,)
        result = await self._call(lambda c: c.execute(sql, args).rowcount)
        self._invalidate()
        return result

    async def set_operator_limit(self, tenant: str, name: str, value: int, until: float,
                                 reason: str, now: float) -> OperatorLimit:
        def op(c: sqlite3.Connection) -> OperatorLimit:
            row = c.execute("INSERT INTO operator_limits(tenant, name, value, until, reason, "
                            "since) VALUES(?,?,?,?,?,?) RETURNING id",
                            (tenant, name, value, until, reason, now)).fetchone()
            return OperatorLimit(row[0], tenant, name, value, until, reason, now)
        result = await self._call(op)
        self._invalidate()
        return result

    async def clear_operator_limit(self, tenant: str, name: str | None, now: float) -> int:
        sql = "UPDATE operator_limits SET lifted=? WHERE tenant=? AND lifted IS NULL"
        args: tuple[Any, ...] = (now, tenant)
        if name is not None:
            sql += " AND name=?"
            args += (name,)
        result = await self._call(lambda c: c.execute(sql, args).rowcount)
        self._invalidate()
        return result

    async def snapshot(self, tenants: Sequence[str], counter_keys: Sequence[str],
                       now: float) -> Snapshot:
        key = tuple(tenants)
        hit = self._states.get(key)
        if hit is not None and hit[0] > time.monotonic():
            sus, lim = hit[1]
        else:
            sus, lim = await self._read_committed(_read_rules, tenants, now)
            self._remember(self._states, key, (sus, lim))
        counters = await self.counters(counter_keys) if counter_keys else {}
        return Snapshot([s for s in sus if s.until is None or s.until > now],
                        [x for x in lim if x.until > now], counters)

    # --- reservations: a plan (plan.py) applied in memory ------------------------------
    def reserve_now(self, req: ReserveRequest) -> ReserveResult | None:
        """`reserve` without awaiting, when memory can answer alone (the usual case); None
        when it cannot (a unique-recipient limit is near, or the store is reloading)."""
        if self._conn is None or self._recovery is not None or self._near_limit(req):
            return None
        return self._apply(req, ())

    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        await self._usable()
        near = self._near_limit(req)
        if not near:
            return self._apply(req, ())
        # Ask SQLite, in order with every write before, whether the recipient is new and
        # fits; then apply the rest of the plan in memory as usual.
        refusal, _ = self._guards(req, credit=False)
        if refusal is not None:
            return refusal
        counted: list[UniqueBucket] = []
        for u in near:
            self._unresolved[u.key] = self._unresolved.get(u.key, 0) + 1
            try:
                ok, _new = await self._call(_op_unique_exact, u, req.recipient, early=True,
                                            txn=req.txn_id, on_result=self._unique_answer(u))
            except BaseException:
                self._drop_uniques(req, counted)
                raise
            if not ok:
                self._drop_uniques(req, counted)
                return ReserveResult(False, u.key, self._reported(req))
            counted.append(u)
        # Memory moved meanwhile (it may even have been reloaded after a failed write: its
        # writes go after the reload, never under it).
        await self._usable()
        result = self._apply(req, tuple(counted))  # so check everything again
        if not result.ok:
            self._drop_uniques(req, counted)
        return result

    def _near_limit(self, req: ReserveRequest) -> list[UniqueBucket]:
        """Unique-recipient limits this recipient could exceed if it is new, counting every
        recipient SQLite has not resolved yet as new."""
        counts, unresolved = self._s.counts, self._unresolved
        return [u for u in req.plan.uniques
                if u.limit and counts.get(u.key, 0) + unresolved.get(u.key, 0) >= u.limit]

    def _unique_answer(self, u: UniqueBucket) -> Callable[[tuple[bool, int]], None]:
        def learn(answer: tuple[bool, int]) -> None:
            self._unresolved[u.key] -= 1
            self._s.counts[u.key] = self._s.counts.get(u.key, 0) + answer[1]
        return learn

    def _drop_uniques(self, req: ReserveRequest, counted: list[UniqueBucket]) -> None:
        if counted:
            j = self._journal()
            j.uniq_dropped.extend((u.tenant, u.month, req.recipient, u.key) for u in counted)
            self._track(req.txn_id)

    def _reported(self, req: ReserveRequest) -> int | None:
        """The plan's reported count (the licence volume) as memory holds it."""
        counts = self._s.counts
        return next((counts.get(c.key, 0) for c in req.plan.counts if c.reported), None)

    def _guards(self, req: ReserveRequest, credit: bool = True
                ) -> tuple[ReserveResult | None, _LotState | None]:
        """The plan's first guard that fails (counts, then the credit), if any, and the
        lot that would pay. Unique recipients are `reserve`'s."""
        counts = self._s.counts
        used: int | None = None
        plan = req.plan
        for c in plan.counts:
            n = counts.get(c.key, 0)
            if c.reported:
                used = n
            if c.limit and n >= c.limit:
                return ReserveResult(False, c.refusal, used), None
        if plan.take is None or not credit:
            return None, None
        # The paid lot that expires first (few lots per tenant are live at once).
        for lot in self._s.wallets.get(plan.take, ()):
            if lot.paid and lot.remaining > 0 and lot.expires > req.now:
                return None, lot
        return ReserveResult(False, "credit", used), None

    def _apply(self, req: ReserveRequest, counted: tuple[UniqueBucket, ...]
               ) -> ReserveResult:
        """Every guard, then every effect, in one step of the loop. `counted`: unique
        buckets SQLite already counted this recipient in."""
        refusal, lot = self._guards(req)
        if refusal is not None:
            return refusal
        s, j, plan = self._s, self._journal(), req.plan
        counts, expires = s.counts, s.expires
        used: int | None = None
        filled: list[str] = []
        for c in plan.counts:
            n = counts[c.key] = counts.get(c.key, 0) + 1
            if c.expires > expires.get(c.key, 0.0):
                expires[c.key] = c.expires
            j.bump(c.key, 1, c.expires)
            if c.reported:
                used = n
            elif c.limit and n >= c.limit:
                filled.append(c.key)
        for u in plan.uniques:
            if u not in counted:
                j.uniq_added.append((u.tenant, u.month, req.recipient, u.key, u.expires))
                self._unresolved[u.key] = self._unresolved.get(u.key, 0) + 1
        lot_id = None
        if lot is not None:
            lot_id = lot.id
            lot.remaining -= 1
            j.lot(lot.id, -1)
            j.ledger.append((req.now, plan.take, lot.id, -1, plan.take_kind, "",
                             req.recipient, "txn " + req.txn_id))
        alerts: tuple[int, ...] = ()
        if used is not None and used >= plan.first_alert:
            alerts = self._alerts(req, used)
        s.txns.setdefault(req.txn_id, []).append(
            _Held(req.owner, req.recipient, plan.record_counters, plan.record_uniques, lot_id,
                  plan.take))
        j.reserved.append((req.txn_id, req.owner, req.tenant, req.recipient,
                           plan.counters_json, plan.uniques_json, lot_id, plan.take, req.now))
        self._track(req.txn_id)
        return ReserveResult(True, None, used, alerts, tuple(filled))

    def _alerts(self, req: ReserveRequest, used: int) -> tuple[int, ...]:
        """The plan's alerts that `used` reaches for the first time."""
        s, j, out = self._s, self._journal(), []
        for a in req.plan.alerts:
            if used >= a.threshold and a.name not in s.alerts:
                s.alerts.add(a.name)
                j.alerts.append((a.name, req.now))
                out.append(a.level)
        return tuple(out)

    async def prepare(self, txn_id: str, msg_id: str) -> None:
        await self._usable()
        held = self._s.txns.get(txn_id)
        if held:
            for h in held:
                h.msg_id = msg_id
            self._journal().prepared.append((msg_id, txn_id))
            self._track(txn_id)

    async def commit(self, txn_id: str, msg_id: str, hold_credit: bool, now: float) -> int:
        await self._usable()
        held = self._s.txns.pop(txn_id, [])
        dedupe = txn_id in self._s.dedupe
        if not held and not dedupe:
            return 0
        j = self._journal()
        if held:
            if hold_credit and any(h.lot is not None for h in held):
                # The credit stays held until the outcome: delivered keeps it, a failure
                # refunds it.
                j.held.append((msg_id, txn_id))
            # Everything else is final: the counters and the ledger already say it all.
            j.settled.append((txn_id,))
        if dedupe:
            self._s.dedupe.discard(txn_id)
            j.dedupe_committed.append((now, txn_id))
        self._track(txn_id)
        return len(held)

    async def release(self, txn_id: str, now: float, recipient: str | None = None) -> int:
        await self._usable()
        s = self._s
        held = s.txns.get(txn_id, [])
        gone = [h for h in held if recipient is None or h.rcpt == recipient]
        if gone:
            if len(gone) == len(held):
                del s.txns[txn_id]
            else:
                s.txns[txn_id] = [h for h in held if h not in gone]
        dedupe = txn_id in s.dedupe
        if not gone and not dedupe:
            return 0
        j = self._journal()
        for h in gone:
            for key in h.keys:
                s.counts[key] = s.counts.get(key, 0) - 1
                j.bump(key, -1)
            j.uniq_dropped.extend((t, month, h.rcpt, key) for t, month, key in h.uniques)
            if h.lot is not None:
                self._return_credit(j, h.lot, h.wallet or "", now, "release", h.msg_id or "",
                                    h.rcpt)
        if gone:
            if recipient is None:
                j.settled.append((txn_id,))
            else:
                j.dropped.append((txn_id, recipient))
        if dedupe:
            if recipient is None:
                s.dedupe.discard(txn_id)
                j.dedupe_dropped.append((txn_id,))
            else:
                j.dedupe_dropped_rcpt.append((txn_id, recipient))
        self._track(txn_id)
        return len(gone)

    def _return_credit(self, j: Journal, lot_id: int, wallet: str, now: float, kind: str,
                       msg_id: str, rcpt: str) -> None:
        """Give one credit back to the lot it came from; a lot that expired meanwhile takes
        it back and expires it at once, so the ledger still explains every credit."""
        j.ledger.append((now, wallet, lot_id, +1, kind, msg_id, rcpt, ""))
        lot = self._s.lots.get(lot_id)
        if lot is None:
            j.ledger.append((now, wallet, lot_id, -1, "expire", msg_id, rcpt,
                             "lot already expired"))
        else:
            lot.remaining += 1
            j.lot(lot_id, +1)

    async def outcome(self, msg_id: str, recipient: str, refund: bool, now: float) -> bool:
        await self._usable()
        key = (msg_id, recipient)
        while (busy := self._settling.get(key)) is not None:
            await busy  # the same outcome reported twice at once: settled once
        self._settling[key] = asyncio.get_running_loop().create_future()
        try:
            row = await self._read(lambda c: c.execute(
                "SELECT id, lot, wallet FROM reservations WHERE msg_id=? AND rcpt=? AND "
                "state='held' ORDER BY id LIMIT 1", (msg_id, recipient)).fetchone())
            if row is None:
                return False  # not held (charge = "accepted"), or already settled
            await self._usable()
            j = self._journal()
            if refund:
                self._return_credit(j, row["lot"], row["wallet"] or "", now, "refund",
                                    msg_id, recipient)
            j.outcomes.append((row["id"],))
            await self._durably(j)
            return True
        finally:
            self._settling.pop(key).set_result(None)

    async def open_reservations(self, owner: str) -> list[tuple[str, str | None]]:
        return [(txn, max((h.msg_id for h in held if h.msg_id), default=None))
                for txn, held in self._s.txns.items() if held and held[0].owner == owner]

    async def counters(self, keys: Sequence[str]) -> dict[str, int]:
        await self._settle()  # unique counts are learnt from SQLite
        return {k: self._s.counts.get(k, 0) for k in keys}

    # --- credits ------------------------------------------------------------------------
    async def add_lot(self, tenant: str, amount: int, paid: bool, purchased: float,
                      expires: float, note: str) -> Lot:
        lot: Lot = await self._call(_op_add_lot, tenant, amount, paid, purchased, expires,
                                    note)
        self._remember_lot(lot)
        return lot

    async def mark_paid(self, lot_id: int, now: float) -> Lot | None:
        lot: Lot | None = await self._call(_op_mark_paid, lot_id, now)
        if lot is not None and lot.id in self._s.lots:
            self._s.lots[lot.id].paid = lot.paid
        return lot

    def _remember_lot(self, lot: Lot) -> None:
        state = self._s.lots[lot.id] = _LotState(lot, lot.remaining, lot.paid)
        wallet = self._s.wallets.setdefault(lot.tenant, [])
        wallet.append(state)
        wallet.sort(key=lambda x: (x.expires, x.id))  # the lot that expires first pays first

    async def lots(self, tenant: str) -> list[Lot]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM lots WHERE tenant=? ORDER BY expires, id", (tenant,)).fetchall())
        return [_lot(r) for r in rows]

    async def held(self, tenant: str) -> int:
        in_flight = sum(1 for held in self._s.txns.values() for h in held
                        if h.wallet == tenant and h.lot is not None)
        return in_flight + await self._read(lambda c: c.execute(
            "SELECT count(*) FROM reservations WHERE wallet=? AND state='held'",
            (tenant,)).fetchone()[0])

    async def history(self, tenant: str, limit: int) -> list[LedgerEntry]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM ledger WHERE tenant=? ORDER BY id DESC LIMIT ?",
            (tenant, limit)).fetchall())
        return [LedgerEntry(r["id"], r["time"], r["tenant"], r["lot"], r["delta"], r["kind"],
                            r["msg_id"], r["recipient"], r["note"]) for r in reversed(rows)]

    async def expire_lots(self, now: float) -> list[Lot]:
        await self._usable()
        ended = [lot for lot in self._s.lots.values() if lot.expires <= now]
        if not ended:
            return []
        j = self._journal()
        for lot in ended:
            del self._s.lots[lot.id]
            self._s.wallets[lot.tenant].remove(lot)
            j.ledger.append((now, lot.tenant, lot.id, -(lot.remaining if lot.paid else 0),
                             "expire", "", "", ""))
            j.expired_lots.append((lot.id,))
        await self._durably(j)
        return [lot.public() for lot in ended]

    # --- duplicates and housekeeping ------------------------------------------------------
    async def check_duplicate(self, tenant: str, message_id: str, recipient: str,
                              txn_id: str, since: float, now: float) -> bool:
        await self._usable()
        self._s.dedupe.add(txn_id)
        return await self._call(_op_check_duplicate, tenant, message_id, recipient, txn_id,
                                since, now, early=True, txn=txn_id)

    async def prune(self, now: float, dedupe_since: float, uniq_before: str) -> None:
        await self._call(_op_prune, now, dedupe_since, uniq_before)
        s = self._s
        for key, expires in list(s.expires.items()):
            if 0 < expires < now:
                del s.expires[key]
                s.counts.pop(key, None)
