"""Calendar windows in the operator's time zone: counter keys and reset times.

Quotas reset at calendar boundaries (top of the hour, midnight, first of the month) in
`[policy] timezone`, not on rolling windows: that is what plans promise customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["PERIODS", "add_months", "period_bounds", "period_end", "period_key",
           "period_reset"]

PERIODS = ("hour", "day", "month")


@dataclass(frozen=True)
class _Window:
    start: float
    end: float
    key: str
    reset: datetime


# The last window computed per (period, zone). Every MAIL and RCPT of a limited tenant asks
# for keys and resets; the zone arithmetic cost ~20 us a call, the lookup costs nothing.
_last: dict[tuple[str, str], _Window] = {}


def _window(period: str, now: float, tz: ZoneInfo) -> _Window:
    hit = _last.get((period, tz.key))
    if hit is not None and hit.start <= now < hit.end:
        return hit
    dt = datetime.fromtimestamp(now, tz)
    if period == "hour":
        start = dt.replace(minute=0, second=0, microsecond=0).timestamp()
    elif period == "day":
        start = datetime(dt.year, dt.month, dt.day, tzinfo=tz).timestamp()
    elif period == "month":
        start = datetime(dt.year, dt.month, 1, tzinfo=tz).timestamp()
    else:
        raise ValueError(f"unknown period {period!r}")
    reset = _period_reset(period, now, tz)
    w = _Window(min(start, now), reset.timestamp(), _period_key(period, now, tz), reset)
    _last[(period, tz.key)] = w
    return w


def period_key(period: str, now: float, tz: ZoneInfo) -> str:
    """The calendar window holding `now`: "2026-11-22T05", "2026-11-22", "2026-11".

    In the repeated hour when clocks go back, the second pass gets its own key (fold), so
    an hourly limit is not shared by two real hours.
    """
    return _window(period, now, tz).key


def period_reset(period: str, now: float, tz: ZoneInfo) -> datetime:
    """When the window holding `now` ends (local time, aware)."""
    return _window(period, now, tz).reset


def period_end(period: str, now: float, tz: ZoneInfo) -> float:
    """`period_reset` as unix time."""
    return _window(period, now, tz).end


def period_bounds(period: str, now: float, tz: ZoneInfo) -> tuple[float, float]:
    """The window holding `now` as unix times [start, end)."""
    w = _window(period, now, tz)
    return w.start, w.end


def _period_key(period: str, now: float, tz: ZoneInfo) -> str:
    dt = datetime.fromtimestamp(now, tz)
    if period == "hour":
        return f"{dt:%Y-%m-%dT%H}" + ("b" if dt.fold else "")
    if period == "day":
        return f"{dt:%Y-%m-%d}"
    if period == "month":
        return f"{dt:%Y-%m}"
    raise ValueError(f"unknown period {period!r}")


def _period_reset(period: str, now: float, tz: ZoneInfo) -> datetime:
    dt = datetime.fromtimestamp(now, tz)
    if period == "hour":
        # Step in absolute time: a DST change neither skips nor repeats an hour.
        start = dt.replace(minute=0, second=0, microsecond=0)
        return datetime.fromtimestamp(start.timestamp() + 3600, tz)
    if period == "day":
        nxt = (dt.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
               + timedelta(days=1))
        return nxt.replace(tzinfo=tz)
    if period == "month":
        return add_months(dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0), 1)
    raise ValueError(f"unknown period {period!r}")


def add_months(dt: datetime, months: int) -> datetime:
    """Same day `months` later, clamped to the month's last day (Jan 31 + 1 -> Feb 28/29)."""
    y, m = divmod(dt.month - 1 + months, 12)
    year, month = dt.year + y, m + 1
    nxt_y, nxt_m = divmod(month, 12)
    last = (datetime(year + nxt_y, nxt_m + 1, 1) - timedelta(days=1)).day
    return dt.replace(year=year, month=month, day=min(dt.day, last))
