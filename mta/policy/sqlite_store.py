"""The embedded policy store: counters and credits in memory, policy.db written behind.

One process owns policy.db (an exclusive lock on `policy.db.lock`; several workers or nodes
share their state through Redis instead, `[cluster] redis_url`). That lets the store keep
what every recipient checks in memory, on the event loop: the counters of the current
windows, the spendable credit lots, the reservations in flight and the licence alerts. A
reservation is decided and answered there, with no thread hop and no SQL, exactly (one loop,
one decision at a time), and what SQLite must record is appended to a `Journal`
(sqlite_journal.py).

The journal and every other write go to policy.db through group commit (sqlite_writer.py):
what must be durable is durable before the message's 250. A crash loses only reservations of
messages that were never accepted; at start the store loads policy.db back into memory
(sqlite_state.py), and the engine's reconciliation keeps exactly the charges whose message
is in the spool.

One thing memory does not hold: the unique recipients of a month (they can be millions).
SQLite tells whether a recipient is new when the journal is written, and the store counts
every recipient it has not heard back about as new; that upper bound refuses nothing while
the month's count is far from its limit. Near the limit, RCPT asks SQLite in order with the
other writes (`op_unique_exact`), so the limit is exact.

Operator actions (tenants, suspensions, limits, credit lots) and reads run as functions on
the database thread, in the same queue as the journals, so they see every write before
them. The MAIL FROM snapshot (suspensions, limits) is read on a second connection in its own
thread, so it never queues behind a COMMIT.

The tables, the schema version and its migrations are in sqlite_schema.py: opening an older
policy.db backs it up and migrates it, and a newer one is refused.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mta.policy.plan import (
    DuplicatePlan,
    SettlePlan,
    commit_plan,
    expiry_changes,
    new_lot_change,
    outcome_plan,
    release_plan,
)
from mta.policy.sqlite_journal import Journal
from mta.policy.sqlite_schema import migrate
from mta.policy.sqlite_state import (
    Held,
    LotState,
    State,
    load_state,
    lot_of,
    op_add_lot,
    op_check_duplicate,
    op_mark_paid,
    op_prune,
    op_unique_exact,
    read_rules,
)
from mta.policy.sqlite_writer import CACHE_MAX, GroupCommit, StoreUnreadable
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

__all__ = ["STATE_TTL", "SqliteStore", "StoreUnreadable"]

log = logging.getLogger("mta.policy")

_BUSY_TIMEOUT_MS = 10_000  # a reader (the sqlite3 shell, a backup) may hold a lock briefly
STATE_TTL = 1.0  # seconds; see SqliteStore._remember


class SqliteStore(GroupCommit):
    """PolicyStore on one SQLite file. Open with `await SqliteStore.open(path)`."""

    shared = False  # one process: its queue ids are unique

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self._clock = clock  # names the backup made before an upgrade
        self._lock_fd: int | None = None
        self._s = State()
        # Unique counter key -> recipients added but not yet resolved by SQLite.
        self._unresolved: dict[str, int] = {}
        self._settling: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._states: dict[tuple[str, ...], tuple[float, Any]] = {}

    @classmethod
    async def open(cls, path: str | Path, *,
                   clock: Callable[[], float] = time.time) -> SqliteStore:
        """Open (creating or migrating) policy.db at `path`. Raises OSError if another
        process has it open or its backup before an upgrade cannot be written
        (dbupgrade.SchemaBackupError), dbupgrade.SchemaTooNewError if a newer mta wrote it."""
        store = cls(Path(path), clock)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(store._exec, store._connect)
            await loop.run_in_executor(store._rexec, store._connect_reader)
            store._s = await loop.run_in_executor(store._exec, load_state, store._conn)
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
        try:
            c.row_factory = sqlite3.Row
            c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            c.execute("PRAGMA journal_mode=WAL")
            # FULL: a reservation acknowledged to the client survives power loss too.
            c.execute("PRAGMA synchronous=FULL")
            # Refuses a newer policy.db; backs up an older one before migrating it.
            migrate(c, self.path, clock=self._clock)
        except BaseException:
            c.close()
            raise
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

    def _resolved(self, uniques: dict[str, list[int]]) -> None:
        """A journal was written: learn which of its recipients were new this month."""
        for key, (added, change) in uniques.items():
            self._unresolved[key] = self._unresolved.get(key, 0) - added
            self._s.counts[key] = self._s.counts.get(key, 0) + change

    async def _reload(self) -> None:
        self._s = await asyncio.get_running_loop().run_in_executor(self._exec, load_state,
                                                                   self._conn)
        self._unresolved.clear()

    # --- tenants ------------------------------------------------------------------------
    def cached_tenant(self, name: str) -> tuple[bool, Tenant | None]:
        """(True, what get_tenant answers) when its cache holds the name; (False, None)
        when it must be read."""
        hit = self._tenants.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    async def get_tenant(self, name: str) -> Tenant | None:
        hit, tenant = self.cached_tenant(name)
        if hit:
            return tenant
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
        if len(cache) >= CACHE_MAX:
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
            sus, lim = await self._read_committed(read_rules, tenants, now)
            self._remember(self._states, key, (sus, lim))
        counters = await self.counters(counter_keys) if counter_keys else {}
        return Snapshot.in_force(sus, lim, counters, now)

    def cached_snapshot(self, tenants: Sequence[str], now: float) -> Snapshot | None:
        """`snapshot` without counters, when the cache holds it (MAIL FROM asks on every
        message and then needs no await); None when it must be read."""
        hit = self._states.get(tuple(tenants))
        if hit is None or hit[0] <= time.monotonic():
            return None
        return Snapshot.in_force(*hit[1], {}, now)

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
                ok, _new = await self._call(op_unique_exact, u, req.recipient, early=True,
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
                ) -> tuple[ReserveResult | None, LotState | None]:
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
            Held(req.owner, req.recipient, plan.record_counters, plan.record_uniques, lot_id,
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
        s = self._s
        held = s.txns.pop(txn_id, [])
        markers = s.dedupe.pop(txn_id, [])
        if not held and not markers:
            return 0
        plan = commit_plan(held, msg_id, hold_credit, markers)
        j = self._journal()
        if plan.hold:  # the rows with a lot (the journal's SQL selects the same)
            j.held.append((msg_id, txn_id))
        # Everything else is final: the counters and the ledger say it all.
        if held:
            j.settled.append((txn_id,))
        if plan.markers:  # every pending marker of the transaction
            j.dedupe_committed.append((now, txn_id))
        self._track(txn_id)
        return len(held)

    async def release(self, txn_id: str, now: float, recipient: str | None = None) -> int:
        await self._usable()
        s = self._s
        held = s.txns.get(txn_id, [])
        markers = s.dedupe.get(txn_id, [])
        plan = release_plan(held, recipient, markers)
        if not plan.undos and not plan.markers:
            return 0
        if plan.undos:
            if len(plan.undos) == len(held):
                del s.txns[txn_id]
            else:
                gone = [u.record for u in plan.undos]
                s.txns[txn_id] = [h for h in held if h not in gone]
        left = [m for m in markers if m not in plan.markers]
        if plan.markers and not left:
            del s.dedupe[txn_id]
        elif plan.markers:
            s.dedupe[txn_id] = left
        j = self._journal()
        self._give_back(j, plan, now)
        if plan.undos:
            if recipient is None:
                j.settled.append((txn_id,))
            else:
                j.dropped.append((txn_id, recipient))
        if plan.markers and not left:  # every one the transaction had
            j.dedupe_dropped.append((txn_id,))
        else:
            j.dedupe_dropped_one.extend((*m, txn_id) for m in plan.markers)
        self._track(txn_id)
        return len(plan.undos)

    def _give_back(self, j: Journal, plan: SettlePlan, now: float) -> None:
        """A settle plan's effects on memory and the journal (the caller removes its
        records: they are rows of policy.db or reservations in memory)."""
        counts, lots = self._s.counts, self._s.lots
        for u in plan.undos:
            for key in u.counters:
                counts[key] = counts.get(key, 0) - 1
                j.bump(key, -1)
            j.uniq_dropped.extend((t, month, u.rcpt, key) for t, month, key in u.uniques)
            if u.lot is not None:
                # A lot that expired meanwhile takes the credit and expires it at once, so
                # the ledger still explains every credit.
                j.ledger.append((now, u.wallet, u.lot, +1, plan.kind, u.msg_id, u.rcpt, ""))
                lot = lots.get(u.lot)
                if lot is None:
                    j.ledger.append((now, u.wallet, u.lot, -1, "expire", u.msg_id, u.rcpt,
                                     "lot already expired"))
                else:
                    lot.remaining += 1
                    j.lot(u.lot, +1)
            # `unhold`: what this store holds is counted from its records, not kept apart.

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
            plan = outcome_plan(row["id"], msg_id, recipient, row["lot"], row["wallet"] or "",
                                refund)
            self._give_back(j, plan, now)
            j.outcomes.extend((u.record,) for u in plan.undos)
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
        lot: Lot = await self._call(op_add_lot, tenant, amount, expires,
                                    new_lot_change(paid, purchased, note))
        self._remember_lot(lot)
        return lot

    async def mark_paid(self, lot_id: int, now: float) -> Lot | None:
        lot: Lot | None = await self._call(op_mark_paid, lot_id, now)
        if lot is not None and lot.id in self._s.lots:
            self._s.lots[lot.id].paid = lot.paid
        return lot

    def _remember_lot(self, lot: Lot) -> None:
        state = self._s.lots[lot.id] = LotState(lot, lot.remaining, lot.paid)
        wallet = self._s.wallets.setdefault(lot.tenant, [])
        wallet.append(state)
        wallet.sort(key=lambda x: (x.expires, x.id))  # the lot that expires first pays first

    async def lots(self, tenant: str) -> list[Lot]:
        rows = await self._read(lambda c: c.execute(
            "SELECT * FROM lots WHERE tenant=? ORDER BY expires, id", (tenant,)).fetchall())
        return [lot_of(r) for r in rows]

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
        public = [lot.public() for lot in ended]
        for lot, change in zip(ended, expiry_changes(public, now), strict=True):
            del self._s.lots[lot.id]
            self._s.wallets[lot.tenant].remove(lot)
            j.ledger.append((now, lot.tenant, lot.id, change.per_credit * lot.remaining,
                             change.kind, "", "", ""))
            j.expired_lots.append((lot.id,))
        await self._durably(j)
        return public

    # --- duplicates and housekeeping ------------------------------------------------------
    async def check_duplicate(self, txn_id: str, plan: DuplicatePlan) -> bool:
        await self._usable()
        # Named before it is written, for a release or commit queued behind the check (its
        # caller cancelled); a duplicate writes no row, and its release forgets it.
        markers = self._s.dedupe.setdefault(txn_id, [])
        if plan.marker not in markers:
            markers.append(plan.marker)
        return await self._call(op_check_duplicate, txn_id, plan, early=True, txn=txn_id)

    async def prune(self, now: float, dedupe_since: float, uniq_before: str) -> None:
        await self._call(op_prune, now, dedupe_since, uniq_before)
        for key, expires in list(self._s.expires.items()):
            if 0 < expires < now:
                del self._s.expires[key]
                self._s.counts.pop(key, None)
