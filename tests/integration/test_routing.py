"""Routing is decided once, by policy, and delivery follows it: the egress pool a message
leaves from is the one its tenant chain names (the tenant's own, else its nearest
ancestor's), as the receiver sees it from the peer address of the connection."""

from __future__ import annotations

import asyncio
import smtplib
from collections import Counter

from mta.smtp.auth import hash_password

PW = "pw-123456"
ZONES = {
    "dest.test": """
@       IN MX 10 mx.dest.test.
mx      IN A 127.0.0.4
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
