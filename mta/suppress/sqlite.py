"""Suppression lists in policy.db (the embedded policy store's file; the tables are made by
its migration, mta/policy/sqlite_schema.py).

Two connections of our own beside the policy store's, each on its own thread so that
nothing here runs on the event loop: a reader for RCPT lookups and listings (WAL: it never
waits for a writer), and a writer for additions, removals and imports. An import is written
in transactions of _BATCH rows, so the policy store's own group commit, which shares the
file's write lock, waits at most one batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mta.suppress.bloom import Bloom
from mta.suppress.entry import Entry

__all__ = ["SqliteBackend"]

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 10_000
_BATCH = 20_000

_COLUMNS = "scope, address, reason, source, created_at, expires_at"
# replace: an operator's add or import overwrites (keeping the first created_at, so an import
# run twice changes nothing). Otherwise (automatic entries) a row is only replaced by one
# that suppresses longer: a hard bounce never shortens a complaint's "for ever".
_UPSERT = (f"INSERT INTO suppressions({_COLUMNS}) VALUES(?,?,?,?,?,?) "
           "ON CONFLICT(scope, address) DO UPDATE SET reason=excluded.reason, "
           "source=excluded.source, created_at=min(created_at, excluded.created_at), "
           "expires_at=excluded.expires_at")
_UPSERT_LONGER = (f"INSERT INTO suppressions({_COLUMNS}) VALUES(?,?,?,?,?,?) "
                  "ON CONFLICT(scope, address) DO UPDATE SET reason=excluded.reason, "
                  "source=excluded.source, created_at=excluded.created_at, "
                  "expires_at=excluded.expires_at WHERE expires_at IS NOT NULL AND "
                  "(excluded.expires_at IS NULL OR excluded.expires_at > expires_at)")


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5])


class SqliteBackend:
    shared = False  # one process writes policy.db: it knows every scope that has entries

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suppress-db")
        self._rexec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suppress-read")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path) -> SqliteBackend:
        """policy.db must exist and be migrated (the policy store opened it first)."""
        b = cls(Path(path))
        loop = asyncio.get_running_loop()
        try:
            b._w = await loop.run_in_executor(b._wexec, b._connect, True)
            b._r = await loop.run_in_executor(b._rexec, b._connect, False)
        except BaseException:
            await b.aclose()
            raise
        return b

    def _connect(self, writer: bool) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        c.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if writer:
            # As the policy store: an entry acknowledged survives a power cut.
            c.execute("PRAGMA synchronous=FULL")
        c.execute("SELECT 1 FROM suppressions LIMIT 1")  # fails now if not migrated
        return c

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for ex, attr in ((self._rexec, "_r"), (self._wexec, "_w")):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                await loop.run_in_executor(ex, conn.close)
            ex.shutdown(wait=True)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._r is None:
                raise RuntimeError("suppression store is closed")
            return fn(self._r)
        return await asyncio.get_running_loop().run_in_executor(self._rexec, run)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            c = self._w
            if c is None:
                raise RuntimeError("suppression store is closed")
            c.execute("BEGIN IMMEDIATE")
            try:
                out = fn(c)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            return out
        return await asyncio.get_running_loop().run_in_executor(self._wexec, run)

    # --- the operations (see Suppressions) -----------------------------------------------
    async def scopes(self) -> set[str]:
        # DISTINCT on the primary key's first column: a skip-scan, not a count of the rows.
        return await self._read(lambda c: {r[0] for r in c.execute(
            "SELECT DISTINCT scope FROM suppressions")})

    async def fill(self, bloom: Bloom) -> None:
        """Add every address on any list to `bloom` (on the reader's thread)."""
        def run(c: sqlite3.Connection) -> None:
            add = bloom.add
            for (address,) in c.execute("SELECT address FROM suppressions"):
                add(address)
        await self._read(run)

    async def count(self) -> int:
        return await self._read(lambda c: c.execute(
            "SELECT count(*) FROM suppressions").fetchone()[0])

    async def find(self, scopes: Sequence[str], targets: Sequence[str],
                   now: float) -> list[Entry]:
        sql = (f"SELECT {_COLUMNS} FROM suppressions WHERE scope IN "
               f"({','.join('?' * len(scopes))}) AND address IN "
               f"({','.join('?' * len(targets))}) AND (expires_at IS NULL OR expires_at > ?)")
        args = (*scopes, *targets, now)
        return await self._read(lambda c: [_entry(r) for r in c.execute(sql, args)])

    async def upsert(self, entries: Sequence[Entry], replace: bool = True) -> int:
        sql = _UPSERT if replace else _UPSERT_LONGER
        rows = [(e.scope, e.address, e.reason, e.source, e.created_at, e.expires_at)
                for e in entries]
        for i in range(0, len(rows), _BATCH):
            chunk = rows[i:i + _BATCH]
            await self._write(lambda c, chunk=chunk: c.executemany(sql, chunk))  # type: ignore[misc]
        return len(rows)

    async def remove(self, scope: str, address: str) -> bool:
        return await self._write(lambda c: c.execute(
            "DELETE FROM suppressions WHERE scope=? AND address=?",
            (scope, address)).rowcount > 0)

    async def page(self, scope: str | None, after: tuple[str, str] | None, limit: int,
                   now: float) -> list[Entry]:
        where, args = ["(expires_at IS NULL OR expires_at > ?)"], [now]
        if scope is not None:
            where.append("scope = ?")
            args.append(scope)  # type: ignore[arg-type]
        if after is not None:
            where.append("(scope, address) > (?, ?)")
            args.extend(after)  # type: ignore[arg-type]
        sql = (f"SELECT {_COLUMNS} FROM suppressions WHERE {' AND '.join(where)} "
               "ORDER BY scope, address LIMIT ?")
        args.append(limit)
        return await self._read(lambda c: [_entry(r) for r in c.execute(sql, args)])

    async def strike(self, scope: str, address: str, now: float, window: float) -> int:
        """Count one hard bounce of `address` in `scope`: how many within `window`."""
        def op(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT n, since FROM suppression_strikes WHERE scope=? AND "
                            "address=?", (scope, address)).fetchone()
            n, since = (1, now) if row is None or now - row[1] > window else (row[0] + 1,
                                                                              row[1])
            c.execute("INSERT OR REPLACE INTO suppression_strikes(scope, address, n, since) "
                      "VALUES(?,?,?,?)", (scope, address, n, since))
            # Strikes older than any window are no use: pruned as we go.
            c.execute("DELETE FROM suppression_strikes WHERE since < ?", (now - window,))
            return n
        return await self._write(op)

    async def prune(self, now: float) -> int:
        """Drop entries that expired (the check ignores them already)."""
        return await self._write(lambda c: c.execute(
            "DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= ?",
            (now,)).rowcount)
