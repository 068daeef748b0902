"""Value types of config.toml: durations ("90s", "5m"), sizes ("25MiB"), host:port,
CIDR networks and instants, each parsed once here, and the error every problem becomes."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated


class ConfigError(Exception):
    """Raised with every problem found, each as `FILE: key: problem`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- value types -------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
    """"90s" / "5m" / "4h" / "5d" / "250ms" -> seconds. A bare number means seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"5m\"")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like \"5m\"")
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"invalid duration {value!r}: expected a number and a unit "
                         "(ms, s, m, h, d, w), like \"5m\"")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        n = _DURATION_UNITS[unit]
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def parse_size(value: object) -> int:
    """"25MiB" / "10MB" / "512KiB" / 1000 -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like \"25MiB\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size like \"25MiB\"")
    m = _SIZE_RE.match(value)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: expected a number and a unit "
                         "(B, KB, MB, GB, KiB, MiB, GiB), like \"25MiB\"")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_hostport(value: object, default_port: int | None = None) -> tuple[str, int]:
    """"127.0.0.1:2525" / "[::1]:25" / "host" (with default_port) -> (host, port)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected \"host:port\"")
    value = value.strip()
    host, port_s = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"invalid address {value!r}: unclosed '['")
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {value!r}")
            port_s = rest[1:]
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif value.count(":") > 1:
        host = value  # a bare IPv6 address
    if not port_s:
        if default_port is None:
            raise ValueError(f"invalid address {value!r}: expected \"host:port\"")
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"invalid port in {value!r}")
    return host, int(port_s)


def _parse_cidr(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("expected a network like \"127.0.0.0/8\"")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected CIDR like \"10.0.0.0/8\"") from None


# Markers for Annotated types: the loader converts raw TOML values with these.
def parse_workers(value: object) -> int:
    """[server] workers: 1-64, or "auto" (0 here; the loader makes it one per core)."""
    if value == "auto":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    raise ValueError(f"expected \"auto\" or a number of processes from 1 to 64, got {value!r}")


Duration = Annotated[float, parse_duration]
Size = Annotated[int, parse_size]
Workers = Annotated[int, parse_workers]
HostPort = Annotated[tuple[str, int], parse_hostport]
Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, _parse_cidr]


# --- sections ----------------------------------------------------------------------------


def _parse_instant(value: object) -> float:
    """TOML date / datetime (or ISO 8601 string) -> POSIX seconds; no zone means UTC."""
    import datetime as dt  # local: only [dkim] switch_at needs it

    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"invalid date {value!r}: expected 2026-12-01 or "
                             "2026-12-01T00:00:00Z") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise ValueError("expected a date like 2026-12-01 or 2026-12-01T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()
