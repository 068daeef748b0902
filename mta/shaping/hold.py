"""Holds: which shaping limit keeps work from going out on a path now, and until when.

`Shaper.holds(path)` (the gate, read without taking anything) lists every limit that binds
at this instant, most decisive first, as `Hold(limit, until, detail)`; `mta queue explain`
and the shaping explain show them. The names are the config keys an operator would change
(or the mechanism, where no key is):

    suspension          an administrative suspension or the dead-site timer; until its end
    warmup_cap          the source sent today's warm-up cap; until the next UTC day
    global_message_rate, tenant_message_rate, provider_message_rate
                        a [rate_limits] rate over every path; until the next slot
    max_message_rate    the message rate (slowed by adaptive feedback); until the next slot
    licence_connections the volume licence's cap on outbound connections over every path
    connection_limit    every connection the adaptive window allows is busy; until one frees
    max_connection_rate no new connection yet; until the next slot

`until` is epoch seconds, or None when the end is not a time (a suspension until lifted, a
busy connection).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["Hold", "at"]


def at(epoch: float) -> str:
    """A time as details show it: ISO 8601 UTC to the millisecond."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Hold:
    limit: str
    until: float | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "until": self.until, "detail": self.detail}
