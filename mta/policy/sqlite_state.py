"""policy.db's contents as the embedded store sees them: the operations that run on its
database thread, and the state the store (sqlite_store.py) loads from it into memory at
start and after a failed write. The tables themselves, and their versions, are in
sqlite_schema.py.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mta.policy.plan import ORPHAN_MARKER_AGE, DuplicatePlan, LotChange, Marker, paid_change
from mta.policy.store import Lot, OperatorLimit, Suspension, UniqueBucket

__all__ = [
    "Held",
    "LotState",
    "Refused",
    "State",
    "load_state",
    "lot_of",
    "op_add_lot",
    "op_check_duplicate",
    "op_mark_paid",
    "op_prune",
    "op_unique_exact",
    "read_rules",
]

def lot_of(row: sqlite3.Row) -> Lot:
    return Lot(id=row["id"], tenant=row["tenant"], amount=row["amount"],
               remaining=row["remaining"], purchased=row["purchased"],
               expires=row["expires"], paid=bool(row["paid"]), expired=bool(row["expired"]),
               note=row["note"])


def _ledger(c: sqlite3.Connection, now: float, tenant: str, lot: int, delta: int, kind: str,
            msg_id: str = "", rcpt: str = "", note: str = "") -> None:
    c.execute("INSERT INTO ledger(time, tenant, lot, delta, kind, msg_id, recipient, note) "
              "VALUES(?,?,?,?,?,?,?,?)", (now, tenant, lot, delta, kind, msg_id, rcpt, note))


# --- operations run on the database thread ---------------------------------------------

class Refused(Exception):
    """Raised inside an operation to answer `result` once its writes are rolled back."""

    def __init__(self, result: Any) -> None:
        self.result = result


def op_unique_exact(c: sqlite3.Connection, u: UniqueBucket, rcpt: str) -> tuple[bool, int]:
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
        raise Refused((False, 0))  # the savepoint undoes both writes
    return True, 1


def op_add_lot(c: sqlite3.Connection, tenant: str, amount: int, expires: float,
               change: LotChange) -> Lot:
    row = c.execute("INSERT INTO lots(tenant, amount, remaining, purchased, expires, paid, "
                    "note) VALUES(?,?,?,?,?,?,?) RETURNING *",
                    (tenant, amount, amount, change.time, expires, int(change.paid),
                     change.note)).fetchone()
    _ledger(c, change.time, tenant, row["id"], change.per_credit * amount, change.kind,
            note=change.note)
    return lot_of(row)


def op_mark_paid(c: sqlite3.Connection, lot_id: int, now: float) -> Lot | None:
    row = c.execute("SELECT * FROM lots WHERE id=?", (lot_id,)).fetchone()
    if row is None:
        return None
    change = paid_change(lot_of(row), now)  # raises if it expired
    if change is None:
        return lot_of(row)
    row = c.execute("UPDATE lots SET paid=1 WHERE id=? RETURNING *", (lot_id,)).fetchone()
    _ledger(c, now, row["tenant"], lot_id, change.per_credit * row["remaining"], change.kind)
    return lot_of(row)


def op_check_duplicate(c: sqlite3.Connection, txn_id: str, plan: DuplicatePlan) -> bool:
    """A duplicate check plan (plan.py): its guard, else its pending marker."""
    m = plan.marker
    seen = c.execute("SELECT 1 FROM dedupe WHERE tenant=? AND message_id=? AND rcpt=? AND "
                     "state='committed' AND time>=? LIMIT 1",
                     (m.tenant, m.message_id, m.rcpt, plan.since)).fetchone()
    if seen:
        return True
    c.execute("INSERT OR REPLACE INTO dedupe(tenant, message_id, rcpt, txn, state, time) "
              "VALUES(?,?,?,?, 'pending', ?)", (m.tenant, m.message_id, m.rcpt, txn_id,
                                                plan.now))
    return False


def op_prune(c: sqlite3.Connection, now: float, dedupe_since: float,
              uniq_before: str) -> None:
    c.execute("DELETE FROM uniq WHERE month < ?", (uniq_before,))
    c.execute("DELETE FROM counters WHERE expires < ? AND expires > 0", (now,))
    c.execute("DELETE FROM dedupe WHERE state='committed' AND time < ?", (dedupe_since,))
    c.execute("DELETE FROM dedupe WHERE state='pending' AND time < ?",
              (now - ORPHAN_MARKER_AGE,))


def read_rules(c: sqlite3.Connection, tenants: Sequence[str], now: float
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
class Held:
    """A reservation in flight (between RCPT and commit or release), as memory holds it."""

    owner: str
    rcpt: str
    counters: tuple[str, ...]  # counters it bumped (licence, message windows)
    uniques: tuple[tuple[str, str, str], ...]  # (tenant, month, counter key)
    lot: int | None  # the credit lot it took from
    wallet: str | None
    msg_id: str | None = None


@dataclass(eq=False)
class LotState:
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
class State:
    """What memory holds, as loaded from policy.db at open (and after a failed write)."""

    counts: dict[str, int] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    lots: dict[int, LotState] = field(default_factory=dict)
    wallets: dict[str, list[LotState]] = field(default_factory=dict)  # spending order
    alerts: set[str] = field(default_factory=set)
    txns: dict[str, list[Held]] = field(default_factory=dict)
    # Transaction -> its pending duplicate markers (plan.py's commit and release plans
    # name them).
    dedupe: dict[str, list[Marker]] = field(default_factory=dict)


def load_state(c: sqlite3.Connection) -> State:
    s = State()
    for key, n, expires in c.execute("SELECT key, n, expires FROM counters"):
        s.counts[key], s.expires[key] = n, expires
    for row in c.execute("SELECT * FROM lots WHERE expired=0 ORDER BY expires, id"):
        lot = s.lots[row["id"]] = LotState(lot_of(row), row["remaining"], bool(row["paid"]))
        s.wallets.setdefault(lot.tenant, []).append(lot)
    s.alerts = {key for (key,) in c.execute("SELECT key FROM alerts")}
    for row in c.execute("SELECT * FROM reservations WHERE state='reserved' ORDER BY id"):
        s.txns.setdefault(row["txn"], []).append(Held(
            row["owner"], row["rcpt"], tuple(json.loads(row["counters"])),
            tuple(tuple(u) for u in json.loads(row["uniques"])), row["lot"], row["wallet"],
            row["msg_id"]))
    for txn, tenant, mid, rcpt in c.execute("SELECT txn, tenant, message_id, rcpt FROM "
                                            "dedupe WHERE state='pending'"):
        s.dedupe.setdefault(txn, []).append(Marker(tenant, mid, rcpt))
    return s


