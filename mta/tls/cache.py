"""The MTA-STS policy cache, kept in a JSON file in the state directory (the spool dir).

Owns what outlives a restart: per policy domain, the policy, the TXT id it was fetched
under, when it was fetched and when it expires (fetched + max_age, RFC 8461 3.3). A
restart must not forget an `enforce` policy: a man in the middle who strips the TXT
record could otherwise downgrade the next delivery (the reason RFC 8461 caches at all).
Reads and writes run in a thread; a write replaces the file atomically (rename).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mta.tls.policy import StsPolicy, StsSyntaxError, parse_policy

__all__ = ["CachedPolicy", "PolicyCache"]

log = logging.getLogger("mta.tls")

_VERSION = 1


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    domain: str
    id: str  # the TXT record's id when this policy was fetched
    policy: StsPolicy
    fetched_at: float
    expires_at: float

    def valid(self, now: float) -> bool:
        return now < self.expires_at


class PolicyCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, CachedPolicy] = {}
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None

    def get(self, domain: str) -> CachedPolicy | None:
        return self._entries.get(domain)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: CachedPolicy) -> None:
        """Remember `entry` and write the file soon (one write for a burst of puts)."""
        self._entries[entry.domain] = entry
        self._dirty = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_soon())

    async def load(self, now: float) -> int:
        """Read the file (missing or unreadable: start empty); expired entries are dropped."""
        entries = await asyncio.to_thread(self._read)
        self._entries = {e.domain: e for e in entries if e.valid(now)}
        return len(self._entries)

    async def flush(self) -> None:
        """Wait for the pending write (at shutdown)."""
        if self._writer is not None:
            await self._writer

    # --- files -------------------------------------------------------------------------
    async def _write_soon(self) -> None:
        while self._dirty:
            self._dirty = False
            data = {"version": _VERSION, "policies": {
                d: {"id": e.id, "policy": e.policy.to_text(), "fetched_at": e.fetched_at,
                    "expires_at": e.expires_at} for d, e in self._entries.items()}}
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as e:
                log.warning("cannot write the MTA-STS cache %s: %s", self.path, e)

    def _write(self, data: dict) -> None:
        # Workers of one daemon share the file: each writes its own temporary one, and
        # the rename makes the last complete write the cache (never a mix of two).
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _read(self) -> list[CachedPolicy]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.warning("MTA-STS cache %s unreadable, starting empty: %s", self.path, e)
            return []
        out: list[CachedPolicy] = []
        policies = data.get("policies") if isinstance(data, dict) else None
        for domain, v in (policies or {}).items():
            try:
                out.append(CachedPolicy(domain, str(v["id"]), parse_policy(v["policy"]),
                                        float(v["fetched_at"]), float(v["expires_at"])))
            except (KeyError, TypeError, ValueError, StsSyntaxError) as e:
                log.warning("MTA-STS cache: entry %s skipped: %s", domain, e)
        return out
