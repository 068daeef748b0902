"""DataReader: RFC 5321 4.1.1.4 (end of data), 4.5.2 (transparency), size counting and the
SMTP smuggling defence (bare CR / bare LF), fed in every possible chunking."""

from __future__ import annotations

import pytest

from mta.smtp.data import DataReader


def read_all(wire: bytes, max_size: int = 10_000, chunk: int | None = None
             ) -> tuple[DataReader, bytes | None]:
    reader = DataReader(max_size)
    step = chunk or len(wire) or 1
    for i in range(0, max(len(wire), 1), step):
        rest = reader.feed(wire[i:i + step])
        if rest is not None:
            return reader, rest + wire[i + step:]
    return reader, None


def test_4_1_1_4_crlf_dot_crlf_ends_the_message():
    reader, rest = read_all(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    assert rest == b""
    assert reader.body == b"Subject: x\r\n\r\nhello\r\n"
    assert not reader.bare_newline


def test_4_1_1_4_empty_message_is_a_lone_dot():
    reader, rest = read_all(b".\r\n")
    assert (reader.body, rest) == (b"", b"")


def test_4_5_2_leading_dot_is_removed_from_every_line():
    reader, _ = read_all(b"..first\r\nmid\r\n...two\r\n.x\r\n.\r\n")
    assert reader.body == b".first\r\nmid\r\n..two\r\nx\r\n"


def test_bytes_after_the_end_marker_are_returned_for_the_command_loop():
    _, rest = read_all(b"a\r\n.\r\nQUIT\r\n")
    assert rest == b"QUIT\r\n"


def test_end_marker_split_at_every_position():
    wire = b"line one\r\n..dotted\r\nline three\r\n.\r\nNOOP\r\n"
    for chunk in range(1, len(wire) + 1):
        reader, rest = read_all(wire, chunk=chunk)
        assert reader.body == b"line one\r\n.dotted\r\nline three\r\n", chunk
        assert rest == b"NOOP\r\n", chunk


@pytest.mark.parametrize("smuggle", [
    b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\n.\r",
])
def test_smuggling_variants_neither_end_nor_split_the_message(smuggle):
    wire = (b"Subject: a\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x>\r\n"
            b"RCPT TO:<victim@y>\r\nDATA\r\n\r\nforged\r\n.\r\n")
    for chunk in (1, 3, len(wire)):
        reader, rest = read_all(wire, chunk=chunk)
        assert rest == b"", (smuggle, chunk)  # one message, ended only by the real marker
        assert reader.bare_newline, (smuggle, chunk)
        assert b"MAIL FROM:<evil@x>" in reader.body


def test_bare_lf_inside_a_line_is_flagged():
    reader, _ = read_all(b"a\nb\r\n.\r\n")
    assert reader.bare_newline


def test_size_over_max_is_read_to_the_end_then_dropped():
    wire = b"x" * 50 + b"\r\n" + b"y" * 5000 + b"\r\n.\r\nQUIT\r\n"
    reader, rest = read_all(wire, max_size=1000, chunk=7)
    assert reader.body is None and reader.dropped
    assert rest == b"QUIT\r\n"
    assert reader.size >= 5000


def test_size_is_judged_after_unstuffing():
    body = b".\r\n" * 300  # 900 bytes, 1200 on the wire once stuffed
    wire = body.replace(b".\r\n", b"..\r\n") + b".\r\n"
    reader, _ = read_all(wire, max_size=900)
    assert reader.body == body


def test_message_one_byte_over_the_limit_is_dropped():
    reader, _ = read_all(b"a" * 999 + b"\r\n.\r\n", max_size=1000)
    assert reader.body is None
