"""More of the blocklist watch: a receiver's reply naming a blocklist is an event and
starts a check at once (the interval is an hour here); zones added by SIGHUP are watched
without a restart; a delisted address comes back gradually (its share ramps up)."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter

from mta.clock import ManualClock
from mta.config.sections import EgressConfig, EgressPoolConfig, EgressSourceConfig
from mta.shaping.egress import Egress
from tests.guard.test_dnsbl import BASE, LISTED, TOML, _event
from tests.guard.test_identity_smtp import _try

SLOW = TOML.replace('interval = "0.2s"', 'interval = "1h"')


async def test_a_reply_naming_a_blocklist_starts_a_check_at_once(mta_factory,
                                                                  dns_server_factory,
                                                                  mx_factory):
    dns = dns_server_factory(BASE)
    mx = await mx_factory("127.0.0.2")
    mx.script("bob@dest.test", "554 5.7.1 Service unavailable; Client host [127.0.0.10] "
                               "blocked using bl.test")
    mta = await asyncio.to_thread(mta_factory, SLOW, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    await asyncio.sleep(0.5)  # the first round (clean) is done: the next is an hour away
    await asyncio.to_thread(dns.set_zones, LISTED)
    code, text = await asyncio.to_thread(_try, mta.smtp_port, "s@acme.test", "s@acme.test")
    assert code == 250, text
    ev = await _event(mta, "dnsbl_reply")
    assert ev["source"] == "a" and ev["ip"] == "127.0.0.10" and "bl.test" in ev["reply"]
    assert ev["tenant"] == "acme" and ev["checking"] is True
    listed = await _event(mta, "dnsbl_listed")
    assert listed["ip"] == "127.0.0.10" and listed["zone"] == "bl.test"


async def test_zones_added_by_sighup_are_watched(mta_factory, dns_server_factory, mx_factory):
    dns = dns_server_factory(LISTED)
    await mx_factory("127.0.0.2")
    no_watch = TOML[:TOML.index("[dnsbl]")]
    mta = await asyncio.to_thread(mta_factory, no_watch, dns=dns.nameserver,
                                  delivery_port=mx_factory.port)
    await asyncio.sleep(0.5)
    assert not mta.events() or not [e for e in mta.events() if e["event"] == "dnsbl_listed"]
    mta.config_path.write_text(mta.config_path.read_text() + TOML[TOML.index("[dnsbl]"):])
    assert mta.proc is not None
    mta.proc.send_signal(signal.SIGHUP)
    ev = await _event(mta, "dnsbl_listed")
    assert ev["source"] == "a" and ev["zone"] == "bl.test"


def test_a_delisted_source_ramps_back_up():
    clock = ManualClock()
    cfg = EgressConfig(source=[EgressSourceConfig(name="a", address="127.0.0.10"),
                               EgressSourceConfig(name="b", address="127.0.0.11")],
                       pool={"default": EgressPoolConfig(sources={"a": 1.0, "b": 1.0})})
    egress = Egress(cfg, clock)

    def share_of_a() -> float:
        rng = random.Random(7)
        picks = Counter(egress.choose("default", rng).name for _ in range(4000))
        return picks["a"] / 4000

    assert 0.45 < share_of_a() < 0.55
    egress.ramp("a", 3600)
    assert 0.06 < share_of_a() < 0.12  # 10% of its weight: 0.1 / 1.1
    clock.advance(1800)
    assert 0.30 < share_of_a() < 0.40  # 55%: 0.55 / 1.55
    clock.advance(1800)
    assert 0.45 < share_of_a() < 0.55 and "a" not in egress.ramping
