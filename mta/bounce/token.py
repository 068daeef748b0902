"""Feedback tokens: a short, URL-safe, HMAC-authenticated reference to (queue id, tenant,
recipient), carried in the VERP return path (b+TOKEN@domain), the X-Mta-Ref trace header and
the unsubscribe links (BASE/u/TOKEN, mailto:u+TOKEN@domain).

Layout (version 1), before encoding:

    version (1 byte = 1) | queue id (9 bytes: the 18 hex digits) |
    tenant (UTF-8) | 0x00 | recipient (UTF-8, "" for a message-level ref) | tag (10 bytes)

tag = HMAC-SHA256(secret, purpose | 0x00 | everything before the tag)[:10]. The purpose
("b" bounce, "u" unsubscribe, "m" message ref) is signed but not carried, so a token made
for one use verifies for no other: the X-Mta-Ref every recipient can read never
unsubscribes anyone. 80 bits of tag: an online forger gets one guess per SMTP or HTTP
request. The whole is base32 (RFC 4648) in lower case without padding: case-insensitive,
because a remote MTA may fold the case of a local part it answers to, and it needs no
escaping in a local part or a URL path. An address of ~20 characters gives a token of ~60.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Ref", "Tokens"]

VERSION = 1
_TAG = 10
_QID = 9
Purpose = Literal["b", "u", "m"]
# An address (256) and a tenant name fit; anything longer is not one of ours.
_MAX_TOKEN = 640


@dataclass(frozen=True, slots=True)
class Ref:
    queue_id: str
    tenant: str
    recipient: str  # "" for a message-level reference (X-Mta-Ref)


class Tokens:
    """Makes tokens with `secret`; verifies those of `secret` and of `previous` (the keys
    being retired: mail sent before a rotation still bounces and unsubscribes)."""

    def __init__(self, secret: str | bytes, previous: Sequence[str | bytes] = ()) -> None:
        keys = [k.encode() if isinstance(k, str) else k for k in (secret, *previous)]
        if not all(keys):
            raise ValueError("a token secret must not be empty")
        self._key = keys[0]
        self._keys = keys

    def _tag(self, purpose: Purpose, body: bytes, key: bytes | None = None) -> bytes:
        return hmac.new(key or self._key, purpose.encode() + b"\0" + body, hashlib.sha256).digest()[
            :_TAG
        ]

    def make(self, purpose: Purpose, queue_id: str, tenant: str, recipient: str = "") -> str:
        try:
            qid = bytes.fromhex(queue_id)
        except ValueError:
            raise ValueError(f"not a queue id: {queue_id!r}") from None
        if len(qid) != _QID or "\0" in tenant:
            raise ValueError("not a queue id or tenant name")
        body = bytes([VERSION]) + qid + tenant.encode() + b"\0" + recipient.encode()
        raw = body + self._tag(purpose, body)
        return base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    def verify(self, purpose: Purpose, token: str) -> Ref | None:
        """The reference in `token`, or None if it is not one of ours for this purpose
        (malformed, another version, a wrong tag). Never raises."""
        if not token or len(token) > _MAX_TOKEN or not token.isascii():
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + _QID + 1 + _TAG or raw[0] != VERSION:
            return None
        body, tag = raw[:-_TAG], raw[-_TAG:]
        if not any(hmac.compare_digest(tag, self._tag(purpose, body, k)) for k in self._keys):
            return None
        tenant, sep, recipient = body[1 + _QID :].partition(b"\0")
        if not sep:
            return None
        try:
            return Ref(body[1 : 1 + _QID].hex(), tenant.decode(), recipient.decode())
        except UnicodeDecodeError:
            return None
