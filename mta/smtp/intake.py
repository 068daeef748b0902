"""The intake switch: whether this daemon takes new mail, for every door at once.

`mta drain` (POST /api/v1/admin/intake {"accepting": false}) turns it off before a
maintenance or a move: new SMTP connections and MAIL commands get `421 4.3.2` (RFC 3463
4.3.2, "system not accepting network messages"), HTTP injection gets 503, /readyz says not
ready, while the queue goes on delivering (and our own DSNs still enter it). `mta intake
resume` turns it back on. The state is the running process's: a restart accepts again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mta.rfc5321.reply import Reply

__all__ = ["R_NOT_ACCEPTING", "Intake"]

R_NOT_ACCEPTING = Reply(421, "4.3.2", "System not accepting network messages (draining), "
                                      "try again later")


class Intake:
    """On (the default) or off, with when and why it was last switched."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.accepting = True
        self.since = clock()
        self.reason = ""

    def set(self, accepting: bool, reason: str = "") -> bool:
        """Switch; returns whether the state changed."""
        changed = accepting != self.accepting
        if changed:
            self.accepting = accepting
            self.since = self._clock()
        self.reason = "" if accepting else (reason or self.reason)
        return changed

    def paused(self) -> bool:
        return not self.accepting

    def as_dict(self) -> dict[str, Any]:
        return {"accepting": self.accepting, "since": self.since, "reason": self.reason}
