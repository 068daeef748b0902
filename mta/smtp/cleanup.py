"""End-of-DATA header work: the Received: trace header, and Message-ID:/Date: when missing.

Owns what ingress adds to a message before it is handed to the handler (like Postfix's
cleanup): RFC 5321 4.4 trace information with the RFC 3848 / RFC 6531 `with` protocol
names, and RFC 5322 3.6 required fields. Only the header block is scanned, once.
"""

from __future__ import annotations

import email.utils
import os
import time

from mta.smtp.handler import SessionInfo

__all__ = ["add_headers", "protocol_name"]


def protocol_name(info: SessionInfo, smtputf8: bool) -> str:
    """RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 section 3.7.4 (UTF8SMTP...)."""
    if not info.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if info.tls else "") + ("A" if info.auth_user else "")


class _DateCache:
    """RFC 5322 date-time, formatted once per second rather than once per message."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = email.utils.formatdate(second, localtime=True)
        return self._text


_date = _DateCache()
_message_id_counter = 0


def _header_end(data: bytes) -> int:
    """Index just past the header block's last CRLF (before the empty line); 0 if none."""
    if data.startswith(b"\r\n"):
        return 0  # no header fields at all
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 2


def add_headers(data: bytes, info: SessionInfo, *, hostname: str, recipients: list[str],
                smtputf8: bool = False, queue_id: str | None = None,
                now: float | None = None) -> bytes:
    """Return `data` with Received: prepended and Message-ID:/Date: appended if missing.

    `data` is the un-dot-stuffed message with CRLF line ends.
    """
    global _message_id_counter
    now = time.time() if now is None else now
    date = _date(now)
    # RFC 5321 4.4: "from" the EHLO name and the TCP address, "by" us, "with" the protocol,
    # "for" only with a single recipient (a list of them would disclose the Bcc: ones).
    helo = info.helo or "unknown"
    lines = [f"Received: from {helo} ([{info.client_ip}])\r\n\tby {hostname} (mta) with "
             f"{protocol_name(info, smtputf8)}"]
    if queue_id:
        lines.append(f" id {queue_id}")
    if len(recipients) == 1:
        lines.append(f"\r\n\tfor <{recipients[0]}>")
    lines.append(f"; {date}\r\n")
    received = "".join(lines).encode("utf-8")

    end = _header_end(data)
    header = b"\r\n" + data[:end].lower()
    extra = []
    if b"\r\nmessage-id:" not in header:
        _message_id_counter += 1
        token = f"{time.time_ns():x}.{os.getpid():x}.{_message_id_counter:x}"
        extra.append(f"Message-ID: <{token}@{hostname}>\r\n".encode())
    if b"\r\ndate:" not in header:
        extra.append(f"Date: {date}\r\n".encode())
    if not extra:
        return received + data
    return b"".join((received, data[:end], *extra, data[end:]))
