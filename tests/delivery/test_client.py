"""The outbound client against real SMTP servers on loopback (tests/support/mx.py).

Each test is one conversation from RFC 5321 / 2920 / 3207 / 3461, told by the server's
records: what it received, on which connection, from which address.
"""

import asyncio
import dataclasses
import ssl
import time

import pytest
import pytest_asyncio

from mta.delivery.client import ClientSettings, SmtpClient, SmtpConnectError
from mta.queue.envelope import Recipient
from tests.support.mx import DROP, MxFactory, make_self_signed

SETTINGS = ClientSettings(ehlo_name="client.test", connect_timeout=2, greeting_timeout=2,
                          command_timeout=2, data_timeout=2)
BODY = b"Subject: hi\r\n\r\nhello\r\n.dot line\r\n"


def rcpts(*addresses):
    return [Recipient(a) for a in addresses]


async def connect(mx, settings=SETTINGS, **kw):
    return await SmtpClient.connect(mx.host, mx.port, settings, **kw)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_rfc5321_3_3_one_transaction_per_message(mx_factory, pipelining):
    mx = await mx_factory("127.0.0.2", pipelining=pipelining)
    client = await connect(mx)
    assert ("PIPELINING" in client.extensions) is pipelining
    res = await client.send("s@a.test", rcpts("r1@x.test", "r2@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250, 250]
    (msg,) = await mx.wait_for_messages(1)
    assert msg.mail_from == "s@a.test" and msg.rcpt_tos == ["r1@x.test", "r2@x.test"]
    assert msg.body == BODY  # dot-stuffing undone by the server gives the body back
    await client.quit()
    await mx.wait_for_idle()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_per_recipient_outcomes_refusal_at_rcpt_and_final_reply_for_the_rest(
        mx_factory, pipelining):
    mx = await mx_factory("127.0.0.2", pipelining=pipelining)
    mx.script("bad@x.test", "550 5.1.1 no such user")
    mx.script("full@x.test", "452 4.2.2 mailbox full")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("ok@x.test", "bad@x.test", "full@x.test"), BODY)
    assert [str(r) for r in res.per_recipient] == [
        "250 2.0.0 Ok: queued", "550 5.1.1 no such user", "452 4.2.2 mailbox full"]
    assert mx.recipients == ["ok@x.test"]
    await client.quit()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_no_recipient_accepted_then_rset_before_next_message(mx_factory, pipelining):
    mx = await mx_factory("127.0.0.2", pipelining=pipelining)
    mx.script("bad@x.test", "550 5.1.1 no such user")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("bad@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [550]
    res = await client.send("s@a.test", rcpts("ok@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250]
    assert mx.commands.count("RSET") == 1 and mx.recipients == ["ok@x.test"]
    await client.quit()


async def test_rfc2920_pipelined_commands_in_one_round_trip(mx_factory):
    # With 0.3s before every MAIL/RCPT/DATA reply, lock-step would take 4 x 0.3s before the
    # body; pipelined the server still answers one by one (aiosmtpd is sequential), so the
    # proof is the order the server saw: all commands before the body was asked for.
    mx = await mx_factory("127.0.0.2")
    client = await connect(mx)
    await client.send("s@a.test", rcpts("a@x.test", "b@x.test", "c@x.test"), BODY)
    assert mx.commands[-5:] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]
    await client.quit()


async def test_data_refused_at_end_applies_to_every_accepted_recipient(mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("spam@x.test", "554 5.7.1 looks like spam", at="data")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "spam@x.test"), BODY)
    assert [str(r) for r in res.per_recipient] == ["554 5.7.1 looks like spam"] * 2
    assert res.transactions[0].data.code == 354
    # the transaction ended with the final reply: the next one needs no RSET
    res = await client.send("s@a.test", rcpts("a@x.test"), BODY)
    assert res.per_recipient[0].code == 250 and "RSET" not in mx.commands
    await client.quit()


async def test_rfc1870_size_over_the_declared_limit_is_refused_without_sending(mx_factory):
    mx = await mx_factory("127.0.0.2", size_limit=100)
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test"), b"x" * 200 + b"\r\n")
    assert str(res.per_recipient[0]).startswith("552 5.3.4")
    assert "MAIL" not in mx.commands
    await client.quit()


async def test_mail_refused_applies_to_every_recipient(mx_factory):
    mx = await mx_factory("127.0.0.2", mail_reply="451 4.3.0 try later")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "b@x.test"), BODY)
    assert [str(r) for r in res.per_recipient] == ["451 4.3.0 try later"] * 2
    await client.quit()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_rfc5321_4_5_3_1_10_too_many_recipients_go_in_another_transaction(
        mx_factory, pipelining):
    mx = await mx_factory("127.0.0.2", pipelining=pipelining, max_recipients=2)
    client = await connect(mx)
    addrs = [f"r{i}@x.test" for i in range(5)]
    res = await client.send("s@a.test", rcpts(*addrs), BODY)
    assert [r.code for r in res.per_recipient] == [250] * 5
    assert [m.rcpt_tos for m in mx.messages] == [addrs[0:2], addrs[2:4], addrs[4:]]
    assert len(res.transactions) == 3
    await client.quit()


async def test_max_recipients_per_transaction_splits_before_the_server_has_to(mx_factory):
    mx = await mx_factory("127.0.0.2")
    settings = ClientSettings(ehlo_name="c.test", command_timeout=2, data_timeout=2,
                              max_recipients_per_transaction=2)
    client = await connect(mx, settings)
    res = await client.send("s@a.test", rcpts("a@x.test", "b@x.test", "c@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250] * 3
    assert [len(m.rcpt_tos) for m in mx.messages] == [2, 1]
    await client.quit()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_connection_dropped_at_rcpt_every_open_recipient_gets_connection_lost(
        mx_factory, pipelining):
    mx = await mx_factory("127.0.0.2", pipelining=pipelining)
    mx.script("bad@x.test", "550 5.1.1 no such user")
    mx.script("drop@x.test", DROP)
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "bad@x.test", "drop@x.test",
                                              "b@x.test"), BODY)
    got = res.per_recipient
    assert [r.code for r in got] == [421, 550, 421, 421]
    assert got[0].enhanced == "4.4.2" and got[0].is_transient
    assert not client.usable and mx.messages == []
    res = await client.send("s@a.test", rcpts("a@x.test"), BODY)
    assert res.per_recipient[0].enhanced == "4.4.2"


async def test_connection_dropped_after_the_body_is_transient_for_all(mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("drop@x.test", DROP, at="data")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "drop@x.test"), BODY)
    assert [(r.code, r.enhanced) for r in res.per_recipient] == [(421, "4.4.2")] * 2


async def test_rfc5321_4_5_3_2_reply_timeout_is_connection_lost(mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("slow@x.test", "250 2.1.5 Ok", delay=1.0)
    settings = ClientSettings(ehlo_name="c.test", command_timeout=0.3, data_timeout=1)
    client = await connect(mx, settings)
    t0 = time.monotonic()
    res = await client.send("s@a.test", rcpts("slow@x.test"), BODY)
    elapsed = time.monotonic() - t0
    assert res.per_recipient[0].enhanced == "4.4.2"
    assert "timeout" in res.per_recipient[0].text
    assert 0.25 < elapsed < 0.9  # the 0.3s command timeout, with scheduling slack
    assert not client.usable


async def test_rfc5321_3_1_421_greeting_is_a_connect_error(mx_factory):
    mx = await mx_factory("127.0.0.2", greeting="421 4.3.2 too busy")
    with pytest.raises(SmtpConnectError) as e:
        await connect(mx)
    assert str(e.value.reply) == "421 4.3.2 too busy"


async def test_connection_refused_is_4_4_1(mx_factory):
    mx = await mx_factory("127.0.0.2")
    port = mx.port
    await mx.stop()
    with pytest.raises(SmtpConnectError) as e:
        await SmtpClient.connect("127.0.0.2", port, SETTINGS)
    assert (e.value.reply.code, e.value.reply.enhanced) == (421, "4.4.1")


async def test_rfc5321_3_2_ehlo_refused_falls_back_to_helo_without_parameters(mx_factory):
    mx = await mx_factory("127.0.0.2", ehlo_reply="502 5.5.2 EHLO not here", dsn=True)
    client = await connect(mx)
    assert list(client.extensions.keywords) == []
    res = await client.send("s@a.test", [Recipient("a@x.test", notify="NEVER")], BODY,
                            {"RET": "HDRS"})
    assert res.per_recipient[0].code == 250
    assert mx.commands[:2] == ["EHLO", "HELO"]
    assert mx.messages[0].mail_options == [] and mx.messages[0].rcpt_options == []
    await client.quit()


async def test_rfc3461_dsn_parameters_sent_when_offered(mx_factory):
    mx = await mx_factory("127.0.0.2", dsn=True)
    client = await connect(mx)
    rcpt = Recipient("a@x.test", notify="SUCCESS,FAILURE", orcpt="rfc822;a@x.test")
    await client.send("s@a.test", [rcpt], BODY, {"RET": "HDRS", "ENVID": "q123"})
    (msg,) = await mx.wait_for_messages(1)
    assert "RET=HDRS" in msg.mail_options and "ENVID=Q123" in msg.mail_options
    assert "NOTIFY=SUCCESS,FAILURE" in msg.rcpt_options  # aiosmtpd upper-cases options
    await client.quit()


async def test_rfc6152_8bit_body_declared_and_rfc6531_smtputf8_when_needed(mx_factory):
    mx = await mx_factory("127.0.0.2", smtputf8=True)
    client = await connect(mx)
    body = "Subject: caf\u00e9\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode()
    res = await client.send("s@a.test", rcpts("jos\u00e9@x.test"), body)
    assert res.per_recipient[0].code == 250
    (msg,) = await mx.wait_for_messages(1)
    assert {"BODY=8BITMIME", "SMTPUTF8"} <= set(msg.mail_options)
    assert msg.body == body and msg.rcpt_tos == ["jos\u00e9@x.test"]
    await client.quit()


async def test_rfc6531_utf8_address_to_a_server_without_smtputf8_bounces(mx_factory):
    mx = await mx_factory("127.0.0.2")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("jos\u00e9@x.test"), BODY)
    assert str(res.per_recipient[0]).startswith("553 5.6.7")
    await client.quit()


async def test_rfc3207_opportunistic_starttls_with_self_signed_certificate(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=True)
    client = await connect(mx)
    assert client.tls_active and "STARTTLS" not in client.extensions  # EHLO asked again
    res = await client.send("s@a.test", rcpts("a@x.test"), BODY)
    assert res.per_recipient[0].code == 250
    (msg,) = await mx.wait_for_messages(1)
    assert msg.tls and mx.commands.count("EHLO") == 2
    await client.quit()


async def test_tls_disabled_stays_in_the_clear(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=True)
    client = await connect(mx, tls="disabled")
    assert not client.tls_active
    await client.send("s@a.test", rcpts("a@x.test"), BODY)
    assert not (await mx.wait_for_messages(1))[0].tls
    await client.quit()


async def test_tls_required_but_not_offered_is_a_4_7_0_failure(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=False)
    with pytest.raises(SmtpConnectError) as e:
        await connect(mx, tls="required")
    assert (e.value.reply.code, e.value.reply.enhanced) == (421, "4.7.0")
    await mx.wait_for_idle()


async def test_tls_handshake_failure_is_4_7_5_and_marked_retryable(mx_factory):
    # A "server" that says 220 to STARTTLS and then speaks plain text: the handshake fails.
    writers = []

    async def fake(reader, writer):
        writers.append(writer)
        writer.write(b"220 fake ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-fake\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"this is not TLS\r\n" * 20)
        await writer.drain()

    server = await asyncio.start_server(fake, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SmtpConnectError) as e:
            await SmtpClient.connect("127.0.0.2", port, SETTINGS)
        assert (e.value.reply.code, e.value.reply.enhanced) == (421, "4.7.5")
        assert e.value.tls_failed
    finally:
        for w in writers:
            w.close()
        server.close()
        await asyncio.sleep(0.01)


async def test_source_address_binding_seen_by_the_server(mx_factory):
    mx = await mx_factory("127.0.0.2")
    client = await connect(mx, local_addr=("127.0.0.9", 0))
    await client.send("s@a.test", rcpts("a@x.test"), BODY)
    (msg,) = await mx.wait_for_messages(1)
    assert msg.peer[0] == "127.0.0.9" and mx.connections[0].peer[0] == "127.0.0.9"
    await client.quit()


async def test_many_messages_over_one_connection(mx_factory):
    mx = await mx_factory("127.0.0.2")
    client = await connect(mx)
    for i in range(20):
        res = await client.send("s@a.test", rcpts(f"r{i}@x.test"), BODY)
        assert res.per_recipient[0].code == 250
    assert len(mx.connections) == 1 and len(mx.messages) == 20
    assert client.transactions == 20
    await client.quit()
    await mx.wait_for_idle()


async def test_rfc5321_3_8_421_to_a_command_means_the_server_is_closing(mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("bye@x.test", "421 4.3.2 shutting down")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "bye@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250, 421]
    assert not client.usable  # the pool will not hand this session out again
    client.close()


def test_client_settings_from_the_delivery_config():
    from mta.config import parse_config
    cfg = parse_config('[delivery]\ncommand_timeout = "1m"\ntls = "required"\n'
                       'max_recipients_per_transaction = 50\n', base=None)
    s = ClientSettings.from_config(cfg.delivery, "mta.example")
    assert (s.ehlo_name, s.command_timeout, s.tls, s.max_recipients_per_transaction) == (
        "mta.example", 60.0, "required", 50)


@pytest_asyncio.fixture
async def named_mx(tmp_path):
    """An MX whose certificate names mx.test, and that certificate as the CA to trust."""
    cert, key = make_self_signed(tmp_path, "mx.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    factory = MxFactory(ctx)
    try:
        yield await factory("127.0.0.2", starttls=True), str(cert)
    finally:
        await factory.aclose()


async def test_tls_verify_checks_the_chain_and_the_mx_name(named_mx):
    mx, ca = named_mx
    settings = dataclasses.replace(SETTINGS, tls="verify", tls_ca_file=ca)
    client = await connect(mx, settings, host="mx.test")
    assert client.tls_active and client.tls_verified
    res = await client.send("s@a.test", rcpts("a@x.test"), BODY)
    assert res.per_recipient[0].code == 250
    await client.quit()
    # Opportunistic TLS to the same host encrypts without a claim of authentication.
    client = await connect(mx, dataclasses.replace(SETTINGS, tls_ca_file=ca), host="mx.test")
    assert client.tls_active and not client.tls_verified
    await client.quit()


@pytest.mark.parametrize("host, trusted", [("other.test", True), ("mx.test", False)])
async def test_tls_verify_refuses_a_wrong_name_or_an_untrusted_chain(named_mx, host, trusted):
    mx, ca = named_mx
    settings = dataclasses.replace(SETTINGS, tls="verify", tls_ca_file=ca if trusted else "")
    with pytest.raises(SmtpConnectError) as e:
        await connect(mx, settings, host=host)
    # 4.7.5 and no retry in the clear: the pool falls back only when opportunistic.
    assert (e.value.reply.code, e.value.reply.enhanced) == (421, "4.7.5")
    assert "certificate" in e.value.reply.text.lower()
    assert not mx.messages


async def test_tls_verify_without_starttls_is_a_4_7_0_failure(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=False)
    with pytest.raises(SmtpConnectError) as e:
        await connect(mx, dataclasses.replace(SETTINGS, tls="verify"), host="mx.test")
    assert (e.value.reply.code, e.value.reply.enhanced) == (421, "4.7.0")


async def test_rfc3030_bdat_where_the_server_offers_chunking(mx_factory):
    mx = await mx_factory("127.0.0.2", chunking=True)
    body = b"Subject: hi\r\n\r\n.a line with a leading dot\r\n..two\r\n"
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "b@x.test"), body)
    assert [r.code for r in res.per_recipient] == [250, 250]
    (msg,) = await mx.wait_for_messages(1)
    assert msg.body == body and msg.rcpt_tos == ["a@x.test", "b@x.test"]
    assert "BDAT" in mx.commands and "DATA" not in mx.commands
    await client.quit()


async def test_rfc3030_bdat_pipelined_with_refused_recipients_over_one_connection(mx_factory):
    # BDAT goes in the write with MAIL and RCPT: a refused recipient keeps its refusal, a
    # transaction whose every recipient is refused leaves nothing at the MX and is RSET,
    # and the connection carries the next message.
    mx = await mx_factory("127.0.0.2", chunking=True)
    mx.script("gone@x.test", "550 5.1.1 no such user")
    client = await connect(mx)
    res = await client.send("s@a.test", rcpts("a@x.test", "gone@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250, 550]
    res = await client.send("s@a.test", rcpts("gone@x.test"), BODY)
    assert [str(r) for r in res.per_recipient] == ["550 5.1.1 no such user"]
    res = await client.send("s@a.test", rcpts("b@x.test"), BODY)
    assert [r.code for r in res.per_recipient] == [250]
    msgs = await mx.wait_for_messages(2)
    assert [m.rcpt_tos for m in msgs] == [["a@x.test"], ["b@x.test"]]
    assert all(m.body == BODY for m in msgs)
    # The refused BDAT went too (read and refused by the MX), then RSET (RFC 3030 2).
    assert mx.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "BDAT", "MAIL", "RCPT", "BDAT",
                           "RSET", "MAIL", "RCPT", "BDAT"]
    assert len(mx.connections) == 1
    await client.quit()


async def test_chunking_off_sends_data_even_where_offered(mx_factory):
    mx = await mx_factory("127.0.0.2", chunking=True)
    client = await connect(mx, dataclasses.replace(SETTINGS, chunking=False))
    await client.send("s@a.test", rcpts("a@x.test"), BODY)
    (msg,) = await mx.wait_for_messages(1)
    assert msg.body == BODY and "DATA" in mx.commands and "BDAT" not in mx.commands
    await client.quit()
