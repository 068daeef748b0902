"""An address in policy.db (the embedded policy store): the months it counted as a unique
recipient, reservations and held credits, the credit ledger, duplicate markers, strikes
of hard bounces.

Erasure keeps every count and amount and replaces the address by its keyed hash (`hmac:`):
a month's unique recipients stay as many, the ledger stays whole, an erased address is
still one recipient if mail reaches it again this month. The ledger is append-only (a
trigger refuses updates); an erasure is the one writer that may rewrite its `recipient`,
and puts the trigger back in the same transaction. Then `scrub()`: VACUUM, WAL truncated.
With Redis (`[cluster] redis_url`, or the workers' embedded store) the policy state
lives there: mta/gdpr/redis_policy.py.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["erase_policy", "find_in_policy"]

# (table, address column, columns shown by an export)
_TABLES = (
    ("uniq", "rcpt", "tenant, month, refs"),
    ("reservations", "rcpt", "tenant, msg_id, state, created"),
    ("ledger", "recipient", "time, tenant, delta, kind, msg_id"),
    ("dedupe", "rcpt", "tenant, message_id, state, time"),
    ("suppression_strikes", "address", "scope, n, since"),
)


def find_in_policy(c: sqlite3.Connection, address: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for table, col, cols in _TABLES:
        cur = c.execute(f"SELECT {cols} FROM {table} WHERE lower({col}) = ?", (address,))
        names = [d[0] for d in cur.description]
        out["unique_recipients" if table == "uniq" else table] = [
            dict(zip(names, tuple(r), strict=True)) for r in cur]
    return out


def erase_policy(c: sqlite3.Connection, address: str, token: str) -> dict[str, int]:
    """On the store's database thread, inside its transaction."""
    c.execute("PRAGMA secure_delete=ON")
    n: dict[str, int] = {}
    # A month's unique recipients: the hash takes the address's place (and its refs).
    rows = c.execute("SELECT tenant, month, rcpt, refs FROM uniq WHERE lower(rcpt) = ?",
                     (address,)).fetchall()
    for tenant, month, rcpt, refs in rows:
        c.execute("INSERT INTO uniq(tenant, month, rcpt, refs) VALUES(?,?,?,?) ON CONFLICT "
                  "DO UPDATE SET refs = refs + excluded.refs", (tenant, month, token, refs))
        c.execute("DELETE FROM uniq WHERE tenant=? AND month=? AND rcpt=?",
                  (tenant, month, rcpt))
    n["unique_recipients"] = len(rows)
    n["reservations"] = c.execute("UPDATE reservations SET rcpt = ? WHERE lower(rcpt) = ?",
                                  (token, address)).rowcount
    n["dedupe"] = c.execute("UPDATE OR REPLACE dedupe SET rcpt = ? WHERE lower(rcpt) = ?",
                            (token, address)).rowcount
    n["suppression_strikes"] = c.execute(
        "DELETE FROM suppression_strikes WHERE lower(address) = ?", (address,)).rowcount
    trigger = c.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                        "name = 'ledger_append_only_u'").fetchone()
    if trigger is not None:
        c.execute("DROP TRIGGER ledger_append_only_u")
    n["ledger"] = c.execute("UPDATE ledger SET recipient = ? WHERE lower(recipient) = ?",
                            (token, address)).rowcount
    if trigger is not None:
        c.execute(trigger[0])
    c.execute("PRAGMA secure_delete=OFF")
    return n
