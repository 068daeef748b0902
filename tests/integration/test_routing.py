"""Routing is decided once, by policy, and delivery follows it: the egress pool a message
leaves from is the one its tenant chain names (the tenant's own, else its nearest
ancestor's), as the receiver sees it from the peer address of the connection."""

from __future__ import annotations

import asyncio
import re
import smtplib
import sqlite3
from collections import Counter

from mta.smtp.auth import hash_password

PW = "pw-123456"
ZONES = {
    "dest.test": """
@       IN MX 10 mx.dest.test.
mx      IN A 127.0.0.4
""",
    "sender.test": """
@       IN MX 10 mx.sender.test.
mx      IN A 127.0.0.6
""",
}
DELIVERY = 'retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"\nidle_timeout = "2s"'


def _config() -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[[egress.source]]
name = "shared"
address = "127.0.0.10"

[[egress.source]]
name = "bulk1"
address = "127.0.0.11"

[egress.pool.default]
sources = {{ shared = 1 }}

[egress.pool.bulk]
sources = {{ bulk1 = 1 }}

[tenants.agency]
pool = "bulk"
[tenants.client]
parent = "agency"

[users.agency]
tenant = "agency"
password = "{pw}"
[users.client]
tenant = "client"
password = "{pw}"
"""


def _send(port: int, user: str, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.login(user, PW)
        for i, rcpt in enumerate(rcpts):
            s.mail("s@sender.test")
            assert s.rcpt(rcpt)[0] == 250
            code, reply = s.data(f"From: s@sender.test\r\nTo: {rcpt}\r\n"
                                 f"Subject: {user}{i}\r\n\r\nbody\r\n".encode())
            assert code == 250, reply


async def test_sub_account_mail_leaves_from_its_parents_pool(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, _config(), dns=dns.nameserver,
                                  delivery_port=mx_factory.port, delivery_extra=DELIVERY)
    await asyncio.to_thread(_send, mta.smtp_port, "agency", ["a1@dest.test", "a2@dest.test"])
    await asyncio.to_thread(_send, mta.smtp_port, "client", ["c1@dest.test", "c2@dest.test"])
    await mx.wait_for_messages(4, timeout=20)
    by_peer = Counter((m.rcpt_tos[0][0], m.peer[0]) for m in mx.messages)
    # The parent's pool "bulk" (source 127.0.0.11) carries the sub-account's mail too.
    assert by_peer == {("a", "127.0.0.11"): 2, ("c", "127.0.0.11"): 2}, by_peer


async def test_mail_queued_before_the_upgrade_is_routed_from_its_tenant(
        mta_factory, dns_server_factory, mx_factory):
    """A message from a spool without the routing column (pool '') takes the pool its
    tenant chain names, as policy would have decided it."""
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory(ZONES)
    # First run: DNS points at a closed port, so the mail stays queued.
    mta = await asyncio.to_thread(mta_factory, _config(), delivery_port=mx_factory.port,
                                  delivery_extra=DELIVERY)
    await asyncio.to_thread(_send, mta.smtp_port, "client", ["c1@dest.test"])
    assert await asyncio.to_thread(mta.terminate) == 0
    db = sqlite3.connect(mta.workdir / "spool" / "spool-00.sqlite")
    try:
        with db:
            assert db.execute("UPDATE messages SET pool = ''").rowcount == 1
    finally:
        db.close()
    text = mta.config_path.read_text()
    mta.config_path.write_text(re.sub(r"nameservers = \[.*\]",
                                      f'nameservers = ["{dns.nameserver}"]', text))
    await asyncio.to_thread(mta.start)
    await mx.wait_for_messages(1, timeout=20)
    assert [m.peer[0] for m in mx.messages] == ["127.0.0.11"]


async def test_a_bounce_dsn_goes_back_through_the_same_pool(
        mta_factory, dns_server_factory, mx_factory):
    """The DSN delivery writes (through the daemon's DsnSink) carries the message's
    routing: the sub-account's bounce leaves from its parent's pool too."""
    mx = await mx_factory("127.0.0.4")
    sender = await mx_factory("127.0.0.6")
    mx.script("bad@dest.test", "550 5.1.1 no such user")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, _config(), dns=dns.nameserver,
                                  delivery_port=mx_factory.port, delivery_extra=DELIVERY)
    await asyncio.to_thread(_send, mta.smtp_port, "client", ["bad@dest.test"])
    await sender.wait_for_messages(1, timeout=20)
    [dsn] = sender.messages
    assert (dsn.mail_from, dsn.rcpt_tos, dsn.peer[0]) == ("<>", ["s@sender.test"],
                                                          "127.0.0.11")
    assert b"5.1.1" in dsn.body


async def test_a_suspended_parent_holds_its_sub_accounts_mail_until_resumed(
        mta_factory, dns_server_factory, mx_factory):
    """The tenant chain travels on the envelope: `mta shaping suspend tenant agency`
    holds the mail of its sub-account too (queued, explained), also across a restart,
    and resuming sends it; another tenant is not held."""
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, _config(), dns=dns.nameserver,
                                  delivery_port=mx_factory.port, delivery_extra=DELIVERY)
    proc = await asyncio.to_thread(mta.cli, "shaping", "suspend", "tenant", "agency",
                                   "--reason", "complaints")
    assert proc.returncode == 0, proc.stderr
    await asyncio.to_thread(_send, mta.smtp_port, "client", ["c1@dest.test"])
    db = sqlite3.connect(mta.workdir / "spool" / "spool-00.sqlite")
    try:
        assert db.execute("SELECT tenant, parents FROM messages").fetchall() == [
            ("client", "agency")]
        [(msg_id,)] = db.execute("SELECT id FROM messages").fetchall()
    finally:
        db.close()
    await asyncio.sleep(1.5)
    assert mx.messages == []
    proc = await asyncio.to_thread(mta.cli, "queue", "explain", msg_id)
    assert proc.returncode == 0, proc.stderr
    assert "suspension of tenant agency: complaints" in proc.stdout, proc.stdout
    # Across a restart: the chain is read back from the spool.
    assert await asyncio.to_thread(mta.terminate) == 0
    await asyncio.to_thread(mta.start)
    await asyncio.sleep(1.5)
    assert mx.messages == []
    proc = await asyncio.to_thread(mta.cli, "shaping", "resume", "tenant", "agency")
    assert proc.returncode == 0, proc.stderr
    await mx.wait_for_messages(1, timeout=20)
    assert [m.rcpt_tos for m in mx.messages] == [["c1@dest.test"]]
