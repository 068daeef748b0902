"""SASL for SMTP AUTH (RFC 4954): the mechanisms offered, their challenges, and the
decoding of a client's responses. The exchange itself (which response comes when) is the
session's (mta.smtp.session)."""

from __future__ import annotations

import base64
import binascii

from mta.rfc5321.reply import Reply

__all__ = ["EMPTY", "LOGIN_PASS", "LOGIN_USER", "MECHANISMS", "decode", "plain"]

MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USER = Reply(334, None, "VXNlcm5hbWU6")  # "Username:"
LOGIN_PASS = Reply(334, None, "UGFzc3dvcmQ6")  # "Password:"
EMPTY = Reply(334, None, "")  # PLAIN without an initial response: send it now


def decode(line: bytes) -> bytes | None:
    """A response line's base64, strictly (None: not base64, a 501)."""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None


def plain(decoded: bytes) -> tuple[str, str] | None:
    """PLAIN's message, [authzid] NUL authcid NUL passwd (RFC 4616 2): (user, password),
    or None when malformed or when it asks to act as someone else."""
    parts = decoded.split(b"\0")
    if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
        return None
    return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
