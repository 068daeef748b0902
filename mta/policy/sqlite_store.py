"""The embedded policy store: one SQLite file (policy.db), written with group commit.

Every operation is a plain function run on one dedicated database thread, inside a
`BEGIN IMMEDIATE` transaction. Operations that arrive while a transaction is being written
are batched into the next one (each under its own SAVEPOINT, so one failure does not undo
the others), so one fsync covers many reservations under load. A single writer thread makes
check-then-update exact within the process; `BEGIN IMMEDIATE` makes it exact across
processes sharing the file (workers, the CLI).

Operations of a message transaction (reserve, duplicate marker, release, commit) are answered
as soon as they have run, before their batch's COMMIT: later operations run on the same
connection and see them, so exactness holds, and an SMTP client does not wait for an fsync
per RCPT. What must be durable is durable before the message's 250: ingress awaits
`durable(txn_id)` (the commits of every batch that held the transaction's operations) beside
the spool's own fsync. A crash before that loses only reservations of messages that were never
accepted. Operator actions and delivery outcomes are answered after their COMMIT.

The MAIL FROM snapshot (suspensions, limits, counters) is read on a second connection in its
own thread, so it never queues behind a COMMIT; it sees committed state, which is enough for
an early refusal (RCPT makes the exact check).

Why a thread and not aiosqlite: aiosqlite hops to its thread once per statement, and a
reservation is a dozen statements inside one transaction; running the whole operation as one
function on the database thread keeps the transaction short and the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mta.policy.store import (
    LedgerEntry,
    Lot,
    OperatorLimit,
    ReserveRequest,
    ReserveResult,
    Snapshot,
    Suspension,
)
from mta.policy.tenants import Tenant, tenant_from_json, tenant_to_json

__all__ = ["SqliteStore"]

log = logging.getLogger("mta.policy")

T = TypeVar("T")

# Operations per transaction: large enough to amortise the fsync, small enough that one
# batch does not hold the write lock for long.
_MAX_BATCH = 256
# How long a transaction with nobody waiting for it stays open for more operations (it holds
# the database's write lock meanwhile).
_COMMIT_AFTER = 0.01
# Other processes (CLI, workers) may hold the write lock for one batch.
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
-- Outcomes look up held credits only; start-up reconciliation scans (the table holds only
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


def _counter(c: sqlite3.Connection, key: str) -> int:
    row = c.execute("SELECT n FROM counters WHERE key=?", (key,)).fetchone()
    return row[0] if row else 0


def _bump(c: sqlite3.Connection, key: str, delta: int, expires: float = 0.0) -> int:
    row = c.execute(
        "INSERT INTO counters(key, n, expires) VALUES(?, ?, ?) ON CONFLICT(key) DO UPDATE "
        "SET n = n + excluded.n, expires = max(expires, excluded.expires) RETURNING n",
        (key, delta, expires)).fetchone()
    return int(row[0])


def _ledger(c: sqlite3.Connection, now: float, tenant: str, lot: int, delta: int, kind: str,
            msg_id: str = "", rcpt: str = "", note: str = "") -> None:
    c.execute("INSERT INTO ledger(time, tenant, lot, delta, kind, msg_id, recipient, note) "
              "VALUES(?,?,?,?,?,?,?,?)", (now, tenant, lot, delta, kind, msg_id, rcpt, note))


def _return_credit(c: sqlite3.Connection, lot_id: int, now: float, kind: str,
                   msg_id: str, rcpt: str) -> None:
    """Give one credit back to the lot it came from; a lot that expired meanwhile takes it
    back and expires it at once, so the ledger still explains every credit."""
    row = c.execute("SELECT tenant, expired FROM lots WHERE id=?", (lot_id,)).fetchone()
    if row is None:
        return
    tenant, expired = row
    _ledger(c, now, tenant, lot_id, +1, kind, msg_id, rcpt)
    if expired:
        _ledger(c, now, tenant, lot_id, -1, "expire", msg_id, rcpt, "lot already expired")
    else:
        c.execute("UPDATE lots SET remaining = remaining + 1 WHERE id=?", (lot_id,))


def _undo_reservation(c: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
    for key in json.loads(row["counters"]):
        _bump(c, key, -1)
    for tenant, month, key in json.loads(row["uniques"]):
        refs = c.execute("UPDATE uniq SET refs = refs - 1 WHERE tenant=? AND month=? AND "
                         "rcpt=? RETURNING refs", (tenant, month, row["rcpt"])).fetchone()
        if refs is not None and refs[0] <= 0:
            c.execute("DELETE FROM uniq WHERE tenant=? AND month=? AND rcpt=?",
                      (tenant, month, row["rcpt"]))
            _bump(c, key, -1)
    if row["lot"] is not None:
        _return_credit(c, row["lot"], now, "release", row["msg_id"] or "", row["rcpt"])
    c.execute("DELETE FROM reservations WHERE id=?", (row["id"],))


# --- operations (run on the database thread) --------------------------------------------

class _Refused(Exception):
    """Raised inside an operation to answer `result` once its writes are rolled back."""

    def __init__(self, result: ReserveResult) -> None:
        self.result = result


def _op_reserve(c: sqlite3.Connection, req: ReserveRequest) -> ReserveResult:
    # Each write returns the new count and is checked at once; a refusal raises _Refused
    # and the operation's SAVEPOINT undoes what it wrote. Half the statements of reading
    # every count first, and just as atomic (one operation, one writer).
    lic_used: int | None = None
    keys: list[str] = []
    if req.licence is not None:
        lic_used = _bump(c, req.licence.key, 1, req.licence.expires)
        if req.licence.limit and lic_used > req.licence.limit:
            raise _Refused(ReserveResult(False, "licence", lic_used - 1))
        keys.append(req.licence.key)
    before = None if lic_used is None else lic_used - 1  # what a refusal reports
    filled = []
    for b in req.buckets:
        n = _bump(c, b.key, 1, b.expires)
        if b.limit and n > b.limit:
            raise _Refused(ReserveResult(False, b.key, before))
        if b.limit and n == b.limit:
            filled.append(b.key)
        keys.append(b.key)
    uniques = []
    for u in req.uniques:
        refs = c.execute("INSERT INTO uniq(tenant, month, rcpt, refs) VALUES(?,?,?,1) "
                         "ON CONFLICT DO UPDATE SET refs = refs + 1 RETURNING refs",
                         (u.tenant, u.month, req.recipient)).fetchone()[0]
        if refs == 1 and _bump(c, u.key, 1, u.expires) > u.limit > 0:  # new this month
            raise _Refused(ReserveResult(False, u.key, before))
        uniques.append([u.tenant, u.month, u.key])
    lot_id: int | None = None
    if req.wallet is not None:
        row = c.execute(
            "UPDATE lots SET remaining = remaining - 1 WHERE id = (SELECT id FROM lots "
            "WHERE tenant=? AND paid=1 AND expired=0 AND remaining>0 AND expires>? "
            "ORDER BY expires, id LIMIT 1) RETURNING id", (req.wallet, req.now)).fetchone()
        if row is None:
            raise _Refused(ReserveResult(False, "credit", before))
        lot_id = row[0]
        _ledger(c, req.now, req.wallet, lot_id, -1, "reserve", "", req.recipient,
                f"txn {req.txn_id}")
    alerts: list[int] = []
    if req.licence is not None and req.licence.limit and lic_used is not None:
        for level in req.alert_levels:
            if lic_used >= math.ceil(req.licence.limit * level / 100):
                # Keyed by volume too: a bigger licence mid-month alerts afresh.
                alert_key = f"{req.licence.key}|{req.licence.limit}|{level}"
                cur = c.execute("INSERT OR IGNORE INTO alerts(key, time) VALUES(?, ?)",
                                (alert_key, req.now))
                if cur.rowcount:
                    alerts.append(level)
    c.execute("INSERT INTO reservations(txn, owner, tenant, rcpt, counters, uniques, lot, "
              "wallet, state, created) VALUES(?,?,?,?,?,?,?,?, 'reserved', ?)",
              (req.txn_id, req.owner, req.tenant, req.recipient, json.dumps(keys),
               json.dumps(uniques), lot_id, req.wallet, req.now))
    return ReserveResult(True, None, lic_used, tuple(alerts), tuple(filled))


def _op_prepare(c: sqlite3.Connection, txn_id: str, msg_id: str) -> None:
    c.execute("UPDATE reservations SET msg_id=? WHERE txn=? AND state='reserved'",
              (msg_id, txn_id))


def _op_commit(c: sqlite3.Connection, txn_id: str, msg_id: str, hold: bool,
               now: float) -> int:
    n = 0
    if hold:
        # The credit stays held until the outcome: delivered keeps it, a failure refunds it.
        n = c.execute("UPDATE reservations SET state='held', msg_id=? WHERE txn=? AND "
                      "state='reserved' AND lot IS NOT NULL", (msg_id, txn_id)).rowcount
    # Everything else is final: the counters and the ledger already say it all.
    n += c.execute("DELETE FROM reservations WHERE txn=? AND state='reserved'",
                   (txn_id,)).rowcount
    c.execute("UPDATE dedupe SET state='committed', time=? WHERE txn=?", (now, txn_id))
    return n


def _op_release(c: sqlite3.Connection, txn_id: str, now: float, rcpt: str | None) -> int:
    sql = "SELECT * FROM reservations WHERE txn=? AND state='reserved'"
    args: tuple[Any, ...] = (txn_id,)
    if rcpt is not None:
        sql += " AND rcpt=?"
        args += (rcpt,)
    rows = c.execute(sql, args).fetchall()
    for row in rows:
        _undo_reservation(c, row, now)
    if rcpt is None:
        c.execute("DELETE FROM dedupe WHERE txn=? AND state='pending'", (txn_id,))
    else:
        c.execute("DELETE FROM dedupe WHERE txn=? AND rcpt=? AND state='pending'",
                  (txn_id, rcpt))
    return len(rows)


def _op_outcome(c: sqlite3.Connection, msg_id: str, rcpt: str, refund: bool,
                now: float) -> bool:
    row = c.execute("SELECT * FROM reservations WHERE msg_id=? AND rcpt=? AND state='held' "
                    "ORDER BY id LIMIT 1", (msg_id, rcpt)).fetchone()
    if row is None:
        return False  # not held (charge = "accepted"), or this outcome was already applied
    if refund:
        _return_credit(c, row["lot"], now, "refund", msg_id, rcpt)
    c.execute("DELETE FROM reservations WHERE id=?", (row["id"],))
    return True


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


def _op_expire_lots(c: sqlite3.Connection, now: float) -> list[Lot]:
    rows = c.execute("SELECT * FROM lots WHERE expired=0 AND expires<=?", (now,)).fetchall()
    out = []
    for row in rows:
        lost = row["remaining"] if row["paid"] else 0
        _ledger(c, now, row["tenant"], row["id"], -lost, "expire")
        c.execute("UPDATE lots SET expired=1, remaining=0 WHERE id=?", (row["id"],))
        out.append(_lot(row))
    return out


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


STATE_TTL = 1.0  # seconds; see SqliteStore._remember
_CACHE_MAX = 10_000

_Op = tuple[Callable[..., Any], tuple[Any, ...]]


@dataclass(eq=False)
class _OpenTxn:
    done: asyncio.Future[None]  # set when its COMMIT (or its rollback) is done
    txns: set[str] = field(default_factory=set)  # message transactions with operations in it
    ops: int = 0


@dataclass(eq=False)
class _Pending:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    fut: asyncio.Future[Any]
    txn: str | None  # answered before COMMIT; durable(txn) waits for the COMMIT


class SqliteStore:
    """PolicyStore on one SQLite file. Open with `await SqliteStore.open(path)`."""

    shared = False  # one node's workers: their queue ids differ by shard

    def __init__(self, path: Path) -> None:
        self.path = path
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db")
        self._rexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-db-read")
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        # The SQLite transaction left open between batches (see _flush); message
        # transaction id -> the COMMIT its latest operation waits for; the transactions a
        # failed SQLite transaction undid (durable() raises for them).
        self._open: _OpenTxn | None = None
        self._sync_wanted = False
        self._kick = asyncio.Event()
        self._unsynced: dict[str, asyncio.Future[None]] = {}
        self._lost: dict[str, BaseException] = {}
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._states: dict[tuple[str, ...], tuple[float, Any]] = {}

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        store = cls(Path(path))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(store._exec, store._connect)
        await loop.run_in_executor(store._rexec, store._connect_reader)
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    # --- plumbing -----------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """On the writer's thread: sees every operation already answered."""
        def run() -> T:
            assert self._conn is not None, "store is closed"
            return fn(self._conn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._exec, run)

    async def _read_committed(self, fn: Callable[..., T], *args: Any) -> T:
        """On the reader's thread: committed state, never behind a COMMIT."""
        def run() -> T:
            assert self._rconn is not None, "store is closed"
            return fn(self._rconn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._rexec, run)

    async def _write(self, fn: Callable[..., T], *args: Any, txn: str | None = None) -> T:
        """Run `fn` in the next batch. With `txn`, answer once it has run (see the module
        docstring); without, once it is committed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(fn, args, fut, txn))
        self._kick_flusher()
        # A caller cancelled mid-write (client gone) cancels only its wait: the operation is
        # in the batch and runs, and the transaction's abort() undoes it.
        return await fut

    async def durable(self, txn_id: str) -> None:
        """Return once every operation of `txn_id` answered so far is committed; raise if a
        failed transaction undid any of them (the caller must not accept the message)."""
        done = self._unsynced.get(txn_id)
        if done is not None:
            self._sync_wanted = True
            self._kick_flusher()
            await done  # a COMMIT's future: it never raises
        lost = self._lost.pop(txn_id, None)
        if lost is not None:
            raise lost

    def _kick_flusher(self) -> None:
        self._kick.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Run pending operations on the database thread, in one SQLite transaction that
        stays open between batches and is committed when someone needs durability (an
        operator action or an outcome in the batch, a durable() waiter), when it has grown
        to _MAX_BATCH operations, or _COMMIT_AFTER after its last batch. Under load, one
        fsync covers the reservations of many messages and RCPT never waits for one."""
        loop = asyncio.get_running_loop()
        while self._pending or self._open is not None:
            if not self._pending and not self._sync_wanted:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), _COMMIT_AFTER)
                if self._pending and not self._sync_wanted:
                    continue  # more work arrived: run it in the same transaction first
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            if self._open is None:
                self._open = _OpenTxn(loop.create_future())
            open_txn = self._open
            for p in batch:
                if p.txn is not None:
                    self._unsynced[p.txn] = open_txn.done
                    open_txn.txns.add(p.txn)
            open_txn.ops += len(batch)
            commit = (self._sync_wanted or not batch or open_txn.ops >= _MAX_BATCH
                      or any(p.txn is None for p in batch))
            if commit:
                self._open, self._sync_wanted = None, False

            def answer_early(results: list[tuple[bool, Any]], batch: list[_Pending] = batch
                             ) -> None:
                for p, (ok, value) in zip(batch, results, strict=True):
                    if p.txn is not None and not p.fut.done():
                        (p.fut.set_result if ok else p.fut.set_exception)(value)

            def ran(results: list[tuple[bool, Any]]) -> None:  # on the database thread
                loop.call_soon_threadsafe(answer_early, results)

            try:
                results = await loop.run_in_executor(
                    self._exec, self._run_batch, [(p.fn, p.args) for p in batch], ran, commit)
            except Exception as e:
                # The database thread rolled the whole transaction back: every operation
                # run in it since its BEGIN is undone, answered or not.
                log.error("policy store: transaction failed, rolled back: %s", e)
                for p in batch:
                    if not p.fut.done():
                        p.fut.set_exception(e)
                if self._open is open_txn:
                    self._open = None
                for txn in open_txn.txns:
                    if len(self._lost) < _CACHE_MAX:
                        self._lost[txn] = e
                commit, results = True, None
            if commit:
                for txn in open_txn.txns:
                    if self._unsynced.get(txn) is open_txn.done:
                        del self._unsynced[txn]
                open_txn.done.set_result(None)
            if results is None:
                continue
            for p, (ok, value) in zip(batch, results, strict=True):
                if not p.fut.done():
                    (p.fut.set_result if ok else p.fut.set_exception)(value)

    def _run_batch(self, ops: list[_Op], ran: Callable[[list[tuple[bool, Any]]], None],
                   commit: bool) -> list[tuple[bool, Any]]:
        c = self._conn
        assert c is not None, "store is closed"
        out: list[tuple[bool, Any]] = []
        try:
            if not c.in_transaction:
                c.execute("BEGIN IMMEDIATE")
            for fn, args in ops:
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
        await self._write(lambda c: c.execute(
            "INSERT OR REPLACE INTO tenants(name, spec) VALUES(?, ?)",
            (tenant.name, tenant_to_json(tenant))))
        self._invalidate()

    async def delete_tenant(self, name: str) -> bool:
        result = await self._write(lambda c: c.execute(
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
        result = await self._write(op)
        self._invalidate()
        return result

    async def lift_suspension(self, tenant: str, msg_class: str | None, now: float) -> int:
        sql = "UPDATE suspensions SET lifted=? WHERE tenant=? AND lifted IS NULL"
        args: tuple[Any, ...] = (now, tenant)
        if msg_class is not None:
            sql += " AND msg_class=?"
            args += (msg_class,)
        result = await self._write(lambda c: c.execute(sql, args).rowcount)
        self._invalidate()
        return result

    async def set_operator_limit(self, tenant: str, name: str, value: int, until: float,
                                 reason: str, now: float) -> OperatorLimit:
        def op(c: sqlite3.Connection) -> OperatorLimit:
            row = c.execute("INSERT INTO operator_limits(tenant, name, value, until, reason, "
                            "since) VALUES(?,?,?,?,?,?) RETURNING id",
                            (tenant, name, value, until, reason, now)).fetchone()
            return OperatorLimit(row[0], tenant, name, value, until, reason, now)
        result = await self._write(op)
        self._invalidate()
        return result

    async def clear_operator_limit(self, tenant: str, name: str | None, now: float) -> int:
        sql = "UPDATE operator_limits SET lifted=? WHERE tenant=? AND lifted IS NULL"
        args: tuple[Any, ...] = (now, tenant)
        if name is not None:
            sql += " AND name=?"
            args += (name,)
        result = await self._write(lambda c: c.execute(sql, args).rowcount)
        self._invalidate()
        return result

    async def snapshot(self, tenants: Sequence[str], counter_keys: Sequence[str],
                       now: float) -> Snapshot:
        key = tuple(tenants)
        hit = self._states.get(key)
        if hit is not None and hit[0] > time.monotonic():
            sus, lim = hit[1]
            counters = (await self._read_committed(
                lambda c: {k: _counter(c, k) for k in counter_keys}) if counter_keys else {})
            return Snapshot([s for s in sus if s.until is None or s.until > now],
                            [x for x in lim if x.until > now], counters)
        snap = await self._snapshot(tenants, counter_keys, now)
        self._remember(self._states, key, (snap.suspensions, snap.limits))
        return snap

    async def _snapshot(self, tenants: Sequence[str], counter_keys: Sequence[str],
                        now: float) -> Snapshot:
        def op(c: sqlite3.Connection) -> Snapshot:
            marks = ",".join("?" * len(tenants))
            c.execute("BEGIN")
            try:
                sus = [Suspension(r["id"], r["tenant"], r["msg_class"], r["reason"] or "",
                                  r["since"], r["until"])
                       for r in c.execute(
                           f"SELECT * FROM suspensions WHERE tenant IN ({marks}) AND lifted "
                           "IS NULL AND (until IS NULL OR until > ?) ORDER BY id",
                           (*tenants, now))]
                lim = [OperatorLimit(r["id"], r["tenant"], r["name"], r["value"], r["until"],
                                     r["reason"] or "", r["since"])
                       for r in c.execute(
                           f"SELECT * FROM operator_limits WHERE tenant IN ({marks}) AND "
                           "lifted IS NULL AND until > ? ORDER BY id", (*tenants, now))]
                counters = {k: _counter(c, k) for k in counter_keys}
            finally:
                c.execute("COMMIT")
            return Snapshot(sus, lim, counters)
        return await self._read_committed(op)

    # --- reservations -------------------------------------------------------------------
    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        return await self._write(_op_reserve, req, txn=req.txn_id)

    async def prepare(self, txn_id: str, msg_id: str) -> None:
        await self._write(_op_prepare, txn_id, msg_id, txn=txn_id)

    async def commit(self, txn_id: str, msg_id: str, hold_credit: bool, now: float) -> int:
        return await self._write(_op_commit, txn_id, msg_id, hold_credit, now, txn=txn_id)

    async def release(self, txn_id: str, now: float, recipient: str | None = None) -> int:
        return await self._write(_op_release, txn_id, now, recipient, txn=txn_id)

    async def outcome(self, msg_id: str, recipient: str, refund: bool, now: float) -> bool:
        return await self._write(_op_outcome, msg_id, recipient, refund, now)

    async def open_reservations(self, owner: str) -> list[tuple[str, str | None]]:
        rows = await self._read(lambda c: c.execute(
            "SELECT txn, max(msg_id) FROM reservations WHERE owner=? AND state='reserved' "
            "GROUP BY txn ORDER BY min(id)", (owner,)).fetchall())
        return [(r[0], r[1]) for r in rows]

    async def counters(self, keys: Sequence[str]) -> dict[str, int]:
        return await self._read(lambda c: {k: _counter(c, k) for k in keys})

    # --- credits ------------------------------------------------------------------------
    async def add_lot(self, tenant: str, amount: int, paid: bool, purchased: float,
                      expires: float, note: str) -> Lot:
        return await self._write(_op_add_lot, tenant, amount, paid, purchased, expires, note)

    async def mark_paid(self, lot_id: int, now: float) -> Lot | None:
        return await self._write(_op_mark_paid, lot_id, now)

    async def lots(self, tenant: str) -> list[Lot]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM lots WHERE tenant=? ORDER BY expires, id", (tenant,)).fetchall())
        return [_lot(r) for r in rows]

    async def held(self, tenant: str) -> int:
        return await self._read(lambda c: c.execute(
            "SELECT count(*) FROM reservations WHERE wallet=? AND lot IS NOT NULL",
            (tenant,)).fetchone()[0])

    async def history(self, tenant: str, limit: int) -> list[LedgerEntry]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM ledger WHERE tenant=? ORDER BY id DESC LIMIT ?",
            (tenant, limit)).fetchall())
        return [LedgerEntry(r["id"], r["time"], r["tenant"], r["lot"], r["delta"], r["kind"],
                            r["msg_id"], r["recipient"], r["note"]) for r in reversed(rows)]

    async def expire_lots(self, now: float) -> list[Lot]:
        return await self._write(_op_expire_lots, now)

    # --- duplicates and housekeeping ------------------------------------------------------
    async def check_duplicate(self, tenant: str, message_id: str, recipient: str,
                              txn_id: str, since: float, now: float) -> bool:
        return await self._write(_op_check_duplicate, tenant, message_id, recipient, txn_id,
                                 since, now, txn=txn_id)

    async def prune(self, now: float, dedupe_since: float, uniq_before: str) -> None:
        await self._write(_op_prune, now, dedupe_since, uniq_before)
