"""The write-behind journal of the embedded policy store.

`SqliteStore` decides every reservation, release and commit in memory, on the event loop
(see its docstring), and records what SQLite must do in a `Journal`: one per batch of the
store's group commit. `apply` runs on the database thread, inside the batch's SQLite
transaction, with one `executemany` per kind of row. Counters and credit lots get one
UPDATE per key for the whole journal (the deltas are summed), so the SQL cost of a message
is a few row inserts, not a dozen statements with a savepoint each.

Order within a journal does not matter except where it is kept below: rows are inserted
before they are updated or deleted, lot deltas land before lots expire, and ledger rows
keep the order in which they were written.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["Journal", "apply_journal"]


class Journal:
    """Writes decided in memory that SQLite has not seen yet."""

    # One per batch of the group commit: a plain class with slots is cheaper to make than a
    # dataclass with a default factory per field.
    __slots__ = ("alerts", "bumps", "dedupe_committed", "dedupe_dropped",
                 "dedupe_dropped_one", "dropped",
                 "expired_lots", "held", "ledger", "lot_deltas", "outcomes", "prepared",
                 "reserved", "settled", "uniq_added", "uniq_dropped")

    def __init__(self) -> None:
        # Counter key -> [delta, expires]; lot id -> delta of its remaining credits.
        self.bumps: dict[str, list[Any]] = {}
        self.lot_deltas: dict[int, int] = {}
        self.expired_lots: list[tuple[int]] = []
        self.ledger: list[tuple[Any, ...]] = []
        # Reservation rows: inserted; named by a queue id; held until the outcome; settled.
        self.reserved: list[tuple[Any, ...]] = []
        self.prepared: list[tuple[str, str]] = []  # (msg id, txn)
        self.held: list[tuple[str, str]] = []  # (msg id, txn)
        self.settled: list[tuple[str]] = []  # txn
        self.dropped: list[tuple[str, str]] = []  # (txn, rcpt)
        self.outcomes: list[tuple[int]] = []  # held row id
        # Unique recipients: SQLite knows whether a recipient is new this month (see
        # SqliteStore.reserve); apply_journal answers per unique counter key.
        self.uniq_added: list[tuple[str, str, str, str, float]] = []
        self.uniq_dropped: list[tuple[str, str, str, str]] = []
        self.alerts: list[tuple[str, float]] = []
        # Duplicate markers: a transaction's committed (time, txn) or dropped (txn) whole,
        # or one marker dropped (tenant, message-id, rcpt, txn), while pending.
        self.dedupe_committed: list[tuple[float, str]] = []
        self.dedupe_dropped: list[tuple[str]] = []
        self.dedupe_dropped_one: list[tuple[str, str, str, str]] = []

    def bump(self, key: str, delta: int, expires: float = 0.0) -> None:
        entry = self.bumps.get(key)
        if entry is None:
            self.bumps[key] = [delta, expires]
        else:
            entry[0] += delta
            entry[1] = max(entry[1], expires)

    def lot(self, lot_id: int, delta: int) -> None:
        self.lot_deltas[lot_id] = self.lot_deltas.get(lot_id, 0) + delta


# Journal lists written with one executemany each, in this order: rows are inserted before
# they are updated or deleted.
_RESERVATIONS = (
    ("reserved", "INSERT INTO reservations(txn, owner, tenant, rcpt, counters, uniques, lot, "
                 "wallet, state, created) VALUES(?,?,?,?,?,?,?,?, 'reserved', ?)"),
    ("prepared", "UPDATE reservations SET msg_id=? WHERE txn=? AND state='reserved'"),
    ("held", "UPDATE reservations SET state='held', msg_id=? WHERE txn=? AND "
             "state='reserved' AND lot IS NOT NULL"),
    ("settled", "DELETE FROM reservations WHERE txn=? AND state='reserved'"),
    ("dropped", "DELETE FROM reservations WHERE txn=? AND rcpt=? AND state='reserved'"),
    ("outcomes", "DELETE FROM reservations WHERE id=?"),
)
# After the counters: lot deltas land before lots expire; ledger rows keep their order.
_REST = (
    ("expired_lots", "UPDATE lots SET expired=1, remaining=0 WHERE id=?"),
    ("ledger", "INSERT INTO ledger(time, tenant, lot, delta, kind, msg_id, recipient, note) "
               "VALUES(?,?,?,?,?,?,?,?)"),
    ("alerts", "INSERT OR IGNORE INTO alerts(key, time) VALUES(?, ?)"),
    # A whole transaction's by its id: rows an erasure (mta.gdpr) renamed meanwhile too.
    ("dedupe_committed", "UPDATE dedupe SET state='committed', time=? WHERE txn=? AND "
                         "state='pending'"),
    ("dedupe_dropped", "DELETE FROM dedupe WHERE txn=? AND state='pending'"),
    ("dedupe_dropped_one", "DELETE FROM dedupe WHERE tenant=? AND message_id=? AND rcpt=? "
                           "AND txn=? AND state='pending'"),
)


def _write(c: sqlite3.Connection, j: Journal, statements: tuple[tuple[str, str], ...]) -> None:
    for attr, sql in statements:
        rows = getattr(j, attr)
        if rows:
            c.executemany(sql, rows)


def apply_journal(c: sqlite3.Connection, j: Journal) -> dict[str, list[int]]:
    """Write `j` (on the database thread, inside the open transaction). Returns, per unique
    counter key, [recipients added, change of the count]: the store's memory learns which
    of its added recipients were new this month."""
    _write(c, j, _RESERVATIONS)  # counters and uniques come as JSON text already
    resolved: dict[str, list[int]] = {}
    for tenant, month, rcpt, key, expires in j.uniq_added:
        refs = c.execute("INSERT INTO uniq(tenant, month, rcpt, refs) VALUES(?,?,?,1) "
                         "ON CONFLICT DO UPDATE SET refs = refs + 1 RETURNING refs",
                         (tenant, month, rcpt)).fetchone()[0]
        r = resolved.setdefault(key, [0, 0])
        r[0] += 1
        if refs == 1:  # new this month
            r[1] += 1
            j.bump(key, 1, expires)
    for tenant, month, rcpt, key in j.uniq_dropped:
        row = c.execute("UPDATE uniq SET refs = refs - 1 WHERE tenant=? AND month=? AND "
                        "rcpt=? RETURNING refs", (tenant, month, rcpt)).fetchone()
        if row is not None and row[0] <= 0:
            c.execute("DELETE FROM uniq WHERE tenant=? AND month=? AND rcpt=?",
                      (tenant, month, rcpt))
            resolved.setdefault(key, [0, 0])[1] -= 1
            j.bump(key, -1)
    if j.bumps:
        c.executemany("INSERT INTO counters(key, n, expires) VALUES(?, ?, ?) ON CONFLICT(key) "
                      "DO UPDATE SET n = n + excluded.n, expires = max(expires, "
                      "excluded.expires)",
                      [(key, d, exp) for key, (d, exp) in j.bumps.items()])
    if j.lot_deltas:
        c.executemany("UPDATE lots SET remaining = remaining + ? WHERE id=?",
                      [(d, lot) for lot, d in j.lot_deltas.items() if d])
    _write(c, j, _REST)
    return resolved
