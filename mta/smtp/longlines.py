"""Lines longer than 998 octets (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6) in a received message.

`[smtp] long_lines` says what ingress does with them, before the message is signed and
spooled, so that no such line is ever sent on (and a DKIM signature, made after, covers the
bytes that are sent):

- "wrap" (`wrap_long_lines`): a header line is folded (RFC 5322 2.2.3: CRLF inserted
  before a space or tab), a body line broken with CRLF before a space or tab, in both cases
  the last one within the limit; a line without any is cut at the limit (on a UTF-8
  character boundary), which for a header inserts a space, as Postfix's
  smtp_line_length_limit does.
- "reject": `550 5.6.0 line longer than 998 octets`.

`body` is the message as DataReader hands it over: CRLF line ends, dot-unstuffed.
"""

from __future__ import annotations

__all__ = ["MAX_LINE", "has_long_line", "wrap_long_lines"]

MAX_LINE = 998  # octets, without the CRLF (RFC 5322 2.1.1)


def has_long_line(body: bytes, limit: int = MAX_LINE) -> bool:
    """Whether a line (CRLF not counted) is longer than `limit`. Steps a window of
    limit + 2 octets (a line, its CR and LF) to the last LF inside it, so the Python loop
    runs once per ~1000 octets, not once per line."""
    span = limit + 2
    end = len(body)
    pos = 0
    while end - pos > limit:  # what is left could hold a long line
        lf = body.rfind(b"\n", pos, pos + span)
        if lf >= 0:
            pos = lf + 1  # every line before it fits in the window: none is too long
        elif pos + span <= end:
            return True  # no line end within limit + 2 octets
        else:  # the last line, without a line end
            return end - pos - body.endswith(b"\r") > limit
    return False


def _cut(line: bytes, limit: int) -> int:
    """Where to break `line` (longer than `limit`): before the last space or tab that
    leaves a non-empty first piece, else at `limit` moved back to a UTF-8 boundary."""
    at = max(line.rfind(b" ", 1, limit + 1), line.rfind(b"\t", 1, limit + 1))
    if at > 0:
        return at
    at = limit
    while at > limit - 3 and 0x80 <= line[at] < 0xC0:  # a UTF-8 continuation byte
        at -= 1
    return at if not 0x80 <= line[at] < 0xC0 else limit  # not UTF-8: cut at the limit


def _wrap_line(line: bytes, limit: int, header: bool) -> list[bytes]:
    pieces = []
    while len(line) > limit:
        at = _cut(line, limit)
        pieces.append(line[:at])
        rest = line[at:]
        # A header continuation must start with white space (RFC 5322 2.2.3): after a
        # hard cut one is inserted. A body line is just broken.
        line = rest if not header or rest[:1] in (b" ", b"\t") else b" " + rest
    pieces.append(line)
    return pieces


def wrap_long_lines(body: bytes, limit: int = MAX_LINE) -> bytes:
    """`body` with every line at most `limit` octets (see the module docstring); the same
    object when nothing is too long."""
    if not has_long_line(body, limit):
        return body
    out: list[bytes] = []
    header = True
    lines = body.split(b"\r\n")
    for line in lines:
        if header and line == b"":
            header = False  # the empty line ending the header section
            out.append(line)
            continue
        if len(line) <= limit:
            out.append(line)
        else:
            out.extend(_wrap_line(line, limit, header))
    return b"\r\n".join(out)
