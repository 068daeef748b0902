"""`Gdpr`: export and erasure of what mta holds about one address, across this process's
stores: the spool (spool.py), the events log and its rotated files (events.py), the
suppression lists (suppressions.py), policy.db (policy.py) and the webhook outbox
(outbox.py). The daemon builds one per worker; the admin API (mta.http.admin_gdpr) asks
every worker.

An erasure runs its steps in this order, one at a time (a lock): the hashed suppression
entries first (from then on RCPT refuses the address), then the spool (and the schedule
of what is left), policy.db, the outbox, the events files. Each SQLite file is scrubbed
(secure_delete, VACUUM, WAL truncated) so no deleted byte stays on disk. It ends with one
`gdpr_erased` event that names the keyed hash only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from mta.gdpr.events import erase_events, find_events
from mta.gdpr.key import ErasureKey, key_path
from mta.gdpr.match import Matcher
from mta.gdpr.outbox import erase_outbox, find_in_outbox
from mta.gdpr.policy import erase_policy, find_in_policy
from mta.gdpr.redis_policy import erase_in_redis, find_in_redis
from mta.gdpr.spool import erase_spool, find_in_spool, pending_of
from mta.gdpr.suppressions import erase_suppressions, find_suppressions

__all__ = ["Gdpr"]

log = logging.getLogger("mta.gdpr")

# Events that are what mta keeps of an inbound report (it stores no report itself).
_REPORTS = ("feedback", "complained", "unsubscribed")


class Gdpr:
    def __init__(self, *, key_file: Path, spool: Any, dispatcher: Any = None,
                 events: Any = None, policy_store: Any = None, suppressions: Any = None,
                 webhooks: Any = None, shard: int = 0) -> None:
        self.key_file = key_file
        self.spool, self.dispatcher, self.events = spool, dispatcher, events
        self.policy_store, self.suppressions = policy_store, suppressions
        self.webhooks = webhooks
        self.outbox = webhooks.outbox if webhooks is not None else None
        self.shard = shard
        self.key: ErasureKey | None = None
        self.state_dir: Path | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, cfg: Any, state_dir: str | Path, **parts: Any) -> Gdpr:
        """With the erasure key (made now if there is none): RCPT looks erased addresses
        up from the first connection on, on every node and worker that has the key, not
        only the ones that ran an erasure."""
        g = cls(key_file=key_path(cfg.retention.gdpr_key_file, state_dir), **parts)
        g.state_dir = Path(state_dir)
        g.key = await asyncio.to_thread(ErasureKey.load_or_create, g.key_file)
        g._attach()
        return g

    def _attach(self) -> None:
        if self.key is not None and self.suppressions is not None:
            self.suppressions.hasher = self.key.token

    def _sqlite_policy(self) -> bool:
        from mta.policy.sqlite_writer import GroupCommit
        return isinstance(self.policy_store, GroupCommit)

    def _redis_policy(self) -> bool:
        from mta.policy.redis_store import RedisStore
        return isinstance(self.policy_store, RedisStore)

    @property
    def _events_path(self) -> Path | None:
        return getattr(self.events, "path", None)

    # --- export ---------------------------------------------------------------------------
    async def export(self, address: str) -> dict[str, Any]:
        """Everything this worker holds about `address`; ValueError if it is none."""
        m = Matcher(address)
        a = m.address
        events = await asyncio.to_thread(self._read_events, m)
        out: dict[str, Any] = {
            "address": a, "shard": self.shard,
            "queue": await find_in_spool(self.spool, m),
            "events": events,
            "reports": [e for e in events if e.get("event") in _REPORTS
                        or (e.get("event") == "bounced" and e.get("async"))],
            "suppressions": (await find_suppressions(self.suppressions, a)
                             if self.suppressions is not None else []),
            "policy": (await self.policy_store.write(find_in_policy, a)
                       if self._sqlite_policy() else
                       await find_in_redis(self.policy_store, a)
                       if self._redis_policy() else {}),
            "webhooks": (await find_in_outbox(self.outbox, m)
                         if self.outbox is not None else []),
        }
        return out

    def _read_events(self, m: Matcher) -> list[dict[str, Any]]:
        if self.events is None:
            return []
        return self.events.edit(lambda path: find_events(path, m))  # type: ignore[no-any-return]

    # --- erasure --------------------------------------------------------------------------
    async def erase(self, address: str) -> dict[str, Any]:
        """Remove `address` from every store of this worker; what was done, counted."""
        m = Matcher(address)
        a = m.address
        async with self._lock:
            if self.key is None:
                self.key = await asyncio.to_thread(ErasureKey.load_or_create, self.key_file)
                self._attach()
            key = self.key
            token, alias = key.token(a), key.alias(a)
            started = time.monotonic()
            out: dict[str, Any] = {"shard": self.shard, "token": token}
            if self.suppressions is not None:
                out["suppressions"] = await erase_suppressions(self.suppressions, a, token)
            spool = await erase_spool(self.spool, m, alias)
            self._reschedule(spool.deleted, spool.trimmed)
            for msg_id in spool.trimmed:
                if self.dispatcher is not None:
                    self.dispatcher.scheduler.restore(await pending_of(self.spool, msg_id),
                                                      time.time())
            out["queue"] = spool.as_dict()
            if self._sqlite_policy():
                out["policy"] = await self.policy_store.write(erase_policy, a, token)
                await self.policy_store.scrub()
            elif self._redis_policy():  # shared: the first worker or node to erase does it
                out["policy"] = await erase_in_redis(self.policy_store, a, token)
            if self.webhooks is not None:
                await self.webhooks.flush()  # events still in memory reach the outbox first
                out["webhooks"] = await erase_outbox(self.outbox, m, alias)
            if self.events is not None:
                out["events"] = await asyncio.to_thread(
                    self.events.edit, lambda path: erase_events(path, m, alias))
                self.events.emit("gdpr_erased", subject=token, **{
                    k: v for k, v in out["queue"].items() if v})
            if self.shard == 0 and self.state_dir is not None:
                backups = await asyncio.to_thread(_backups_naming, self.state_dir, m)
                if backups:
                    # The operator's rollback copies from a schema upgrade: not ours to
                    # rewrite; named so that they can be deleted once the upgrade stands.
                    out["backups_naming_it"] = backups
                    log.warning("gdpr: %d upgrade backup(s) still hold %s: %s", len(backups),
                                token, ", ".join(backups))
            log.info("gdpr: erased %s in %.1f s", token, time.monotonic() - started)
            return out

    def _reschedule(self, deleted: list[str], trimmed: list[str]) -> None:
        """Work for the messages changed leaves the schedule (what is left of a trimmed
        one is scheduled again by the caller, at its own retry time)."""
        if self.dispatcher is None:
            return
        for msg_id in (*deleted, *trimmed):
            self.dispatcher.scheduler.cancel(msg_id)


def _backups_naming(state_dir: Path, m: Matcher) -> list[str]:
    """The schema-upgrade backups (mta.dbupgrade: NAME.vN-TIME.bak) that contain the
    address, by a byte search of each."""
    found = []
    for path in sorted(state_dir.glob("*.bak")):
        try:
            with open(path, "rb") as f:
                tail = b""
                while chunk := f.read(1 << 24):  # 16 MiB at a time, overlapping by 1 KiB
                    if m.in_bytes(tail + chunk):
                        found.append(path.name)
                        break
                    tail = chunk[-1024:]
        except OSError:
            continue
    return found
