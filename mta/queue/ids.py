"""Queue ids: short, unique, sortable by time, safe in a filename or a URL.

An id is 18 lowercase hex digits: 12 of milliseconds since the epoch, 4 of a counter within
that millisecond, 2 of the spool shard (one per worker process). Sorting ids as strings sorts
them by acceptance time, and two workers never produce the same id because the shard is part
of it. The generator never goes backwards: if the clock steps back (NTP) or a millisecond's
counter runs out, it keeps counting on from the last id it gave out, and `Spool.open` seeds it
with the newest id already on disk so a restart cannot reuse an id either.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["ID_LENGTH", "IdGenerator", "id_time", "is_queue_id"]

ID_LENGTH = 18
_COUNTER_MAX = 0xFFFF
_SHARD_MAX = 0xFF
_ID_RE = re.compile(r"^[0-9a-f]{18}$")


def is_queue_id(value: str) -> bool:
    """True for a well-formed queue id (admin input is checked before it reaches SQL)."""
    return bool(_ID_RE.match(value))


def id_time(queue_id: str) -> float:
    """The acceptance time (unix seconds, ms resolution) encoded in a queue id."""
    return int(queue_id[:12], 16) / 1000.0


class IdGenerator:
    """Hands out strictly increasing ids for one shard."""

    def __init__(self, shard: int = 0, *, clock: Callable[[], float] = time.time,
                 after: str | None = None) -> None:
        if not 0 <= shard <= _SHARD_MAX:
            raise ValueError(f"shard must be 0..{_SHARD_MAX}")
        self._shard = shard
        self._clock = clock
        self._ms = 0
        self._counter = -1
        if after:
            # Continue after the newest id on disk, whatever shard wrote it.
            self._ms = int(after[:12], 16)
            self._counter = int(after[12:16], 16)

    def next(self) -> str:
        now_ms = int(self._clock() * 1000)
        if now_ms > self._ms:
            self._ms, self._counter = now_ms, 0
        elif self._counter < _COUNTER_MAX:
            self._counter += 1
        else:  # 65536 ids in one millisecond: borrow the next millisecond
            self._ms, self._counter = self._ms + 1, 0
        return f"{self._ms:012x}{self._counter:04x}{self._shard:02x}"
