"""Blocklist watch through the real daemon: the test DNS server serves a DNSxL zone; once
an egress address is listed there the pool shifts its mail to the other source within an
interval, the event names the tenant that sent from it, and N clean checks bring it back."""

from __future__ import annotations

import asyncio
from collections import Counter

from mta.smtp.auth import hash_password
from tests.guard.test_identity_smtp import PW, _try

BASE = {"dest.test": "@ IN MX 10 mx1.dest.test.\nmx1 IN A 127.0.0.2\n",
        "bl.test": "@ IN TXT \"test blocklist\"\n"}
LISTED = {**BASE, "bl.test": BASE["bl.test"] + "10.0.0.127 IN A 127.0.0.2\n"
                                               "10.0.0.127 IN TXT \"listed for a test\"\n"}
TOML = f"""
[tenants.acme]
[users.acme]
tenant = "acme"
password = "{hash_password(PW, ln=10)}"

[[egress.source]]
name = "a"
address = "127.0.0.10"
[[egress.source]]
name = "b"
address = "127.0.0.11"
[egress.pool.default]
sources = {{ a = 1, b = 0.000001 }}

[dnsbl]
zones = ["bl.test"]
interval = "0.2s"
clean_checks = 2
"""


async def _send(mx, port: int, n: int) -> list[str]:
    """n messages of tenant acme, one at a time, each delivered: the peers they came from."""
    before = len(mx.messages)
    for i in range(n):
        code, text = await asyncio.to_thread(_try, port, "s@acme.test", "s@acme.test")
        assert code == 250, text
        await mx.wait_for_messages(before + i + 1, timeout=30)
    return [m.peer[0] for m in mx.messages[before:]]


async def _event(mta, name: str) -> dict:
    found = await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == name, 30)
    assert found, f"no {name} event"
    return found[0]


async def test_a_listed_egress_ip_is_shifted_out_and_back(mta_factory, dns_server_factory,
                                                          mx_factory):
    dns = dns_server_factory(BASE)
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(mta_factory, TOML, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    assert await _send(mx, mta.smtp_port, 2) == ["127.0.0.10"] * 2

    await asyncio.to_thread(dns.set_zones, LISTED)
    ev = await _event(mta, "dnsbl_listed")
    assert (ev["ip"], ev["source"], ev["zone"], ev["code"], ev["action"]) == (
        "127.0.0.10", "a", "bl.test", "127.0.0.2", "shift")
    assert ev["tenants"][0]["tenant"] == "acme" and ev["tenants"][0]["messages"] == 2
    assert Counter(await _send(mx, mta.smtp_port, 3)) == {"127.0.0.11": 3}

    await asyncio.to_thread(dns.set_zones, BASE)
    ev = await _event(mta, "dnsbl_delisted")
    assert ev["source"] == "a" and ev["zones"] == ["bl.test"]
    assert await _send(mx, mta.smtp_port, 1) == ["127.0.0.10"]
