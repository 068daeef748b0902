"""SmtpServer over real loopback sockets, driven by smtplib (in a thread), aiosmtplib,
swaks and a raw stream client: every reply path, limits, smuggling, STARTTLS + AUTH,
lifecycle (stop, reload, SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import random
import smtplib
import socket
import ssl
import time

import aiosmtplib
import pytest

from mta.rfc5321.reply import Reply
from tests.smtp.conftest import PASSWORD, Running, StartServer
from tests.smtp.memhandler import MemoryHandler
from tests.smtp.rawclient import RawClient

MSG = b"From: a@b.test\r\nTo: x@y.test\r\nSubject: test\r\n\r\nHello.\r\n"


def no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def raw(srv: Running, *, ehlo: bool = True) -> RawClient:
    client = await RawClient.connect(srv.host, srv.port)
    if ehlo:
        assert (await client.ehlo()).startswith("250-")
    return client


async def start_data(c: RawClient) -> None:
    """Open a transaction up to the 354."""
    assert (await c.cmd("MAIL FROM:<a@b.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<x@y.test>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")


# --- clients -----------------------------------------------------------------------------

async def test_smtplib_sends_a_message(start_server: StartServer):
    srv = await start_server()

    def send() -> dict:
        with smtplib.SMTP(srv.host, srv.port, timeout=5) as s:
            return s.sendmail("a@b.test", ["x@y.test", "z@y.test"], MSG + b".dot line\r\n")

    assert await asyncio.to_thread(send) == {}
    ((env, data),) = srv.handler.messages
    assert env.tenant == "default" and env.mail_from == "a@b.test"
    assert [r.address for r in env.recipients] == ["x@y.test", "z@y.test"]
    assert data.startswith(b"Received: from ")
    assert b"with ESMTP;" in data  # two recipients: no "for <...>"
    assert data.endswith(b"Hello.\r\n.dot line\r\n")
    assert b"\r\nMessage-ID: <" in data and b"\r\nDate: " in data


async def test_aiosmtplib_pipelines_a_message(start_server: StartServer):
    srv = await start_server()
    errors, reply = await aiosmtplib.send(MSG, sender="a@b.test", recipients=["x@y.test"],
                                          hostname=srv.host, port=srv.port, timeout=5,
                                          start_tls=False)
    assert errors == {} and reply.startswith("2.0.0 Ok: queued as")
    assert len(srv.handler.messages) == 1
    assert b"\r\n\tfor <x@y.test>; " in srv.handler.messages[0][1]


async def swaks(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/swaks", "--hide-informational", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_swaks_pipelined_session(start_server: StartServer):
    srv = await start_server()
    rc, out = await swaks("--server", f"{srv.host}:{srv.port}", "--from", "a@b.test",
                          "--to", "x@y.test,z@y.test", "--pipeline")
    assert rc == 0, out
    assert "250 2.0.0 Ok: queued as" in out
    assert len(srv.handler.messages) == 1


async def test_swaks_starttls_then_auth_relays_as_tenant(start_server: StartServer,
                                                         tls_files):
    cert, key = tls_files
    # Relay only from 127.0.0.2: the client (127.0.0.1) must authenticate.
    srv = await start_server(tls_cert=cert, tls_key=key, relay_networks=[_net("127.0.0.2/32")])
    rc, out = await swaks("--server", f"{srv.host}:{srv.port}", "--from", "a@b.test",
                          "--to", "x@y.test", "--tls", "--auth", "PLAIN",
                          "--auth-user", "alice", "--auth-password", PASSWORD)
    assert rc == 0, out
    assert "235 2.7.0 Authentication successful" in out
    (env, data), = srv.handler.messages
    assert (env.tenant, env.auth_user) == ("acme", "alice")
    assert b"with ESMTPSA" in data


def _net(cidr: str):
    import ipaddress
    return ipaddress.ip_network(cidr)


# --- STARTTLS and AUTH --------------------------------------------------------------------

async def test_rfc3207_starttls_then_auth_login_with_smtplib(start_server: StartServer,
                                                            tls_files):
    cert, key = tls_files
    srv = await start_server(tls_cert=cert, tls_key=key)

    def session() -> tuple[bool, bool, str]:
        with smtplib.SMTP(srv.host, srv.port, timeout=5) as s:
            s.ehlo()
            had_tls = s.has_extn("starttls")
            s.starttls(context=no_verify())
            s.ehlo()
            still_tls = s.has_extn("starttls")
            s.login("alice", PASSWORD)  # smtplib picks a mechanism we offer
            s.sendmail("a@b.test", ["x@y.test"], MSG)
            return had_tls, still_tls, s.sock.version()

    had, still, version = await asyncio.to_thread(session)
    assert had and not still and version.startswith("TLS")
    (env, data), = srv.handler.messages
    assert env.tenant == "acme" and b"with ESMTPSA" in data


async def test_rfc4954_wrong_password_535_then_lockout_454(start_server: StartServer):
    srv = await start_server(auth_max_failures=2, auth_failure_delay=0.05)
    c = await raw(srv)
    started = time.monotonic()
    assert (await c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n")).startswith("535 5.7.8")
    assert time.monotonic() - started >= 0.05 - 0.01  # the failure delay, 10 ms tolerance
    assert (await c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n")).startswith("535 5.7.8")
    # Locked out now, even with the right password, and from a new connection too.
    assert (await c.cmd("AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")).startswith("454 4.7.0")
    c2 = await raw(srv)
    assert (await c2.cmd("AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")).startswith("454 4.7.0")
    await c.close()
    await c2.close()
    assert len(srv.rejected("auth_failed")) == 2
    assert srv.rejected("auth_locked")


async def test_auth_plain_succeeds_on_loopback_without_tls(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    assert (await c.cmd("AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=")).startswith("235 2.7.0")
    await c.close()


# --- relay control ------------------------------------------------------------------------

async def test_relay_denied_without_auth_outside_relay_networks(start_server: StartServer):
    srv = await start_server(relay_networks=[_net("127.0.0.2/32")])

    def send() -> None:
        with smtplib.SMTP(srv.host, srv.port, timeout=5) as s:
            s.sendmail("a@b.test", ["x@y.test"], MSG)

    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        await asyncio.to_thread(send)
    assert e.value.smtp_code == 530 and b"5.7.0 Authentication required" in e.value.smtp_error
    assert srv.handler.messages == []
    assert srv.rejected("auth_required")[0]["client_ip"] == "127.0.0.1"


async def test_relay_network_client_is_tenant_default(start_server: StartServer):
    handler = MemoryHandler()
    srv = await start_server(handler)
    c = await raw(srv)
    await start_data(c)
    c.send(MSG + b".\r\n")
    assert (await c.reply()).startswith("250 2.0.0")
    assert handler.sessions[0].tenant == "default"
    await c.close()


# --- pipelining (RFC 2920) ------------------------------------------------------------------

async def test_rfc2920_pipelined_group_gets_replies_in_order(start_server: StartServer):
    srv = await start_server(MemoryHandler(rcpt_replies={
        "bad@y.test": Reply(550, "5.1.1", "No such user")}))
    c = await raw(srv)
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<bad@y.test>\r\n"
           "RCPT TO:<z@y.test>\r\nDATA\r\n")
    assert await c.replies(5) == ["250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 No such user",
                                  "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    # The message, its end and the next transaction in one burst.
    c.send(MSG + b".\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRSET\r\nQUIT\r\n")
    replies = await c.replies(5)
    assert replies[0].startswith("250 2.0.0 Ok: queued as")
    assert replies[1:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok", "221 2.0.0 Bye"]
    assert [r.address for r in srv.handler.messages[0][0].recipients] == ["x@y.test",
                                                                          "z@y.test"]


async def test_pipelined_replies_stay_in_order_when_the_handler_suspends(
        start_server: StartServer):
    srv = await start_server(MemoryHandler(delay=0.01))
    c = await raw(srv)
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n")
    assert [r[:3] for r in await c.replies(4)] == ["250", "250", "250", "354"]
    c.send(MSG + b".\r\nNOOP\r\n")
    assert (await c.reply()).startswith("250 2.0.0 Ok: queued")
    assert await c.reply() == "250 2.0.0 Ok"
    await c.close()


async def test_rfc2920_data_must_be_last_in_group(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n" + MSG.decode() + ".\r\n")
    replies = await c.replies(3)
    assert replies[2].startswith("554 5.5.0")
    assert await c.closed()
    assert srv.handler.messages == [] and srv.rejected("pipelining")


async def test_starttls_with_pipelined_plaintext_is_refused(start_server: StartServer,
                                                            tls_files):
    cert, key = tls_files
    srv = await start_server(tls_cert=cert, tls_key=key)
    c = await raw(srv)
    c.send("STARTTLS\r\nMAIL FROM:<injected@b.test>\r\n")
    assert (await c.reply()).startswith("554 5.5.0")
    assert await c.closed()


# --- SMTP smuggling ---------------------------------------------------------------------

@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r"])
async def test_smtp_smuggling_is_one_message_refused_with_550_5_6_11(
        start_server: StartServer, smuggle: bytes):
    srv = await start_server()
    c = await raw(srv)
    await start_data(c)
    c.send(b"Subject: a\r\n\r\nbody" + smuggle + b"MAIL FROM:<admin@b.test>\r\n"
           b"RCPT TO:<victim@y.test>\r\nDATA\r\n\r\nforged\r\n.\r\nNOOP\r\n")
    assert (await c.reply()).startswith("550 5.6.11")
    assert await c.reply() == "250 2.0.0 Ok"  # the NOOP: nothing was read as commands
    assert srv.handler.messages == []
    assert len(srv.rejected("bare_newline")) == 1
    await c.close()


# --- limits -------------------------------------------------------------------------------

async def test_rfc1870_size_above_max_is_552_at_mail(start_server: StartServer):
    srv = await start_server(max_message_size=2048)
    c = await raw(srv)
    assert "250-SIZE 2048" in await c.ehlo()
    assert (await c.cmd("MAIL FROM:<a@b.test> SIZE=2049")).startswith("552 5.3.4")
    assert srv.rejected("size")
    await c.close()


async def test_message_growing_past_max_is_read_to_the_end_then_552(
        start_server: StartServer):
    srv = await start_server(max_message_size=2048)
    c = await raw(srv)
    await start_data(c)
    line = b"x" * 76 + b"\r\n"
    for _ in range(200):  # 15 KiB in many writes
        c.send(line)
    c.send(b".\r\nNOOP\r\n")
    assert (await c.reply()).startswith("552 5.3.4")
    assert await c.reply() == "250 2.0.0 Ok"
    assert srv.handler.messages == []
    await c.close()


async def test_recipients_over_max_are_452(start_server: StartServer):
    srv = await start_server(max_recipients=2)
    c = await raw(srv)
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\n"
           "RCPT TO:<3@y.test>\r\n")
    assert (await c.replies(4))[3] == "452 4.5.3 Too many recipients"
    await c.close()


async def test_command_line_too_long_is_500_5_5_2(start_server: StartServer):
    srv = await start_server(max_line_length=512)
    c = await raw(srv)
    assert (await c.cmd("NOOP " + "x" * 600)) == "500 5.5.2 Error: line too long"
    # Longer than the buffer check: arrives in pieces with no newline yet.
    c.send("NOOP " + "y" * 5000)
    await asyncio.sleep(0.05)
    c.send("y" * 5000 + "\r\nNOOP\r\n")
    assert (await c.reply()) == "500 5.5.2 Error: line too long"
    assert (await c.reply()) == "250 2.0.0 Ok"
    await c.close()


async def test_max_connections_is_421_and_close(start_server: StartServer):
    srv = await start_server(max_connections=2)
    a, b = await raw(srv, ehlo=False), await raw(srv, ehlo=False)
    third = await RawClient.connect(srv.host, srv.port, greeting=False)
    assert (await third.reply()).startswith("421 4.7.0")
    assert await third.closed()
    assert srv.rejected("max_connections")
    await a.close()
    await b.close()


async def test_max_connections_per_ip_is_421_and_close(start_server: StartServer):
    srv = await start_server(max_connections_per_ip=1)
    a = await raw(srv, ehlo=False)
    second = await RawClient.connect(srv.host, srv.port, greeting=False)
    assert (await second.reply()).startswith("421 4.7.0")
    assert srv.rejected("max_connections_per_ip")[0]["client_ip"] == "127.0.0.1"
    await a.close()
    # The slot is released when the first connection closes (give the server 1 s).
    for _ in range(100):
        if srv.server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    again = await raw(srv)
    await again.close()


async def test_idle_timeout_is_421_4_4_2(start_server: StartServer):
    srv = await start_server(idle_timeout=0.2)
    c = await raw(srv)
    started = time.monotonic()
    assert (await c.reply()).startswith("421 4.4.2")
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0  # 0.2 s, with 50 ms early / generous late tolerance
    assert await c.closed()
    assert srv.rejected("idle_timeout")


async def test_data_timeout_is_421_4_4_2(start_server: StartServer):
    srv = await start_server(data_timeout=0.2)
    c = await raw(srv)
    await start_data(c)
    c.send(b"Subject: half a message\r\n")
    assert (await c.reply()).startswith("421 4.4.2")
    assert srv.rejected("data_timeout") and srv.handler.messages == []


async def test_too_many_errors_is_421_4_7_0_and_close(start_server: StartServer):
    srv = await start_server(max_errors=3)
    c = await raw(srv)
    c.send("BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    replies = await c.replies(4)
    assert replies[:3] == ["500 5.5.2 Error: command not recognized"] * 3
    assert replies[3] == "421 4.7.0 Error: too many errors"
    assert await c.closed()


async def test_handler_exception_is_451_and_the_session_goes_on(start_server: StartServer):
    class Broken(MemoryHandler):
        async def check_mail(self, session, address, params):  # type: ignore[override]
            raise RuntimeError("policy store down")

    srv = await start_server(Broken())
    c = await raw(srv)
    assert (await c.cmd("MAIL FROM:<a@b.test>")).startswith("451 4.3.0")
    assert (await c.cmd("NOOP")) == "250 2.0.0 Ok"
    await c.close()


async def test_garbage_never_crashes_the_server(start_server: StartServer):
    srv = await start_server(max_errors=1000)
    rng = random.Random(5321)
    for _ in range(5):
        c = await RawClient.connect(srv.host, srv.port)
        for _ in range(20):
            c.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        c.send(b"\r\n")
        await c.close()
    c = await raw(srv)
    assert (await c.cmd("NOOP")) == "250 2.0.0 Ok"
    await c.close()


# --- lifecycle --------------------------------------------------------------------------

async def test_stop_sends_421_to_idle_sessions_and_lets_transactions_finish(
        start_server: StartServer):
    srv = await start_server(MemoryHandler(delay=0.2))
    idle = await raw(srv)
    busy = await raw(srv)
    c = busy
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert [r[:3] for r in await c.replies(3)] == ["250", "250", "354"]
    c.send(MSG + b".\r\n")
    await asyncio.sleep(0.05)  # the accept is in flight (0.2 s)
    stop = asyncio.create_task(srv.server.stop(timeout=5))
    assert (await idle.reply()).startswith("421 4.3.2")
    assert (await busy.reply()).startswith("250 2.0.0 Ok: queued")
    assert (await busy.reply()).startswith("421 4.3.2")
    await asyncio.wait_for(stop, 5)
    assert len(srv.handler.messages) == 1
    with pytest.raises(OSError):
        await RawClient.connect(srv.host, srv.port)


async def test_stop_timeout_cuts_a_stuck_session_with_421(start_server: StartServer):
    srv = await start_server()
    c = await raw(srv)
    await start_data(c)
    started = time.monotonic()
    await srv.server.stop(timeout=0.2)
    assert time.monotonic() - started < 2.0  # 0.2 s deadline plus the close grace
    assert (await c.reply()).startswith("421 4.3.2")


async def test_reload_applies_new_limits_to_new_sessions(start_server: StartServer):
    from tests.smtp.conftest import make_config
    srv = await start_server(max_recipients=1)
    old = await raw(srv)
    srv.server.reload(make_config(max_recipients=5, max_message_size=4096))
    new = await raw(srv)
    for c, expect in ((old, "452"), (new, "250")):
        c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<1@y.test>\r\nRCPT TO:<2@y.test>\r\n")
        assert (await c.replies(3))[2][:3] == expect
        await c.close()
    assert "SIZE 4096" in await (await raw(srv, ehlo=False)).ehlo()


async def test_reuse_port_lets_two_servers_share_a_port(start_server: StartServer):
    # What worker processes ([server] workers > 1) ask for; a lone daemon does not.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = await start_server(listen=[("127.0.0.1", port)], reuse_port=True)
    b = await start_server(listen=[("127.0.0.1", port)], reuse_port=True)
    assert a.port == b.port == port
    c = await RawClient.connect("127.0.0.1", port)
    assert (await c.cmd("QUIT")).startswith("221")


# --- the production event loop -----------------------------------------------------------

def test_starttls_auth_and_pipelining_under_uvloop(tls_files):
    """The same server on uvloop (what `mta serve` runs): STARTTLS, AUTH, a pipelined
    message; run in its own loop, as a worker process would."""
    import uvloop

    from tests.smtp.conftest import make_config

    cert, key = tls_files

    async def scenario() -> tuple[str, int]:
        from mta.smtp.server import SmtpServer
        handler = MemoryHandler()
        server = SmtpServer(make_config(tls_cert=cert, tls_key=key,
                                        relay_networks=[_net("127.0.0.2/32")]), handler)
        await server.start()
        host, port = server.addresses[0]
        try:
            smtp = aiosmtplib.SMTP(hostname=host, port=port, timeout=5, start_tls=True,
                                   tls_context=no_verify())
            await smtp.connect()
            await smtp.login("alice", PASSWORD)
            await smtp.sendmail("a@b.test", ["x@y.test", "z@y.test"], MSG)
            await smtp.quit()
        finally:
            await server.stop(timeout=1)
        env, _ = handler.messages[0]
        return env.tenant, len(env.recipients)

    assert uvloop.run(asyncio.wait_for(scenario(), 15)) == ("acme", 2)
