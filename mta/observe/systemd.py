"""sd_notify(3) without libsystemd: READY=1, RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1.

systemd's Type=notify services tell the manager they are ready by sending a datagram to the
AF_UNIX socket named in $NOTIFY_SOCKET (an "@" prefix means the abstract namespace).

- `reloading()`: RELOADING=1 with MONOTONIC_USEC, which Type=notify-reload (systemd 253+)
  needs to match the reload to its SIGHUP; older managers ignore the extra field.
- `watchdog_interval()` / `watchdog()`: with WatchdogSec= the manager sets $WATCHDOG_USEC
  (and $WATCHDOG_PID) and kills a service that stays silent that long. The pings are sent
  by a task on the event loop, every half period as sd_watchdog_enabled(3) advises, so a
  loop that is stuck (blocked by a bug) stops them and systemd restarts the daemon: that
  is what the watchdog is for.

Sending never blocks: the socket is non-blocking and a datagram the manager cannot take
right now is dropped (the next ping follows).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["notify", "reloading", "watchdog", "watchdog_interval"]


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") if run under systemd; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.send(state.encode())
    except OSError:
        return False
    return True


def reloading() -> bool:
    """RELOADING=1, stamped with CLOCK_MONOTONIC in microseconds (sd_notify(3))."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between pings (half of $WATCHDOG_USEC), or None: no watchdog, or one meant
    for another process ($WATCHDOG_PID set to a pid not ours)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        pid = environ.get("WATCHDOG_PID")
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def watchdog(interval: float) -> None:
    """Ping WATCHDOG=1 every `interval` seconds until cancelled."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
