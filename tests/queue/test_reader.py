"""Batched reads (mta.queue.reader) on a real SQLite file: reads asked together are
answered together, each with its own row; a read that fails fails its own trip, and the
next trip reads again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from mta.queue.reader import BatchedReads


def _value(db: sqlite3.Connection, key: int) -> str | None:
    if key < 0:
        raise ValueError(f"bad key {key}")
    row = db.execute("SELECT v FROM t WHERE k=?", (key,)).fetchone()
    return row[0] if row else None


@pytest.fixture
async def db(tmp_path: Path):
    conn = await aiosqlite.connect(tmp_path / "r.sqlite", isolation_level=None)
    await conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    await conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(50)])
    yield conn
    await conn.close()


async def test_reads_asked_together_get_their_own_rows(db) -> None:
    reads = BatchedReads(db, _value, max_batch=8)
    got = await asyncio.gather(*(reads.get(k) for k in [*range(50), 99]))
    assert got == [f"v{i}" for i in range(50)] + [None]


async def test_a_failing_trip_fails_its_callers_and_the_next_trip_reads(db) -> None:
    reads = BatchedReads(db, _value)
    got = await asyncio.gather(reads.get(1), reads.get(-1), return_exceptions=True)
    assert isinstance(got[0], ValueError) and isinstance(got[1], ValueError)
    assert not db.in_transaction  # the trip's read transaction was rolled back
    assert await reads.get(2) == "v2"
