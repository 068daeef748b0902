"""The answer cache: DNS answers kept for their TTL, bounded in size, least recently used
evicted first.

Owns how long each kind of answer is kept: records for their TTL; NXDOMAIN and NODATA for
the SOA's negative TTL (RFC 2308 5) or `negative_ttl` when the server sent no SOA, either
bounded to [`negative_min`, `negative_max`] (so a decayed SOA TTL of 0 does not mean a
question per message, and a huge SOA minimum does not hide a new record for days); SERVFAIL
and timeouts for the short `failure_ttl` (RFC 2308 7.1: at most five minutes), so a broken
domain is not asked again for every message while it stays broken. Time comes from an
injected clock (monotonic seconds), so tests move it instead of sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mta.dns.answer import Answer, Status

__all__ = ["AnswerCache"]

Key = tuple[str, str]  # (normalized name, rdtype)


class AnswerCache:
    def __init__(self, size: int, *, negative_ttl: float, failure_ttl: float,
                 negative_min: float = 0.0, negative_max: float = float("inf"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = max(0, size)
        self.negative_ttl = negative_ttl
        self.negative_min = negative_min
        self.negative_max = negative_max
        self.failure_ttl = failure_ttl
        self.clock = clock
        self._entries: OrderedDict[Key, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lifetime(self, answer: Answer) -> float:
        """Seconds `answer` may be kept."""
        if answer.status is Status.OK:
            return answer.ttl or 0.0
        if answer.status is Status.SERVFAIL:
            return self.failure_ttl
        ttl = self.negative_ttl if answer.ttl is None else answer.ttl
        return min(max(ttl, self.negative_min), self.negative_max)

    def get(self, name: str, rdtype: str) -> Answer | None:
        """The answer if still fresh, else None (and the stale entry is dropped)."""
        key = (name, rdtype)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, answer: Answer) -> None:
        lifetime = self.lifetime(answer)
        if lifetime <= 0 or self.size == 0:
            return  # TTL 0 (RFC 1035 3.2.1): use once, never keep
        key = (answer.name, answer.rdtype)
        self._entries[key] = (self.clock() + lifetime, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def remaining(self, name: str, rdtype: str) -> float | None:
        """Seconds left before the cached answer expires, or None if none is cached."""
        entry = self._entries.get((name, rdtype))
        if entry is None:
            return None
        left = entry[0] - self.clock()
        return left if left > 0 else None

    def clear(self) -> None:
        self._entries.clear()
