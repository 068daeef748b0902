"""The durable outbox: batches of events waiting to be posted to one endpoint.

One SQLite file per spool shard (`webhooks-NN.sqlite` beside the spool), WAL, written on
its own thread so the event loop never waits on disk. A batch is one future POST: its body
and webhook id are fixed when it is written, so every retry is byte-for-byte the same
request and a receiver can drop repeats by `webhook-id`. A batch written here survives
kill -9 (WAL with synchronous=NORMAL loses nothing on a process crash; an OS crash may lose
the last commits, as the events log would). Batches leave the outbox when posted (2xx), or
become "failed" after `[webhooks] retry_for`, until `mta webhooks replay`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Batch", "Outbox"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq        INTEGER PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    body       BLOB NOT NULL,
    events     INTEGER NOT NULL,
    created    REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    failed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_due ON batches (endpoint, failed, seq);
CREATE TABLE IF NOT EXISTS endpoint_state (
    endpoint      TEXT PRIMARY KEY,
    failing_since REAL NOT NULL,
    failures      INTEGER NOT NULL,
    retry_at      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Batch:
    seq: int
    endpoint: str
    webhook_id: str
    body: bytes
    events: int
    created: float
    attempts: int
    last_error: str = ""

    def public(self) -> dict[str, Any]:
        return {"seq": self.seq, "endpoint": self.endpoint, "webhook_id": self.webhook_id,
                "events": self.events, "created_at": self.created,
                "attempts": self.attempts, "last_error": self.last_error}


@dataclass(frozen=True)
class Failing:
    failing_since: float
    failures: int
    retry_at: float


class Outbox:
    """`await Outbox.open(path)`; every method runs on the outbox's one thread."""

    def __init__(self, db: sqlite3.Connection, pool: ThreadPoolExecutor) -> None:
        self._db = db
        self._pool = pool

    @classmethod
    async def open(cls, path: Path) -> Outbox:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks-outbox")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                from mta.dbupgrade import SchemaTooNewError

                raise SchemaTooNewError(f"{path}: webhook outbox schema {version} is "
                                        f"newer than this mta reads ({SCHEMA_VERSION})")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return db

        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(pool, connect)
        return cls(db, pool)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def transact(self, fn: Any, *args: Any) -> Any:
        """`fn(db, *args)` in one transaction on the outbox's thread (mta.gdpr)."""
        def run() -> Any:
            with self._db:
                self._db.execute("BEGIN")
                return fn(self._db, *args)
        return await self._run(run)

    async def scrub(self) -> None:
        """VACUUM, then fold and truncate the WAL: deleted bytes leave the disk."""
        def run() -> None:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._run(run)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._pool.shutdown(wait=True)

    # --- writing ------------------------------------------------------------------------

    async def add(self, rows: list[tuple[str, str, bytes, int, float]]) -> None:
        """(endpoint, webhook_id, body, events, created) rows, in one transaction."""
        def write() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO batches (endpoint, webhook_id, body, events, created) "
                    "VALUES (?, ?, ?, ?, ?)", rows)
        await self._run(write)

    async def delivered(self, seq: int) -> None:
        await self._run(lambda: self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,)))

    async def attempt_failed(self, seq: int, error: str) -> None:
        await self._run(lambda: self._db.execute(
            "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
            (error[:500], seq)))

    async def fail_older(self, endpoint: str, before: float, error: str = "") -> int:
        """Batches of a failing endpoint written before `before` go to the failed list;
        those never tried (queued behind the one being retried) get the endpoint's last
        error as theirs."""
        def run() -> int:
            return self._db.execute(
                "UPDATE batches SET failed = 1, last_error = CASE WHEN last_error = '' "
                "THEN ? ELSE last_error END WHERE endpoint = ? AND failed = 0 AND "
                "created < ?", (error[:500], endpoint, before)).rowcount
        return int(await self._run(run))

    async def replay(self, endpoint: str | None = None,
                     webhook_ids: list[str] | None = None) -> int:
        """Failed batches back into the outbox (all, one endpoint's, or the ones named)."""
        def run() -> int:
            sql, args = "UPDATE batches SET failed = 0, attempts = 0 WHERE failed = 1", []
            if endpoint is not None:
                sql += " AND endpoint = ?"
                args.append(endpoint)
            if webhook_ids:
                sql += f" AND webhook_id IN ({','.join('?' * len(webhook_ids))})"
                args += webhook_ids
            return self._db.execute(sql, args).rowcount
        return int(await self._run(run))

    async def purge_failed(self, before: float) -> int:
        """Failed batches written before `before` go ([retention] webhook_failed)."""
        def run() -> int:
            return self._db.execute("DELETE FROM batches WHERE failed = 1 AND created < ?",
                                    (before,)).rowcount
        return int(await self._run(run))

    async def drop_endpoint(self, endpoint: str) -> None:
        def run() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM batches WHERE endpoint = ?", (endpoint,))
                self._db.execute("DELETE FROM endpoint_state WHERE endpoint = ?",
                                 (endpoint,))
        await self._run(run)

    async def set_failing(self, endpoint: str, state: Failing | None) -> None:
        def run() -> None:
            if state is None:
                self._db.execute("DELETE FROM endpoint_state WHERE endpoint = ?", (endpoint,))
            else:
                self._db.execute("INSERT OR REPLACE INTO endpoint_state VALUES (?, ?, ?, ?)",
                                 (endpoint, state.failing_since, state.failures,
                                  state.retry_at))
        await self._run(run)

    # --- reading ------------------------------------------------------------------------

    async def next(self, endpoint: str, limit: int = 20) -> list[Batch]:
        def run() -> list[Batch]:
            rows = self._db.execute(
                "SELECT seq, endpoint, webhook_id, body, events, created, attempts, "
                "last_error FROM batches WHERE endpoint = ? AND failed = 0 ORDER BY seq "
                "LIMIT ?", (endpoint, limit)).fetchall()
            return [Batch(*r) for r in rows]
        return list(await self._run(run))

    async def failed(self, endpoint: str | None = None, limit: int = 100) -> list[Batch]:
        def run() -> list[Batch]:
            sql = ("SELECT seq, endpoint, webhook_id, body, events, created, attempts, "
                   "last_error FROM batches WHERE failed = 1")
            args: list[Any] = []
            if endpoint is not None:
                sql += " AND endpoint = ?"
                args.append(endpoint)
            rows = self._db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
            return [Batch(*r) for r in rows]
        return list(await self._run(run))

    async def depth(self) -> dict[str, tuple[int, int, float]]:
        """endpoint -> (pending events, failed events, oldest pending creation time)."""
        def run() -> dict[str, tuple[int, int, float]]:
            out: dict[str, tuple[int, int, float]] = {}
            for ep, failed, n, oldest in self._db.execute(
                    "SELECT endpoint, failed, SUM(events), MIN(created) FROM batches "
                    "GROUP BY endpoint, failed"):
                pending, dead, first = out.get(ep, (0, 0, 0.0))
                if failed:
                    dead = int(n)
                else:
                    pending, first = int(n), float(oldest)
                out[ep] = (pending, dead, first)
            return out
        return dict(await self._run(run))

    async def failing(self) -> dict[str, Failing]:
        def run() -> dict[str, Failing]:
            return {ep: Failing(*rest) for ep, *rest in self._db.execute(
                "SELECT endpoint, failing_since, failures, retry_at FROM endpoint_state")}
        return dict(await self._run(run))
