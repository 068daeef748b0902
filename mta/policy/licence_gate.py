"""The licence at run time: loaded once (and on SIGHUP), checked on every MAIL and RCPT.

Owns what the engine needs from the licence: whether sending is allowed at all (missing
key, bad signature, expired), the monthly volume counter's bucket, the usage alerts, and a
status value the metrics module reads without touching the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mta.observe import EventLog
from mta.policy import replies
from mta.policy.calendar import period_bounds, period_key, period_reset
from mta.policy.licence import Licence, LicenceError, load_licence
from mta.policy.store import Bucket
from mta.rfc5321 import Reply

__all__ = ["LicenceGate", "LicenceStatus"]

log = logging.getLogger("mta.policy")

# Counter rows of past months are kept for `usage` reports this long after the month ends.
_KEEP_MONTH = 62 * 86400.0


@dataclass(frozen=True)
class LicenceStatus:
    """For metrics and `mta licence show`: `ratio` is used/volume (0 when unlimited)."""

    state: str  # "none" | "valid" | "expired" | "not yet valid" | "invalid"
    licensee: str = ""
    volume: int = 0
    used: int = 0
    ratio: float = 0.0
    max_connections: int = 0
    problem: str = ""


class LicenceGate:
    def __init__(self, path: Path | None, public_key: str, tz: ZoneInfo,
                 alert_levels: tuple[int, ...], events: EventLog | None) -> None:
        self.path, self.public_key, self.tz = path, public_key, tz
        self.alert_levels = alert_levels
        self.events = events
        self.licence: Licence | None = None
        self.problem = ""
        self.used = 0  # last known count for the current month (metrics read this)
        self.month = ""
        # Asked on every MAIL and RCPT; they change only at day and month boundaries (and
        # on reload): (start, end, answer) of the window they were computed for.
        self._refusal: tuple[float, float, Reply | None] | None = None
        self._bucket: tuple[float, float, Bucket | None] | None = None

    def reload(self) -> None:
        """Read and verify the licence file (start-up, SIGHUP). Never raises: a bad licence
        stops sending with a clear reply instead of stopping the daemon."""
        self.licence, self.problem = None, ""
        self._refusal = self._bucket = None
        if self.path is None:
            return
        try:
            self.licence = load_licence(self.path, self.public_key)
        except LicenceError as e:
            self.problem = str(e)
            log.error("licence: %s; sending is refused until this is fixed", e)
            if self.events:
                self.events.emit("licence_invalid", problem=self.problem)

    def key(self, now: float) -> str:
        return f"licence|month|{period_key('month', now, self.tz)}"

    def bucket(self, now: float) -> Bucket | None:
        """The licence's counter of the month holding `now`; None without a licence."""
        hit = self._bucket
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[2]
        bucket = None
        if self.path is not None and self.licence is not None:
            bucket = Bucket(self.key(now), self.licence.monthly_volume,
                            period_reset("month", now, self.tz).timestamp() + _KEEP_MONTH)
        self._bucket = (*period_bounds("month", now, self.tz), bucket)
        return bucket

    def refusal(self, now: float) -> Reply | None:
        """Why no mail may be sent at all right now, or None."""
        if self.path is None:
            return None
        hit = self._refusal
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[2]
        reply = self._refusal_on(now)
        self._refusal = (*period_bounds("day", now, self.tz), reply)
        return reply

    def _refusal_on(self, now: float) -> Reply | None:
        if self.licence is None:
            return replies.licence_unusable(self.problem)
        day = datetime.fromtimestamp(now, self.tz).date()
        state = self.licence.state_on(day)
        if state == "expired":
            return replies.licence_unusable(
                f"the licence of {self.licence.licensee} expired on "
                f"{self.licence.valid_until.isoformat()}")
        if state == "not yet valid":
            return replies.licence_unusable(
                f"the licence of {self.licence.licensee} is valid from "
                f"{self.licence.valid_from.isoformat()}")
        return None

    def exhausted(self, used: int, now: float) -> Reply | None:
        self.observe(used, now)
        lic = self.licence
        if lic is None or not lic.monthly_volume or used < lic.monthly_volume:
            return None
        return replies.licence_exhausted(used, lic.monthly_volume, lic.licensee,
                                         period_key("month", now, self.tz))

    def observe(self, used: int | None, now: float, alerts: tuple[int, ...] = ()) -> None:
        """Record the latest count, and announce alert levels crossed (each raised once per
        month and volume by the store)."""
        if used is not None:
            self.used, self.month = used, period_key("month", now, self.tz)
        lic = self.licence
        for level in alerts:
            if lic is None:
                continue
            msg = (f"licence usage at {level}%: {self.used:,} of {lic.monthly_volume:,} "
                   f"recipients in {self.month} (licence of {lic.licensee})")
            if level >= 100:
                log.error("%s; new mail is refused until the month ends", msg)
            else:
                log.warning("%s", msg)
            if self.events:
                self.events.emit("licence_usage", level=level, used=self.used,
                                 volume=lic.monthly_volume, month=self.month,
                                 licensee=lic.licensee)

    def used_in(self, now: float) -> int:
        """The last count observed for the month holding `now` (0 in a new month)."""
        return self.used if self.month == period_key("month", now, self.tz) else 0

    def status(self, now: float) -> LicenceStatus:
        if self.path is None:
            return LicenceStatus("none")
        lic = self.licence
        if lic is None:
            return LicenceStatus("invalid", problem=self.problem)
        used = self.used_in(now)
        state = lic.state_on(datetime.fromtimestamp(now, self.tz).date())
        ratio = used / lic.monthly_volume if lic.monthly_volume else 0.0
        return LicenceStatus(state, lic.licensee, lic.monthly_volume, used, ratio,
                             lic.max_connections)
