"""Reading the DATA stream: end marker, dot-unstuffing, size and bare CR/LF, in byte ops.

Owns RFC 5321 4.1.1.4 / 4.5.2 for the server side. Only CRLF "." CRLF ends the message
(the CRLF before the dot belongs to the last line, and the line ending the DATA command
counts as the first CRLF, so an empty message is just ".\r\n"). A bare LF or bare CR
anywhere in the content never ends the message, and makes it refused as a whole (the SMTP
smuggling defence: `\n.\n`, `\r\n.\n`, `\n.\r\n`, `\r.\r` are all content, never an end).
Past the size cutoff the content is dropped while still scanning for the end marker, so a
too-large message is answered only once it has been read to its end.
"""

from __future__ import annotations

__all__ = ["DataReader"]

_END = b"\r\n.\r\n"


class DataReader:
    """Feed it the bytes that follow the 354 reply; it says when the message ended.

    `feed()` returns None while the end marker has not arrived, else the bytes that
    followed it (pipelined commands). Then `body` is the un-dot-stuffed message (CRLF line
    ends, ending with CRLF unless empty), or None when it was too large to keep.
    """

    __slots__ = ("_buf", "_cutoff", "bare_newline", "body", "dropped", "max_size", "size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        # Dot-stuffing adds at most one byte per line: keep up to 1.5x raw bytes so a
        # stuffed message at the limit is judged on its real (unstuffed) size.
        self._cutoff = max_size + max_size // 2 + 2
        # The CRLF that ended the DATA command: lets one search find ".\r\n" at the start.
        self._buf = bytearray(b"\r\n")
        self.size = 0  # raw octets received so far (stuffed, as on the wire)
        self.dropped = False  # content dropped past the cutoff
        self.body: bytes | None = None
        self.bare_newline = False

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:
        buf = self._buf
        start = len(buf) - 4 if len(buf) > 4 else 0
        buf += data
        self.size += len(data)
        idx = buf.find(_END, start)
        if idx < 0:
            if self.dropped or len(buf) > self._cutoff:
                # Keep only what could be the start of a split end marker.
                self.dropped = True
                del buf[:-4]
            return None
        rest = bytes(buf[idx + 5:])
        if self.dropped:
            self.body = None
        else:
            content = bytes(buf[:idx + 2])  # leading CRLF .. the last line's CRLF
            crlf = content.count(b"\r\n")
            self.bare_newline = content.count(b"\n") != crlf or content.count(b"\r") != crlf
            # RFC 5321 4.5.2: a line starting with "." loses that first "."
            body = content.replace(b"\r\n.", b"\r\n")[2:] if b"\r\n." in content else content[2:]
            if len(body) > self.max_size:
                self.dropped = True
            else:
                self.body = body
        self._buf = bytearray()
        return rest


class ChunkReader:
    """One BDAT chunk (RFC 3030): exactly `size` octets follow the command line, taken as
    they are (no dot-stuffing, no end marker). `feed()` returns None until they are all
    in, then the bytes after them (pipelined commands). `data` holds the chunk, unless
    `keep` was False (a chunk refused before it was read, or past the size limit: it is
    still read, to stay in step with the client, and thrown away)."""

    __slots__ = ("_buf", "data", "keep", "last", "left", "refusal", "size")

    def __init__(self, size: int, last: bool, *, keep: bool = True,
                 refusal: object = None) -> None:
        self.size, self.last, self.keep, self.refusal = size, last, keep, refusal
        self.left = size
        self._buf = bytearray()
        self.data: bytes | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:
        n = min(self.left, len(data))
        if self.keep:
            self._buf += data[:n]
        self.left -= n
        if self.left:
            return None
        self.data = bytes(self._buf) if self.keep else None
        self._buf = bytearray()
        return bytes(data[n:])
