"""Fast twins of dkimpy's message parsing and relaxed canonicalization.

dkimpy's `rfc822_parse` splits the whole message into lines with a regex and joins the
body again, and its relaxed canonicalization (RFC 6376 3.4.2, 3.4.4) runs regexes that
stop at every space: ~12 ms per 100 KB body, against ~0.5 ms for the RSA signature, and
for a 2 KB message the header work alone costs about half as much as the signature.
The functions below give byte-identical results with C-speed `bytes` methods and hand
anything unusual to dkimpy; tests/dkim checks them against dkimpy's own functions
(which stay the reference, the "plain twin").
"""

from __future__ import annotations

import re

from dkim import rfc822_parse
from dkim.canonicalization import CanonicalizationPolicy, Relaxed

__all__ = ["canonicalize_body", "canonicalize_headers", "relaxed_body",
           "relaxed_header_value", "split_message"]

_LINE_SPLIT = re.compile(rb"\r?\n")
_HEAD_END = re.compile(rb"\n\r?\n")


def split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """Same result as dkimpy's `rfc822_parse` (headers as [name, value], body with every
    line ending as CRLF), parsing only the header block line by line."""
    if message.startswith((b"\n", b"\r\n")):
        return rfc822_parse(message)  # no headers at all: rare, let dkimpy say so
    m = _HEAD_END.search(message)
    if m is None:
        return rfc822_parse(message)
    headers = _parse_head(message[:m.start() + 1])
    body = message[m.end():]
    # Already CRLF everywhere (what SMTP delivers): dkimpy's split/join would not change
    # it. A bare LF somewhere: do what dkimpy does.
    if body.count(b"\n") != body.count(b"\r\n"):
        body = b"\r\n".join(_LINE_SPLIT.split(body))
    return headers, body


_NAME_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # a field name: printable, no colon


def _parse_head(head: bytes) -> list[list[bytes]]:
    """rfc822_parse's headers for a CRLF header block (ending in its line break), with
    bytes methods; anything unusual (bare LF, no colon, mbox From_) goes to dkimpy."""
    if head.count(b"\n") != head.count(b"\r\n"):
        return rfc822_parse(head)[0]
    headers: list[list[bytes]] = []
    for line in head[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += line + b"\r\n"
            continue
        colon = line.find(b":")
        if colon <= 0 or not _NAME_RE.fullmatch(line, 0, colon):
            return rfc822_parse(head)[0]
        headers.append([line[:colon], line[colon + 1:] + b"\r\n"])
    return headers


def relaxed_header_value(value: bytes) -> bytes:
    """RFC 6376 3.4.2 for one value, as dkimpy's `Relaxed.canonicalize_headers`: unfold,
    WSP runs to one space, strip (bytes.strip: all ASCII whitespace, as dkimpy)."""
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value.strip() + b"\r\n"


def canonicalize_headers(canon: CanonicalizationPolicy,
                         headers: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
    if canon.header_algorithm is Relaxed:
        return [(name.lower().rstrip(), relaxed_header_value(value))
                for name, value in headers]
    return canon.canonicalize_headers(headers)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 on a CRLF body, as dkimpy's `Relaxed.canonicalize_body`.

    Every run of WSP becomes one space (tabs to spaces, then collapse double spaces:
    each pass at least halves every run), then the one space left before each CRLF is
    dropped, then trailing empty lines go (a non-empty body ends with one CRLF).
    """
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    # A last line without CRLF keeps its trailing space, as in dkimpy (which strips WSP
    # only before a CRLF), and gets the CRLF.
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == 0:
        return b""
    return body[:end] + b"\r\n"


def canonicalize_body(canon: CanonicalizationPolicy, body: bytes) -> bytes:
    if canon.body_algorithm is Relaxed:
        return relaxed_body(body)
    return canon.canonicalize_body(body)
