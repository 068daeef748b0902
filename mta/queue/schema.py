"""The spool's SQLite schema and its migrations.

The schema version is `PRAGMA user_version`. `MIGRATIONS[i]` takes a database at version i to
version i + 1; `migrate()` applies the missing ones in order, each in its own transaction
with the version bump, so an interrupted upgrade resumes where it stopped. Add a migration by
appending a function; never edit one that has shipped. Before it migrates an existing spool,
`migrate()` copies it to `spool-NN.sqlite.vOLD-TIME.bak` and logs one line, and a spool newer
than this mta is refused (`mta/dbupgrade.py`). tests/fixtures/spool-v2 is a v2 spool made by
0.1.0: tests/queue/test_upgrade.py upgrades it and delivers its mail.

Tables:
- messages: one row per accepted message (envelope, state `queued|held|done`, size).
- bodies: the message bytes, apart so listing and recovery never read a body.
- recipients: one row per RCPT, keyed (msg_id, idx), with its delivery state
  `queued|held|delivered|bounced|expired`, attempts, next_attempt, last reply and site.
  A partial index over the `queued` rows lets recovery stream what is pending without
  touching finished recipients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiosqlite

from mta import dbupgrade
from mta.queue.records import SpoolError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaTooNewError", "migrate"]


async def _v1_initial(db: aiosqlite.Connection) -> None:
    await db.execute("""
        CREATE TABLE messages (
            id          TEXT PRIMARY KEY,
            tenant      TEXT NOT NULL,
            mail_from   TEXT NOT NULL,
            params      TEXT NOT NULL,   -- JSON object: BODY, SMTPUTF8, RET, ENVID
            client_ip   TEXT NOT NULL,
            helo        TEXT NOT NULL,
            auth_user   TEXT,
            received_at REAL NOT NULL,
            state       TEXT NOT NULL,   -- queued | held | done
            size        INTEGER NOT NULL,
            rcpt_count  INTEGER NOT NULL,
            updated_at  REAL NOT NULL
        ) WITHOUT ROWID""")
    await db.execute("CREATE INDEX messages_state ON messages(state, id)")
    # A rowid table: WITHOUT ROWID suits small rows only, bodies are large.
    await db.execute("CREATE TABLE bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
    await db.execute("""
        CREATE TABLE recipients (
            msg_id       TEXT NOT NULL,
            idx          INTEGER NOT NULL,
            address      TEXT NOT NULL,
            notify       TEXT,
            orcpt        TEXT,
            state        TEXT NOT NULL,  -- queued | held | delivered | bounced | expired
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL DEFAULT 0,
            last_reply   TEXT,
            site         TEXT,
            updated_at   REAL NOT NULL,
            PRIMARY KEY (msg_id, idx)
        ) WITHOUT ROWID""")
    await db.execute(
        "CREATE INDEX recipients_pending ON recipients(msg_id, idx) WHERE state = 'queued'")


async def _v2_message_class(db: aiosqlite.Connection) -> None:
    # The message class decided by policy, and the instant its recipients expire
    # (0: received_at + [delivery] max_age), so a class's max age survives restarts.
    await db.execute("ALTER TABLE messages ADD COLUMN msg_class TEXT NOT NULL DEFAULT ''")
    await db.execute("ALTER TABLE messages ADD COLUMN expires_at REAL NOT NULL DEFAULT 0")
    # 1 once a "delayed" DSN ([delivery] delay_warning) went out for the recipient.
    await db.execute("ALTER TABLE recipients ADD COLUMN warned INTEGER NOT NULL DEFAULT 0")


async def _v3_routing(db: aiosqlite.Connection) -> None:
    # The egress pool policy decided at acceptance (Envelope.pool). Rows queued before this
    # version read '': delivery resolves the pool from the tenant chain then, as it did.
    await db.execute("ALTER TABLE messages ADD COLUMN pool TEXT NOT NULL DEFAULT ''")


Migration = Callable[[aiosqlite.Connection], Awaitable[None]]
async def _v4_parents(db: aiosqlite.Connection) -> None:
    # The tenant's ancestors at acceptance (Envelope.parents), comma-separated. Rows queued
    # before this version read '': only the tenant's own suspensions hold them.
    await db.execute("ALTER TABLE messages ADD COLUMN parents TEXT NOT NULL DEFAULT ''")


MIGRATIONS: list[Migration] = [_v1_initial, _v2_message_class, _v3_routing, _v4_parents]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(dbupgrade.SchemaTooNewError, SpoolError):
    """The spool was written by a newer mta (`mta serve` exits 78 with its message)."""


async def migrate(db: aiosqlite.Connection, *, migrations: Sequence[Migration] | None = None,
                  clock: Callable[[], float] = time.time) -> int:
    """Bring the database to SCHEMA_VERSION (`len(migrations)`, by default MIGRATIONS as it is
    when called); returns the version found before. An existing spool is backed up first
    (raises dbupgrade.SchemaBackupError, migrating nothing, if that fails)."""
    steps = MIGRATIONS if migrations is None else migrations
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    found = int(row[0]) if row else 0
    if found > len(steps):
        raise SchemaTooNewError(await _file(db) or "spool", found, len(steps))
    if 0 < found < len(steps):  # version 0 is a new, empty database: nothing to keep
        path = await _file(db)
        if path is not None:
            await asyncio.to_thread(dbupgrade.write_backup, path, found, len(steps),
                                    now=clock())
    for version in range(found, len(steps)):
        await db.execute("BEGIN IMMEDIATE")
        try:
            await steps[version](db)
            # PRAGMA takes no parameters; the value is our own integer.
            await db.execute(f"PRAGMA user_version = {version + 1}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
    return found


async def _file(db: aiosqlite.Connection) -> Path | None:
    """The main database's file (None in memory)."""
    async with db.execute("SELECT file FROM pragma_database_list WHERE name = 'main'") as cur:
        row = await cur.fetchone()
    return Path(row[0]) if row and row[0] else None
