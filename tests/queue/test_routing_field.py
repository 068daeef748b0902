"""The routing decision on the envelope (`Envelope.pool`) survives the spool: stored with
the message, read back by `get` and by recovery, and '' for messages stored before the
column existed (schema v3), which delivery then routes from the tenant."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from mta.queue.envelope import Envelope, Recipient
from mta.queue.schema import MIGRATIONS, SCHEMA_VERSION
from mta.queue.spool import Spool


async def _pending(spool: Spool) -> list[tuple[str, str]]:
    return [(p.msg_id, p.pool) async for rows in spool.iter_pending() for p in rows]


async def test_the_pool_is_stored_and_read_back(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path) as spool:
        bulk = await spool.put(Envelope("acme", "s@x.test", [Recipient("r@y.test")],
                                        pool="bulk"), b"x\r\n")
        undecided = await spool.put(Envelope("acme", "s@x.test", [Recipient("r@y.test")]),
                                    b"x\r\n")
        assert (await spool.get(bulk)).pool == "bulk"
        assert (await spool.get(undecided)).pool == ""
        assert await _pending(spool) == [(bulk, "bulk"), (undecided, "")]


async def test_a_spool_from_before_the_column_reads_undecided(tmp_path: Path) -> None:
    path = tmp_path / "spool-00.sqlite"
    async with aiosqlite.connect(path) as db:  # a v2 spool, as the previous release left it
        for version, migration in enumerate(MIGRATIONS[:2]):
            await migration(db)
            await db.execute(f"PRAGMA user_version = {version + 1}")
        await db.execute(
            "INSERT INTO messages (id, tenant, mail_from, params, client_ip, helo, "
            "auth_user, received_at, state, size, rcpt_count, updated_at) VALUES "
            "('00000000000000000001', 'client', 's@x.test', '{}', '', '', NULL, 1, "
            "'queued', 3, 1, 1)")
        await db.execute(
            "INSERT INTO recipients (msg_id, idx, address, state, updated_at) VALUES "
            "('00000000000000000001', 0, 'r@y.test', 'queued', 1)")
        await db.commit()
    async with await Spool.open(tmp_path) as spool:
        pending = [p async for rows in spool.iter_pending() for p in rows]
        assert [(p.tenant, p.pool) for p in pending] == [("client", "")]
    db2 = sqlite3.connect(path)
    try:
        assert db2.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db2.close()
