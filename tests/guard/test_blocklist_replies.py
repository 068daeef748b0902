"""Receivers' replies as a blocklist listing, through the real daemon: three sites' MX
hosts answer "blocked using zen.spamhaus.org" to mail from one egress address (no DNS zone
is watched at all); after the third site the pool shifts its mail to the other address,
the event names the tenant, `mta shaping show` shows the hold, and once the hold is over
(policy time, moved with the clock file) the address is used again. The hold outlives a
restart; two nodes on one Redis count their replies together and follow one hold."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections import Counter

import redis

from mta.smtp.auth import hash_password
from tests.guard.test_identity_smtp import PW
from tests.support.daemon import MtaProcess

T0 = 1_900_000_000  # policy time of the test
SITES = ("d1.test", "d2.test", "d3.test")
ZONES = {d: f"@ IN MX 10 mx.{d}.\nmx IN A 127.0.0.{i + 2}\n" for i, d in enumerate(SITES)}
BLOCKED = ("550 5.7.1 Service unavailable; Client host [127.0.0.10] blocked using "
           "zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.10")
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
reply_threshold = 3
reply_window = "10m"
reply_hold = "1h"
"""


def _set_clock(path, t: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{int(t)}\n")
    tmp.replace(path)


def _send(port: int, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.test")
        s.login("acme", PW)
        s.sendmail("s@acme.test", [rcpt],
                   f"From: s@acme.test\r\nTo: {rcpt}\r\nSubject: hi\r\n\r\nHello.\r\n")


async def _event(mta, name: str, n: int = 1) -> dict:
    found = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == name, 30)
    assert found, f"no {name} event"
    return found[n - 1]


async def _bounced(mta, n: int) -> None:
    def enough() -> bool:
        return len([e for e in mta.events() if e["event"] == "bounced"]) >= n
    await asyncio.to_thread(mta.wait_events, lambda e: enough(), 30)
    assert enough()


async def test_replies_naming_a_blocklist_shift_an_ip_out_for_the_hold(
        tmp_path, dns_server_factory, mx_factory):
    dns = dns_server_factory(ZONES)
    mxs = [await mx_factory(f"127.0.0.{i + 2}") for i in range(len(SITES))]
    for mx in mxs:
        mx.mail_reply_from["127.0.0.10"] = BLOCKED
    clock = tmp_path / "clock"
    _set_clock(clock, T0)
    work = tmp_path / "mta"
    work.mkdir()
    mta = MtaProcess(work, TOML, dns=dns.nameserver, delivery_port=mx_factory.port)
    mta.env["MTA_POLICY_CLOCK"] = str(clock)
    try:
        await asyncio.to_thread(mta.start)
        # Two sites refuse: a signal each, not yet a listing; still sent from a.
        for i, site in enumerate(SITES[:2]):
            await asyncio.to_thread(_send, mta.smtp_port, f"bob@{site}")
            await _bounced(mta, i + 1)
        assert not [e for e in mta.events() if e["event"] == "blocklist_reply"]
        # The third site: the address counts as listed by Spamhaus ZEN, and is shifted.
        await asyncio.to_thread(_send, mta.smtp_port, f"bob@{SITES[2]}")
        ev = await _event(mta, "blocklist_reply")
        assert (ev["source"], ev["ip"], ev["list"], ev["action"]) == (
            "a", "127.0.0.10", "spamhaus-zen", "shift")
        assert len(ev["sites"]) == 3 and "zen.spamhaus.org" in ev["reply"]
        assert ev["tenants"][0]["tenant"] == "acme" and ev["tenants"][0]["bounced"] == 3
        assert ev["until"] == T0 + 3600
        # Mail now leaves from b, and is delivered (the MX only refuses a).
        await asyncio.to_thread(_send, mta.smtp_port, "bob@d1.test")
        await mxs[0].wait_for_messages(1, timeout=30)
        assert [m.peer[0] for m in mxs[0].messages] == ["127.0.0.11"]
        # The shaping explanation of a's path says why a is out, and until when.
        show = await asyncio.to_thread(mta.cli, "shaping", "show", ev["sites"][0],
                                       "--source", "a", "--json")
        assert show.returncode == 0, show.stderr
        hold = json.loads(show.stdout)["egress"]["blocklist"]["reply_hold"]
        assert hold["list"] == "spamhaus-zen" and hold["until"] == T0 + 3600
        text = await asyncio.to_thread(mta.cli, "shaping", "show", ev["sites"][0],
                                       "--source", "a")
        assert "replies of 3 sites name spamhaus-zen: shift until" in text.stdout
        # The hold is kept in the policy store: a restart does not bring a back early.
        assert mta.terminate() == 0
        await asyncio.to_thread(mta.start)
        await asyncio.to_thread(_send, mta.smtp_port, "bob@d3.test")
        await mxs[2].wait_for_messages(1, timeout=30)
        assert [m.peer[0] for m in mxs[2].messages] == ["127.0.0.11"]

        # The hold is over (policy time): a is used again, its reputation watched anew.
        for mx in mxs:
            mx.mail_reply_from.clear()
        _set_clock(clock, T0 + 3600 + 1)
        cleared = await _event(mta, "blocklist_reply_cleared")
        assert cleared["source"] == "a" and cleared["list"] == "spamhaus-zen"
        await asyncio.to_thread(_send, mta.smtp_port, "bob@d2.test")
        await mxs[1].wait_for_messages(1, timeout=30)
        assert [m.peer[0] for m in mxs[1].messages] == ["127.0.0.10"]
    finally:
        mta.kill()


async def test_two_nodes_count_replies_together_and_share_the_hold(
        tmp_path, dns_server_factory, mx_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/4"  # this file's Redis database, flushed first
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    dns = dns_server_factory(ZONES)
    mxs = [await mx_factory(f"127.0.0.{i + 2}") for i in range(len(SITES))]
    for mx in mxs:
        mx.mail_reply_from["127.0.0.10"] = BLOCKED
    clock = tmp_path / "clock"
    _set_clock(clock, T0)
    nodes = []
    for i in range(2):
        work = tmp_path / f"node{i}"
        work.mkdir()
        node = MtaProcess(work, f'[cluster]\nredis_url = "{url}"\n' + TOML,
                          dns=dns.nameserver, delivery_port=mx_factory.port)
        node.env["MTA_POLICY_CLOCK"] = str(clock)
        nodes.append(node)
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        one, two = nodes
        # Two sites refuse node one's mail, the third node two's: one count of three.
        for i, site in enumerate(SITES[:2]):
            await asyncio.to_thread(_send, one.smtp_port, f"bob@{site}")
            await _bounced(one, i + 1)
        await asyncio.to_thread(_send, two.smtp_port, f"bob@{SITES[2]}")
        ev = await _event(two, "blocklist_reply")
        assert ev["source"] == "a" and len(ev["sites"]) == 3
        # Node one follows the hold within a second or so: wait until it sends from b.
        await asyncio.to_thread(_wait_shown, one)
        for node in nodes:
            await asyncio.to_thread(_send, node.smtp_port, "bob@d1.test")
        await mxs[0].wait_for_messages(2, timeout=30)
        assert Counter(m.peer[0] for m in mxs[0].messages) == {"127.0.0.11": 2}

        for mx in mxs:
            mx.mail_reply_from.clear()
        _set_clock(clock, T0 + 3600 + 1)
        for node in nodes:
            await asyncio.to_thread(_wait_shown, node, False)
        cleared = await asyncio.to_thread(_cleared, nodes)
        assert len(cleared) == 1 and cleared[0]["source"] == "a"  # one hold, ended once
        for node in nodes:
            await asyncio.to_thread(_send, node.smtp_port, "bob@d2.test")
        await mxs[1].wait_for_messages(2, timeout=30)
        assert Counter(m.peer[0] for m in mxs[1].messages) == {"127.0.0.10": 2}
    finally:
        for node in nodes:
            node.kill()


def _cleared(nodes, timeout: float = 20.0) -> list[dict]:
    """The blocklist_reply_cleared events of all nodes, once there is one (logs are
    flushed a moment after the event)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for n in nodes for e in n.events() if e["event"] ==
                 "blocklist_reply_cleared"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _wait_shown(node, held: bool = True, timeout: float = 20.0) -> None:
    """Until `mta shaping show` of node's source a shows (or no longer shows) a reply hold."""
    deadline = time.monotonic() + timeout
    while True:
        proc = node.cli("shaping", "show", "d1.test", "--source", "a", "--json")
        assert proc.returncode == 0, proc.stderr
        bl = json.loads(proc.stdout)["egress"].get("blocklist") or {}
        if bool(bl.get("reply_hold")) == held:
            return
        assert time.monotonic() < deadline, bl
        time.sleep(0.2)
