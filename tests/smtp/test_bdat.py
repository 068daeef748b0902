"""CHUNKING / BDAT (RFC 3030) into the server: advertised, chunks of any size (binary-safe:
a line holding only "." is data, not an end), pipelined, the LAST chunk queues the message;
BDAT out of sequence is still read (the stream stays in step) and refused; the size limit
holds across chunks; RSET between chunks drops them; DATA after BDAT is out of sequence."""

from __future__ import annotations

from tests.smtp.conftest import StartServer
from tests.smtp.test_server import raw

HEAD = b"From: a@b.test\r\nTo: x@y.test\r\nSubject: chunks\r\n\r\n"


async def _rcpt(c) -> None:
    assert (await c.cmd("MAIL FROM:<a@b.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<x@y.test>")).startswith("250")


async def test_chunks_make_one_message(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    ehlo = await c.cmd("EHLO client.test")
    assert "CHUNKING" in ehlo
    await _rcpt(c)
    part2 = b"line one\r\n.\r\n..two\r\n"  # dots are data in BDAT: no stuffing, no end
    c.send(b"BDAT %d\r\n" % len(HEAD) + HEAD)
    assert (await c.reply()).startswith(f"250 2.0.0 {len(HEAD)} octets received")
    c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert (await c.reply()).startswith("250 2.0.0 Ok: queued as")
    (env, data), = srv.handler.messages
    assert data.endswith(b"\r\n\r\n" + part2) and b"Subject: chunks" in data
    assert [r.address for r in env.recipients] == ["x@y.test"]
    await c.close()


async def test_pipelined_chunks_and_a_last_without_final_crlf(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    body = HEAD + b"no newline at the end"
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
           + b"BDAT 10\r\n" + body[:10] + b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:]
           + b"NOOP\r\n")
    replies = await c.replies(5)
    assert replies[2].startswith("250 2.0.0 10 octets") and "queued as" in replies[3]
    assert replies[4].startswith("250")
    (_, data), = srv.handler.messages
    assert data.endswith(b"\r\n\r\nno newline at the end\r\n")
    await c.close()


async def test_bdat_out_of_sequence_is_read_and_refused(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    # No MAIL: the 6 octets are still read (not taken as a command), then 503.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n")
    assert (await c.reply()).startswith("503 5.5.1")
    assert (await c.cmd("NOOP")).startswith("250")
    assert (await c.cmd("BDAT x")).startswith("501 5.5.4")
    assert not srv.handler.messages
    await c.close()


async def test_size_limit_across_chunks_and_rset_drops_them(start_server: StartServer):
    srv = await start_server(max_message_size=2048)
    c = await raw(srv)
    await _rcpt(c)
    chunk = b"x" * 1500
    c.send(b"BDAT 1500\r\n" + chunk)
    assert (await c.reply()).startswith("250")
    c.send(b"BDAT 1500 LAST\r\n" + chunk)
    assert (await c.reply()).startswith("552 5.3.4")
    await _rcpt(c)
    c.send(b"BDAT 3\r\nabc")
    assert (await c.reply()).startswith("250")
    assert (await c.cmd("DATA")).startswith("503")
    assert (await c.cmd("RSET")).startswith("250")
    await _rcpt(c)
    c.send(b"BDAT %d LAST\r\n" % len(HEAD) + HEAD)
    assert "queued as" in await c.reply()
    (_, data), = srv.handler.messages
    assert b"abc" not in data and b"Subject: chunks" in data
    await c.close()
