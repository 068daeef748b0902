"""sd_notify(3) without libsystemd: READY=1, RELOADING=1, STOPPING=1, STATUS=...

systemd's Type=notify services tell the manager they are ready by sending a datagram to the
AF_UNIX socket named in $NOTIFY_SOCKET (an "@" prefix means the abstract namespace).
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=serving") if run under systemd; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
