"""policy.db's SQLite schema and its migrations (the embedded policy store's file).

The schema version is `PRAGMA user_version`, as in the spool (mta/queue/schema.py):
`MIGRATIONS[i]` takes policy.db from version i to i + 1, and `migrate()` applies the missing
ones in order, each in its own transaction with the version bump. Add a migration by
appending a function; never edit one that has shipped. An existing policy.db is backed up
before it is migrated and a newer one is refused (`mta/dbupgrade.py`).

Version 1 is the layout of mta 0.1.0, which recorded no version: it created its tables
with IF NOT EXISTS on every open (and dropped two indexes an earlier build had). A
policy.db at user_version 0 that has tables is such a file; v1's statements are all
idempotent, so running them on it changes nothing but the recorded version, without a
backup (0.1.0 itself ran them at every start).

Tables: tenants, suspensions, operator_limits (operator state); lots and the append-only
ledger (credits); counters and uniq (quota windows, unique recipients of a month);
reservations (in flight and held credits), dedupe (duplicate suppression), alerts (licence
alerts sent).

`migrate` blocks: the store runs it on its database thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mta import dbupgrade

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

log = logging.getLogger("mta.policy")

_V1 = """
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
_V1_TABLES = ("tenants", "suspensions", "operator_limits", "lots", "ledger", "counters",
              "uniq", "reservations", "dedupe", "alerts")


def _statements(script: str) -> list[str]:
    """One string per statement (a trigger body holds `;`): executescript() would COMMIT
    the migration's transaction before running them."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    assert not buf.strip(), f"incomplete statement: {buf}"
    return out


def _v1_initial(c: sqlite3.Connection) -> None:
    for statement in _statements(_V1):
        c.execute(statement)


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [_v1_initial]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(c: sqlite3.Connection, path: Path, *, migrations: Sequence[Migration] | None = None,
            clock: Callable[[], float] = time.time) -> int:
    """Bring policy.db at `path` (open as `c`, autocommit) to SCHEMA_VERSION (`len(migrations)`,
    by default MIGRATIONS as it is when called); returns the version found before (1 for
    0.1.0's unversioned file). Raises dbupgrade.SchemaTooNewError for a newer file, and
    dbupgrade.SchemaBackupError, migrating nothing, if its backup cannot be written."""
    steps = MIGRATIONS if migrations is None else migrations
    found = int(c.execute("PRAGMA user_version").fetchone()[0])
    if found > len(steps):
        raise dbupgrade.SchemaTooNewError(path, found, len(steps))
    if found == 0 and _has_v1_tables(c):
        _step(c, steps[0], 1)  # idempotent: records the version 0.1.0 left unrecorded
        log.info("%s: no schema version recorded (mta 0.1.0); recorded as v1", path)
        found = 1
    if 0 < found < len(steps):  # version 0 is a new, empty database: nothing to keep
        dbupgrade.write_backup(path, found, len(steps), now=clock())
    for version in range(found, len(steps)):
        _step(c, steps[version], version + 1)
    return found


def _step(c: sqlite3.Connection, migration: Migration, version: int) -> None:
    c.execute("BEGIN IMMEDIATE")
    try:
        migration(c)
        # PRAGMA takes no parameters; the value is our own integer.
        c.execute(f"PRAGMA user_version = {version}")
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise


def _has_v1_tables(c: sqlite3.Connection) -> bool:
    marks = ",".join("?" * len(_V1_TABLES))
    row = c.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                    f"({marks})", _V1_TABLES).fetchone()
    return bool(row[0])


def _v2_suppressions(c: sqlite3.Connection) -> None:
    """Suppression lists (mta/suppress): one row per (scope, address), looked up at RCPT by
    the primary key; strikes count the hard bounces of an address that is not suppressed
    yet ([suppression] hard_bounce_count > 1)."""
    c.execute("CREATE TABLE suppressions(scope TEXT NOT NULL, address TEXT NOT NULL, "
              "reason TEXT NOT NULL, source TEXT NOT NULL DEFAULT '', created_at REAL NOT "
              "NULL, expires_at REAL, PRIMARY KEY(scope, address)) WITHOUT ROWID")
    c.execute("CREATE TABLE suppression_strikes(scope TEXT NOT NULL, address TEXT NOT NULL, "
              "n INTEGER NOT NULL, since REAL NOT NULL, PRIMARY KEY(scope, address)) "
              "WITHOUT ROWID")


MIGRATIONS.append(_v2_suppressions)


# --- v3: small keyed records of the reputation guard (sending domains, warm-up counts) ---
_V3_KV = """
CREATE TABLE IF NOT EXISTS kv(ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    expires REAL, PRIMARY KEY(ns, key)) WITHOUT ROWID;
"""


def _v3_kv(c: sqlite3.Connection) -> None:
    for statement in _statements(_V3_KV):
        c.execute(statement)


MIGRATIONS.append(_v3_kv)
SCHEMA_VERSION = len(MIGRATIONS)
