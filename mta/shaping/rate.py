"""Rate specs: "100/s", "5000/h", "1,000/h burst 50", parsed once into a `Rate`.

A rate is `limit` events per `period` seconds, with `burst` events allowed back to back.
The burst defaults to the limit (as in KumoMTA's throttle crate): "100000/d" lets a day's
volume go as fast as the other limits allow, then refills evenly, which is what operators
mean by "per day". Write "100/s burst 1" for a strictly even pace.

`Rate.key` folds limit, period and burst into one string so two different limits on the
same path never share a counter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Rate", "parse_rate"]

_PERIODS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}
_RATE_RE = re.compile(
    r"^\s*(?P<limit>[\d,_]+)\s*/\s*(?P<period>[A-Za-z]+)"
    r"(?:\s+burst\s+(?P<burst>[\d,_]+))?\s*$")
_NUM_RE = re.compile(r"^\d{1,3}(?:[,_]\d{3})*$|^\d+$")


def _number(text: str, what: str, spec: str) -> int:
    if not _NUM_RE.match(text):
        raise ValueError(f"invalid rate {spec!r}: {what} {text!r} is not a whole number "
                         "(thousands may be grouped as 1,000)")
    return int(text.replace(",", "").replace("_", ""))


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period: float  # seconds
    burst: int
    # Computed once: the throttle reads both on every decision.
    interval: float = field(init=False, repr=False, compare=False)  # GCRA emission interval
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", self.period / self.limit)
        object.__setattr__(self, "key", f"{self.limit}/{self.period:g}s~{self.burst}")

    @classmethod
    def parse(cls, spec: str) -> Rate:
        return parse_rate(spec)

    def __str__(self) -> str:
        unit = next(u for u, s in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
                    if s == self.period)
        text = f"{self.limit}/{unit}"
        return text if self.burst == self.limit else f"{text} burst {self.burst}"


def parse_rate(spec: object) -> Rate:
    """Parse "100/s", "5000/h", "100000/d", "1,000/h", "100/s burst 20" into a Rate.

    Raises ValueError with a message that says what is wrong.
    """
    if not isinstance(spec, str):
        raise ValueError(f"expected a rate like \"100/s\", got {type(spec).__name__}")
    m = _RATE_RE.match(spec)
    if not m:
        raise ValueError(f"invalid rate {spec!r}: expected COUNT/PERIOD like \"100/s\", "
                         "\"5000/h\" or \"100/s burst 20\"")
    period_name = m.group("period").lower()
    period_name = period_name[:-1] if period_name.endswith("s") and len(period_name) > 2 \
        else period_name
    if period_name not in _PERIODS:
        raise ValueError(f"invalid rate {spec!r}: unknown period {m.group('period')!r} "
                         "(use s, m, h or d)")
    limit = _number(m.group("limit"), "count", spec)
    if limit < 1:
        raise ValueError(f"invalid rate {spec!r}: the count must be at least 1 "
                         "(to stop a path, suspend it)")
    burst = limit
    if m.group("burst") is not None:
        burst = _number(m.group("burst"), "burst", spec)
        if burst < 1:
            raise ValueError(f"invalid rate {spec!r}: the burst must be at least 1")
    return Rate(limit, _PERIODS[period_name], burst)
