"""Administrative suspensions: stop sending to a site, from a source, on one path, or for a
tenant, for a while or until lifted, with the operator's reason.

In memory, queried on the hot path in O(1) (`is_suspended`). Persistence is the owner's
choice: pass `persist`, called with (suspension, active) on every change, and `load()` the
stored ones at start-up (`Suspension.as_dict` / `from_dict` give a JSON shape).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mta.clock import Clock
from mta.queue.names import ready_queue_name

__all__ = ["SCOPES", "Suspension", "SuspensionFile", "Suspensions", "path_name"]

log = logging.getLogger("mta.shaping")

SCOPES = ("site", "source", "path", "tenant")


def path_name(source: str, site: str) -> str:
    return ready_queue_name(source, site)


@dataclass(frozen=True, slots=True)
class Suspension:
    scope: str            # site | source | path | tenant
    name: str             # the site, source, "source->site" or tenant
    reason: str
    since: float          # epoch seconds
    until: float | None   # None: until lifted

    def active_at(self, now: float) -> bool:
        return self.until is None or now < self.until

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Suspension:
        return cls(d["scope"], d["name"], d["reason"], float(d["since"]),
                   None if d.get("until") is None else float(d["until"]))


class Suspensions:
    def __init__(self, clock: Clock,
                 persist: Callable[[Suspension, bool], None] | None = None) -> None:
        self.clock = clock
        self.persist = persist
        self._items: dict[tuple[str, str], Suspension] = {}

    def suspend(self, scope: str, name: str, reason: str,
                duration: float | None = None) -> Suspension:
        """Suspend (or re-suspend, replacing the previous entry). duration None: until lifted."""
        if scope not in SCOPES:
            raise ValueError(f"unknown suspension scope {scope!r}: use one of {SCOPES}")
        if duration is not None and duration <= 0:
            raise ValueError("a suspension's duration must be positive")
        now = self.clock.now()
        s = Suspension(scope, name, reason, now, None if duration is None else now + duration)
        self._items[(scope, name)] = s
        if self.persist is not None:
            self.persist(s, True)
        return s

    def lift(self, scope: str, name: str) -> Suspension | None:
        s = self._items.pop((scope, name), None)
        if s is not None and self.persist is not None:
            self.persist(s, False)
        return s

    def _get(self, scope: str, name: str | None, now: float) -> Suspension | None:
        if name is None:
            return None
        s = self._items.get((scope, name))
        if s is None:
            return None
        if not s.active_at(now):
            self.lift(scope, name)  # expired: drop it (and tell persistence)
            return None
        return s

    def is_suspended(self, *, site: str | None = None, source: str | None = None,
                     tenant: str | None = None) -> Suspension | None:
        """The suspension that stops this work, most specific first (path, site, source,
        tenant), or None."""
        if not self._items:  # the common case, on the hot path: nothing is suspended
            return None
        now = self.clock.now()
        path = path_name(source, site) if source is not None and site is not None else None
        return (self._get("path", path, now) or self._get("site", site, now)
                or self._get("source", source, now) or self._get("tenant", tenant, now))

    def active(self) -> list[Suspension]:
        now = self.clock.now()
        return [s for s in list(self._items.values())
                if self._get(s.scope, s.name, now) is not None]

    def load(self, items: Iterable[Suspension]) -> None:
        """Restore persisted suspensions (expired ones are skipped, persist is not called)."""
        now = self.clock.now()
        for s in items:
            if s.active_at(now):
                self._items[(s.scope, s.name)] = s


class SuspensionFile:
    """Administrative suspensions kept across restarts: one JSON file, replaced whole and
    fsynced on every change (they change only by an operator's hand, so rarely)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> list[Suspension]:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
            return [Suspension.from_dict(d) for d in items]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ignoring unreadable suspensions file %s: %s", self.path, e)
            return []

    def save(self, items: Iterable[Suspension]) -> None:
        """Blocking: run it in a thread."""
        data = json.dumps([s.as_dict() for s in items], indent=1)
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
