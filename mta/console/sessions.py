"""Console sessions: kept in this process's memory, named by a random id that the cookie
carries with an HMAC of it (a forged or truncated cookie is refused before any look-up).

A session ends after `idle` seconds without a request, after `max_age` in any case, at
sign-out, when its account is removed (from the config by SIGHUP, or a run-time account
anywhere), disabled or given a new password (the account's `stamp` changes: checked at
every request), and when the daemon restarts (the key is made afresh at start: every
cookie of the old process is void).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["COOKIE", "Session", "SessionStore"]

COOKIE = "mta_console"
_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    sid: str
    account: str
    stamp: str  # the account's stamp at sign-in (mta.console.accounts.Account.stamp)
    created: float
    seen: float
    # The CSRF token of every form this session gets (mta.console.csrf).
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class SessionStore:
    def __init__(self, idle: float, max_age: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle, self.max_age = idle, max_age
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def _sign(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()

    def create(self, account: str, stamp: str = "") -> tuple[Session, str]:
        """A new session and its cookie value."""
        now = self._clock()
        if len(self._sessions) >= _MAX_SESSIONS:
            self._prune(now)
        sid = secrets.token_urlsafe(32)
        s = self._sessions[sid] = Session(sid, account, stamp, now, now)
        return s, f"{sid}.{self._sign(sid)}"

    def get(self, cookie: str | None, *, touch: bool = True) -> Session | None:
        """The live session of `cookie`; `touch`: a request of its own (it counts
        against `idle`; an open live tail looking whether it may go on does not)."""
        if not cookie or "." not in cookie:
            return None
        sid, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._sign(sid)):
            return None
        s = self._sessions.get(sid)
        if s is None:
            return None
        now = self._clock()
        if now - s.seen > self.idle or now - s.created > self.max_age:
            del self._sessions[sid]
            return None
        if touch:
            s.seen = now
        return s

    def drop(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def end_account(self, account: str) -> int:
        """End every session of `account` (removed, disabled, new password)."""
        ended = [sid for sid, s in self._sessions.items() if s.account == account]
        for sid in ended:
            del self._sessions[sid]
        return len(ended)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self, now: float) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.seen > self.idle or now - s.created > self.max_age:
                del self._sessions[sid]
        if len(self._sessions) >= _MAX_SESSIONS:  # still full: the oldest go
            for sid in sorted(self._sessions, key=lambda k: self._sessions[k].seen)[:1000]:
                del self._sessions[sid]
