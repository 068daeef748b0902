"""Jinja filters of the console templates: times, ages and numbers as people read them."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

__all__ = ["FILTERS"]


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, int(time.time() - ts))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def number(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else ("-" if n is None else str(n))


def percent(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


FILTERS = {"when": when, "age": age, "number": number, "percent": percent}
