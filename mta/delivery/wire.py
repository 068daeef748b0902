"""Outbound SMTP on the wire, without sockets: reply parsing and command encoding.

Owns the byte-level half of the client (h11 style): `ReplyParser` turns received bytes into
`Reply` values (multi-line replies per RFC 5321 4.2.1), `Extensions` reads an EHLO reply,
`mail_command` / `rcpt_command` build MAIL and RCPT lines with the parameters the server
offers (SIZE, BODY, SMTPUTF8, DSN), `prepare_body` dot-stuffs a body (RFC 5321 4.5.2) and
`bdat_command` frames one as a single RFC 3030 chunk.
`client.py` does the I/O around these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mta.rfc5321 import Reply, ReplyParseError

__all__ = [
    "Extensions",
    "ProtocolError",
    "ReplyParser",
    "bdat_command",
    "mail_command",
    "needs_smtputf8",
    "prepare_body",
    "rcpt_command",
]

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; a peer that sends this much without
# a line end is not speaking SMTP, and we must not buffer it without bound.
MAX_REPLY_LINE = 8192
# Distinct single-line replies cached as parsed values: servers repeat the same "250 2.1.5 Ok"
# thousands of times per connection. Bounded so unique texts (queue ids) can't grow it.
_CACHE_LIMIT = 512


class ProtocolError(Exception):
    """The peer sent something that is not an SMTP reply."""


class ReplyParser:
    """Bytes in, complete `Reply` values out. Keeps the partial line between feeds."""

    __slots__ = ("_buf", "_lines")

    _cache: dict[bytes, Reply] = {}  # noqa: RUF012 - shared on purpose, values are frozen

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[str] = []  # continuation lines of the reply being read

    def clear(self) -> None:
        """Forget buffered bytes (RFC 3207 4.2: nothing read before TLS may be used after)."""
        self._buf = b""
        self._lines = []

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf + data if self._buf else data
        out: list[Reply] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line[3:4] == b"-":
                self._lines.append(line.decode("utf-8", "replace"))
                continue
            if not self._lines:
                reply = self._cache.get(line)
                if reply is None:
                    reply = self._parse(line.decode("utf-8", "replace"))
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[line] = reply
            else:
                self._lines.append(line.decode("utf-8", "replace"))
                reply = self._parse("\n".join(self._lines))
                self._lines = []
            out.append(reply)
        self._buf = buf[start:]
        if len(self._buf) > MAX_REPLY_LINE:
            raise ProtocolError(f"reply line longer than {MAX_REPLY_LINE} octets")
        return out

    @staticmethod
    def _parse(text: str) -> Reply:
        try:
            return Reply.parse(text)
        except ReplyParseError as e:
            raise ProtocolError(f"bad reply {text[:80]!r}: {e}") from None


@dataclass(frozen=True, slots=True)
class Extensions:
    """The service extensions an EHLO reply lists (RFC 5321 4.1.1.1), keyword -> params."""

    keywords: Mapping[str, str]

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Extensions:
        # The first line is the server's name; each further line is "KEYWORD [params]".
        kw: dict[str, str] = {}
        for line in reply.lines()[1:]:
            name, _, params = line.strip().partition(" ")
            if name:
                kw[name.upper()] = params.strip()
        return cls(kw)

    @classmethod
    def none(cls) -> Extensions:
        """After HELO: plain RFC 821 SMTP, no extensions."""
        return cls({})

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.keywords

    @property
    def size_limit(self) -> int | None:
        """RFC 1870: SIZE with a number is the server's fixed limit; 0 or none: no limit."""
        value = self.keywords.get("SIZE")
        if value is None or not value.isdigit() or int(value) == 0:
            return None
        return int(value)


def needs_smtputf8(mail_from: str, addresses: list[str], params: Mapping[str, str]) -> bool:
    """RFC 6531 3.4: SMTPUTF8 is needed for non-ASCII addresses, or when ingress got it."""
    return ("SMTPUTF8" in params or not mail_from.isascii()
            or not all(a.isascii() for a in addresses))


def mail_command(mail_from: str, size: int, ext: Extensions, params: Mapping[str, str],
                 body_8bit: bool, smtputf8: bool) -> bytes:
    """MAIL FROM with the parameters this server offers; unknown ones are never sent."""
    parts = [f"MAIL FROM:<{mail_from}>"]
    if "SIZE" in ext:
        parts.append(f"SIZE={size}")
    if "8BITMIME" in ext:
        body = params.get("BODY")
        if body:
            parts.append(f"BODY={body}")
        elif body_8bit:
            parts.append("BODY=8BITMIME")
    if smtputf8 and "SMTPUTF8" in ext:
        parts.append("SMTPUTF8")
    if "DSN" in ext:
        for key in ("RET", "ENVID"):
            value = params.get(key)
            if value:
                parts.append(f"{key}={value}")
    return (" ".join(parts) + "\r\n").encode("utf-8")


def rcpt_command(address: str, ext: Extensions, notify: str | None,
                 orcpt: str | None) -> bytes:
    """RCPT TO, with RFC 3461 NOTIFY/ORCPT only when the server offers DSN."""
    if "DSN" in ext and (notify or orcpt):
        line = f"RCPT TO:<{address}>"
        if notify:
            line += f" NOTIFY={notify}"
        if orcpt:
            line += f" ORCPT={orcpt}"
        return (line + "\r\n").encode("utf-8")
    return f"RCPT TO:<{address}>\r\n".encode()


def prepare_body(body: bytes) -> bytes:
    """Dot-stuff (RFC 5321 4.5.2), end with CRLF, append the terminating "." line.

    Byte operations only: one replace over the whole body, no per-line loop.
    """
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    lead = b"." if stuffed.startswith(b".") else b""
    tail = b"" if not stuffed or stuffed.endswith(b"\r\n") else b"\r\n"
    return b"".join((lead, stuffed, tail, b".\r\n"))


def bdat_command(body: bytes) -> bytes:
    """The whole body as one RFC 3030 chunk: "BDAT n LAST" then the octets as they are (no
    dot-stuffing, no terminating dot), ending with CRLF as RFC 5322 wants."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return b"BDAT %d LAST\r\n" % len(body) + body
