"""Traffic shaping end to end: the real daemon delivers to real SMTP servers on 127.0.0.x,
found through a real DNS server, and the destinations record what a receiver sees: the
peer address of every connection, how many are open over time, and when each message
arrives. Each test configures one limit the way an operator writes it and checks it holds
from the receiver's side, within a stated tolerance.

Timing tolerance: rates are checked over 3 s spans at +-25% (a 2-core machine shared with
other test runs; the GCRA pace itself is exact, the slack is for scheduling).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import smtplib
import socket
import time
import urllib.request
from collections import Counter

# $TTL and the SOA (negative TTL 60 s) come from tests/support/dnsserver.py.
ZONES = {
    "dest.test": """
@       IN MX 10 mx1.dest.test.
@       IN MX 20 mx2.dest.test.
mx1     IN A 127.0.0.2
mx2     IN A 127.0.0.3
""",
    "other.test": """
@       IN MX 10 mx.other.test.
mx      IN A 127.0.0.4
""",
    "throttled.test": """
@       IN MX 10 mx.throttled.test.
mx      IN A 127.0.0.5
""",
    "dead.test": """
@       IN MX 10 mx.dead.test.
mx      IN A 127.0.0.20
""",
    "sender.test": """
@       IN MX 10 mx.sender.test.
mx      IN A 127.0.0.6
""",
}

TOLERANCE = 0.25
DELIVERY = 'retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"\nidle_timeout = "2s"'
SOURCES = """
[[egress.source]]
name = "a"
address = "127.0.0.10"
ehlo_name = "a.mta.test"

[[egress.source]]
name = "b"
address = "127.0.0.11"
ehlo_name = "b.mta.test"
"""


def _inject(port: int, rcpts: list[str], tag: str = "m") -> list[str]:
    """One SMTP session, one message per recipient (as a sending platform relays them);
    returns the queue ids."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        for i, rcpt in enumerate(rcpts):
            s.mail("s@sender.test")
            assert s.rcpt(rcpt)[0] == 250
            code, reply = s.data(
                f"From: s@sender.test\r\nTo: {rcpt}\r\nSubject: {tag}{i}\r\n"
                f"Message-ID: <{tag}{i}@sender.test>\r\n\r\nbody {i}\r\n".encode())
            assert code == 250, reply
            ids.append(reply.decode().rsplit(" ", 1)[1])
    return ids


async def _start(mta_factory, dns_server_factory, mx_factory, extra_toml: str = "",
                 delivery: str = DELIVERY):
    dns = dns_server_factory(ZONES)
    return await asyncio.to_thread(mta_factory, extra_toml, dns=dns.nameserver,
                                   delivery_port=mx_factory.port, delivery_extra=delivery)


async def _send(mta, rcpts: list[str], tag: str = "m") -> list[str]:
    return await asyncio.to_thread(_inject, mta.smtp_port, rcpts, tag)


async def _explain(mta, msg_id: str) -> dict:
    proc = await asyncio.to_thread(mta.cli, "queue", "explain", msg_id)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def _wait_for(predicate, timeout: float, what: str) -> None:
    """Poll (bounded) until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _max_overlap(conns, peer_ip: str | None = None) -> int:
    """Most connections open at once (from one peer address, if given)."""
    marks = []
    for c in conns:
        if peer_ip is None or c.peer[0] == peer_ip:
            marks.append((c.opened_at, 1))
            marks.append((c.closed_at if c.closed_at is not None else float("inf"), -1))
    best = n = 0
    for _, d in sorted(marks, key=lambda m: (m[0], m[1])):  # a close before an open
        n += d
        best = max(best, n)
    return best


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _within(measured: float, expected: float) -> bool:
    return expected * (1 - TOLERANCE) <= measured <= expected * (1 + TOLERANCE)


# --- limits per path -----------------------------------------------------------------------

async def test_message_rate_and_connection_limit_hold_at_the_receiver(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2", delay=0.03)  # slow enough for connections to overlap
    mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[shaping."dest.test"]
connection_limit = 3
max_message_rate = "20/s burst 1"
""")
    await _send(mta, [f"r{i}@dest.test" for i in range(60)])
    await mx1.wait_for_messages(60, timeout=20)
    arrivals = sorted(m.arrived_at for m in mx1.messages)
    span = arrivals[-1] - arrivals[0]
    # "20/s burst 1": 59 intervals of 50 ms after the first message, 2.95 s.
    assert _within(span, 59 / 20), f"60 messages took {span:.2f}s, expected 2.95s +-25%"
    assert mx1.max_concurrent <= 3
    assert len(mx1.connections) <= 6  # pooled: reused, not one per message
    metrics = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{mta.http_port}/metrics")
    assert 'mta_throttle_delay_seconds_count{limit="max_message_rate"}' in metrics


async def test_connection_rate_holds_for_new_connections(mta_factory, dns_server_factory,
                                                         mx_factory):
    mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[shaping."other.test"]
max_connection_rate = "5/s burst 1"
max_deliveries_per_connection = 1
""")
    await _send(mta, [f"r{i}@other.test" for i in range(15)])
    await mx.wait_for_messages(15, timeout=20)
    opened = sorted(c.opened_at for c in mx.connections)
    assert len(opened) == 15  # one message per connection
    span = opened[-1] - opened[0]
    assert _within(span, 14 / 5), f"15 connections took {span:.2f}s, expected 2.8s +-25%"


async def test_layers_default_then_site_then_site_source(mta_factory, dns_server_factory,
                                                         mx_factory):
    # 0.6 s per message at the receiver (0.2 s before each of MAIL, RCPT, DATA): one session
    # injects far faster than 3 connections drain, so every allowed connection is needed
    # even on a loaded machine; at 0.05 s a slow injection kept source a at 2.
    mx1 = await mx_factory("127.0.0.2", delay=0.2)
    other = await mx_factory("127.0.0.4", delay=0.2)
    mta = await _start(mta_factory, dns_server_factory, mx_factory, SOURCES + """
[shaping.default]
connection_limit = 1

[shaping."dest.test"]
connection_limit = 3

[shaping."dest.test".source.b]
connection_limit = 2
""")
    await asyncio.gather(_send(mta, [f"r{i}@dest.test" for i in range(40)], "d"),
                         _send(mta, [f"r{i}@other.test" for i in range(10)], "o"))
    await mx1.wait_for_messages(40, timeout=30)
    await other.wait_for_messages(10, timeout=30)
    # Limits are per path (source -> site): default -> 1 per source; "dest.test" -> 3
    # from a; "dest.test".source.b -> 2 from b.
    assert _max_overlap(other.connections, "127.0.0.10") == 1
    assert _max_overlap(other.connections, "127.0.0.11") == 1
    assert _max_overlap(mx1.connections, "127.0.0.10") == 3
    assert _max_overlap(mx1.connections, "127.0.0.11") == 2


# --- egress ----------------------------------------------------------------------------------

async def test_a_source_s_tls_rule_holds_for_every_site_unless_a_site_says_otherwise(
        mta_factory, dns_server_factory, mx_factory):
    # TLS per egress source: [shaping.default.source.a] makes every site's mail from a need
    # STARTTLS; [shaping."dest.test".source.a] relaxes it for that site only. Neither test
    # MX offers STARTTLS, so "required" defers and "opportunistic" delivers in the clear.
    other = await mx_factory("127.0.0.4")
    mx1 = await mx_factory("127.0.0.2")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, SOURCES + """
[egress.pool.default]
sources = { a = 1 }

[shaping.default.source.a]
tls = "required"

[shaping."dest.test".source.a]
tls = "opportunistic"
""")
    (held,) = await _send(mta, ["r@other.test"], "strict")
    (sent,) = await _send(mta, ["r@dest.test"], "relaxed")
    await mx1.wait_for_messages(1, timeout=15)
    assert [m.peer[0] for m in mx1.messages] == ["127.0.0.10"]

    def deferred() -> bool:
        return any(e["event"] == "deferred" and e["id"] == held for e in mta.events())
    await _wait_for(deferred, 15, "the deferral of the mail that needs TLS")
    (d, *_) = [e for e in mta.events() if e["event"] == "deferred" and e["id"] == held]
    assert d["reply"].startswith("421 4.7") and "STARTTLS" in d["reply"], d["reply"]
    assert other.messages == []
    # Both what delivery waits for and the layer the rule came from are shown.
    (r,) = (await _explain(mta, held))["recipients"]
    assert r["waiting_for"] == "retry" and "STARTTLS" in r["last_reply"]
    for site, tls, layer in (("other.test", "required", "default.source.a"),
                             ("dest.test", "opportunistic", "dest.test.source.a")):
        proc = await asyncio.to_thread(mta.cli, "shaping", "show", site, "--source", "a",
                                       "--json")
        assert json.loads(proc.stdout)["rules"]["tls"] == {"value": tls, "from": layer}
    assert sent not in {e["id"] for e in mta.events() if e["event"] == "deferred"}


async def test_receiver_sees_the_configured_source_addresses_split_by_weight(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, SOURCES + """
[egress.pool.default]
sources = { a = 3, b = 1 }
""")
    n = 120
    await _send(mta, [f"r{i}@other.test" for i in range(n)])
    await mx.wait_for_messages(n, timeout=30)
    by_peer = Counter(m.peer[0] for m in mx.messages)
    assert set(by_peer) <= {"127.0.0.10", "127.0.0.11"}
    # Weighted random pick: expected 90 from a; +-4 standard deviations (4.7) is +-19.
    assert 71 <= by_peer["127.0.0.10"] <= 109, by_peer
    ehlo = {c.peer[0]: c.ehlo for c in mx.connections}
    assert ehlo == {"127.0.0.10": "a.mta.test", "127.0.0.11": "b.mta.test"}


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


async def test_warmup_cap_of_day_one_sends_the_rest_from_the_other_source(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, f"""
[[egress.source]]
name = "a"
address = "127.0.0.10"
warmup = [5, 50]
warmup_start = "{_today()}"

[[egress.source]]
name = "b"
address = "127.0.0.11"

[egress.pool.default]
sources = {{ a = 100, b = 1 }}
""")
    await _send(mta, [f"r{i}@other.test" for i in range(20)])
    await mx.wait_for_messages(20, timeout=20)
    by_peer = Counter(m.peer[0] for m in mx.messages)
    assert by_peer == {"127.0.0.10": 5, "127.0.0.11": 15}


async def test_explain_names_the_warmup_cap_until_the_next_utc_day(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, f"""
[[egress.source]]
name = "a"
address = "127.0.0.10"
warmup = [2]
warmup_start = "{_today()}"
""")
    ids = await _send(mta, [f"r{i}@other.test" for i in range(3)])
    await mx.wait_for_messages(2, timeout=15)
    await asyncio.sleep(0.3)  # the third is put back in the schedule
    assert len(mx.messages) == 2
    tomorrow = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1),
                                   dt.time(), dt.UTC).timestamp()
    explained = [(await _explain(mta, i))["recipients"][0] for i in ids]
    waiting = [r for r in explained if r["state"] == "queued"]
    assert len(waiting) == 1
    [r] = waiting
    assert r["waiting_for"] == "warmup_cap"
    assert r["until"] == tomorrow
    assert "sent 2 of its warm-up cap of 2" in r["detail"]


# --- explain ---------------------------------------------------------------------------------

async def test_explain_names_the_rate_the_connection_limit_and_the_retry(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    other = await mx_factory("127.0.0.4")
    other.script("slow0@other.test", "250 2.1.5 Ok", delay=3.0)  # holds the one connection
    other.script("later@other.test", "451 4.3.0 try again later")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[shaping."dest.test"]
max_message_rate = "1/m burst 1"

[shaping."other.test"]
connection_limit = 1
""", delivery='retry = ["1h"]\nmax_age = "1d"\nconnect_timeout = "3s"')
    _, second = await _send(mta, ["a@dest.test", "b@dest.test"], "rate")
    busy, waiting = await _send(mta, ["slow0@other.test", "next@other.test"], "conn")
    await mx1.wait_for_messages(1, timeout=15)
    t_first = time.time()
    await _wait_for(lambda: other.open_connections == 1 and "RCPT" in other.commands, 10,
                    "the slow transaction")

    rate = (await _explain(mta, second))["recipients"][0]
    assert rate["waiting_for"] == "max_message_rate"
    # "1/m burst 1": the next message 60 s after the first (+-2 s for the test's own steps).
    assert abs(rate["until"] - (t_first + 60)) < 2.0, rate
    assert rate["detail"].startswith("max_message_rate 1/m on ")  # burst 1 = limit: "1/m"

    conn = (await _explain(mta, waiting))["recipients"][0]
    assert conn["waiting_for"] == "connection_limit", conn
    assert conn["until"] is None
    assert "1 of 1 connection(s)" in conn["detail"]

    sending = (await _explain(mta, busy))["recipients"][0]
    assert sending["waiting_for"] == "sending"

    [deferred_id] = await _send(mta, ["later@other.test"], "retry")
    assert await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "deferred", 15)
    retry = (await _explain(mta, deferred_id))["recipients"][0]
    assert retry["waiting_for"] == "retry", retry
    assert 3600 * 0.9 - 15 < retry["until"] - time.time() <= 3600 * 1.1  # "1h" +-10% jitter
    assert "451 4.3.0" in retry["detail"]


# --- feedback from the receiver ------------------------------------------------------------

async def test_421_slows_down_suspends_the_path_and_recovers_gradually(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.5", delay=0.05)
    mx.default_rcpt = "421 4.7.0 Try again later, closing connection"
    mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[shaping."throttled.test"]
connection_limit = 4
suspend_after = 3
suspend_duration = "2s"
""")
    ids = await _send(mta, [f"r{i}@throttled.test" for i in range(20)])
    suspended = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "shaping" and e["kind"] == "suspend", 15)
    assert suspended, mta.events()
    s = suspended[0]
    assert s["category"] == "rate_limited" and s["reply"].startswith("421 4.7.0")
    assert s["source"] == "default" and s["site"] == "mx.throttled.test"
    assert abs(s["until"] - (s["time"] + 2.0)) < 0.01
    decrease = [e for e in mta.events() if e["event"] == "shaping" and e["kind"] == "decrease"]
    assert decrease and decrease[0]["window"] == 2  # 4 halved at the first 421

    # While the dead-site timer runs, nothing reaches the receiver and explain says why.
    mx.default_rcpt = "250 2.1.5 Ok"
    offset = time.time() - time.monotonic()  # events use wall-clock time, the MX monotonic
    held = [r for i in ids for r in (await _explain(mta, i))["recipients"]
            if r["state"] == "queued"]
    during = [r for r in held if r["waiting_for"] == "suspension"]
    assert during, held
    assert during[0]["until"] == s["until"] and "dead-site timer" in during[0]["detail"]

    await mx.wait_for_messages(20, timeout=20)
    opened_while_dead = [c for c in mx.connections
                         if s["time"] + 0.05 < c.opened_at + offset < s["until"] - 0.05]
    assert not opened_while_dead

    # Recovery is gradual: window 1 after the timer, then +1 per window's worth of
    # successes, never above connection_limit.
    await asyncio.to_thread(mta.wait_events, lambda e: e.get("kind") == "increase"
                            and e["window"] == 4, 10)
    changes = [e for e in mta.events() if e["event"] == "shaping"]
    kinds = [e["kind"] for e in changes]
    assert kinds.index("suspend") < kinds.index("resume") < kinds.index("increase")
    resume = changes[kinds.index("resume")]
    assert resume["window"] == 1 and resume["time"] >= s["until"] - 0.01
    windows = [e["window"] for e in changes[kinds.index("resume"):] if e["kind"] == "increase"]
    assert windows[:3] == [2, 3, 4]
    after = [c for c in mx.connections if c.opened_at + offset >= s["until"]]
    assert _max_overlap(after) <= 4
    first_after = min(after, key=lambda c: c.opened_at)
    assert _max_overlap([c for c in after if c.opened_at <= first_after.opened_at]) == 1


async def test_a_dead_site_does_not_delay_a_healthy_one(mta_factory, dns_server_factory,
                                                       mx_factory):
    healthy = await mx_factory("127.0.0.4")
    # The dead site's MX accepts TCP connections (the kernel does) and never says a word.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.20", mx_factory.port))
    blackhole.listen(64)
    try:
        mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[shaping."dead.test"]
greeting_timeout = "20s"
""")
        await _send(mta, [f"r{i}@dead.test" for i in range(30)], "dead")
        t0 = time.monotonic()
        await _send(mta, [f"r{i}@other.test" for i in range(10)], "ok")
        await healthy.wait_for_messages(10, timeout=15)
        # Delivered at once: the dead site's 20 s greeting timeouts are not in the way
        # (3 s covers the 10 deliveries on a loaded machine).
        assert time.monotonic() - t0 < 3.0
        dead = [e for e in mta.events() if e.get("recipient", "").endswith("@dead.test")
                and e["event"] in ("delivered", "deferred", "bounced")]
        assert not dead  # still waiting for a greeting
    finally:
        blackhole.close()


def test_suspensions_survive_a_restart(mta_factory):
    mta = mta_factory()
    proc = mta.cli("shaping", "suspend", "site", "slow.example", "--reason", "complaints",
                   "--duration", "1h")
    assert proc.returncode == 0, proc.stderr
    assert mta.terminate() == 0
    mta.start()
    listed = mta.cli("shaping", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [s] = json.loads(listed.stdout)
    assert (s["scope"], s["name"], s["reason"]) == ("site", "slow.example", "complaints")


async def test_throttle_state_is_shared_through_redis(mta_factory, dns_server_factory,
                                                      mx_factory, redis_url):
    """[cluster] redis_url: message-rate counters live in Redis, where every node sees
    them (KumoMTA's throttle crate keeps them the same way)."""
    import redis.asyncio as aioredis

    mx = await mx_factory("127.0.0.2")
    dns = dns_server_factory({"dest.test": "@ MX 10 mx1\nmx1 A 127.0.0.2\n"})
    mta = await asyncio.to_thread(
        mta_factory, f'[cluster]\nredis_url = "{redis_url}"\n'
                     '[shaping.default]\nmax_message_rate = "100/s"\n',
        dns=dns.nameserver, delivery_port=mx_factory.port)
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.sendmail("a@sender.test", ["b@dest.test"], b"Subject: x\r\n\r\nhi\r\n")
    await mx.wait_for_messages(1, timeout=15)
    client = aioredis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter("mta:shaping:*")]
    finally:
        await client.aclose()
    assert any("msg:" in k for k in keys), keys


async def test_a_global_rate_holds_across_sites(mta_factory, dns_server_factory,
                                               mx_factory):
    """[rate_limits] global_message_rate counts every message, whatever its site."""
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    mx_other = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       '[rate_limits]\nglobal_message_rate = "20/s burst 1"\n')
    await _send(mta, [f"d{i}@dest.test" for i in range(20)] +
                [f"o{i}@other.test" for i in range(20)])
    await mx1.wait_for_messages(20, timeout=30)
    await mx_other.wait_for_messages(20, timeout=30)
    arrivals = sorted(m.arrived_at for mx in (mx1, mx_other) for m in mx.messages)
    # 40 messages at 20/s over both sites: 39 intervals of 50 ms, 1.95 s (each site alone
    # would take 0.95 s).
    assert _within(arrivals[-1] - arrivals[0], 39 / 20), \
        f"40 messages in {arrivals[-1] - arrivals[0]:.2f}s, expected 1.95s +-25%"


async def test_a_provider_rate_named_by_domain_holds_on_its_site(
        mta_factory, dns_server_factory, mx_factory):
    """A provider key ("other.test") applies to its MX site, across sources; other sites
    are not held by it."""
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    mx_other = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       '[rate_limits]\nprovider_message_rate = { "other.test" = "5/s burst 1" }\n')
    await _send(mta, [f"o{i}@other.test" for i in range(10)] +
                [f"d{i}@dest.test" for i in range(10)])
    await mx_other.wait_for_messages(10, timeout=30)
    await mx1.wait_for_messages(10, timeout=30)
    other = sorted(m.arrived_at for m in mx_other.messages)
    # 10 messages at 5/s: 9 intervals of 200 ms, 1.8 s.
    assert _within(other[-1] - other[0], 9 / 5), f"other.test took {other[-1] - other[0]:.2f}s"
    dest = sorted(m.arrived_at for m in mx1.messages)
    assert dest[-1] - dest[0] < 1.0  # dest.test is not under the provider's rate


async def test_a_tenant_rate_holds(mta_factory, dns_server_factory, mx_factory):
    """[rate_limits] tenant_message_rate: tenant "default" (relayed from loopback) is
    paced at its rate, and the wait is counted under the limit's name."""
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       '[rate_limits]\ntenant_message_rate = "10/s burst 1"\n')
    await _send(mta, [f"t{i}@dest.test" for i in range(15)])
    await mx1.wait_for_messages(15, timeout=30)
    arrivals = sorted(m.arrived_at for m in mx1.messages)
    # 15 messages at 10/s: 14 intervals of 100 ms, 1.4 s.
    assert _within(arrivals[-1] - arrivals[0], 14 / 10)
    metrics = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{mta.http_port}/metrics")
    assert 'mta_throttle_delay_seconds_count{limit="tenant_message_rate"}' in metrics
