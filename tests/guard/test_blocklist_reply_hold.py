"""The reply hold next to DNS listings (in-process: a real Shaper, real DNS, policy time on a
ManualClock): distinct sites count, not replies; with action "suspend" the hold is a source
suspension that ends with it; a DNS listing found during the hold takes over, so the hold's
end does not bring the address back while it is listed; config errors name the key."""

from __future__ import annotations

import asyncio

import pytest

from mta.clock import ManualClock
from mta.config.loader import parse_config
from mta.config.values import ConfigError
from mta.dns.live import LiveLookup
from mta.observe.events import EventLog
from mta.shaping.dnsbl import DnsblWatch
from mta.shaping.shaper import Shaper
from tests.guard.test_dnsbl import BASE, LISTED

REPLY = "550 5.7.1 Service unavailable; Client host [127.0.0.10] blocked using bl.test"


def _cfg(nameserver: str, extra: str = ""):
    return parse_config(f"""
[dns]
nameservers = ["{nameserver}"]
[[egress.source]]
name = "a"
address = "127.0.0.10"
[[egress.source]]
name = "b"
address = "127.0.0.11"
[dnsbl]
zones = ["bl.test"]
interval = "1h"
action = "suspend"
clean_checks = 1
reply_threshold = 2
reply_window = "10m"
reply_hold = "1h"
{extra}
""")


async def _bounce(watch: DnsblWatch, site: str, reply: str = REPLY,
                  source: str = "a") -> None:
    watch.events.emit("bounced", id="m1", tenant="acme", recipient=f"x@{site}", site=site,
                      source=source, reply=reply, category="policy", attempt=1)
    await watch.settle()


def _names(events: EventLog, name: str) -> list[dict]:
    return [e for e in events.recent if e["event"] == name]


async def _wait(pred, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)


async def test_a_dns_listing_takes_over_a_reply_hold(dns_server_factory):
    dns = dns_server_factory(BASE)
    cfg = _cfg(dns.nameserver)
    events = EventLog(None, keep_recent=200)
    shaper = Shaper(cfg)
    policy_time = ManualClock(1_900_000_000)
    watch = DnsblWatch(cfg, shaper, LiveLookup(cfg.dns.nameservers), events,
                       hold_clock=policy_time)
    try:
        # One site twice is one site; an ordinary bounce counts for nothing.
        await _bounce(watch, "s1.test")
        await _bounce(watch, "s1.test")
        await _bounce(watch, "s2.test", "550 5.1.1 user unknown")
        await _bounce(watch, "s3.test", source="b")
        assert not _names(events, "blocklist_reply")
        assert shaper.suspensions.is_suspended(source="a") is None
        await _bounce(watch, "s2.test")
        (ev,) = _names(events, "blocklist_reply")
        assert ev["list"] == "bl.test" and ev["sites"] == ["s1.test", "s2.test"]
        assert ev["action"] == "suspend" and ev["tenants"][0]["tenant"] == "acme"
        s = shaper.suspensions.is_suspended(source="a")
        assert s is not None and s.reason == "blocklist replies: bl.test (2 sites)"
        assert shaper.egress.explain("a")["blocklist"]["reply_hold"]["list"] == "bl.test"
        assert shaper.suspensions.is_suspended(source="b") is None

        # The DNS check confirms it: the DNS rules govern from now on.
        await asyncio.to_thread(dns.set_zones, LISTED)
        await watch.check()
        assert _names(events, "dnsbl_listed") and not watch.reply_holds
        s = shaper.suspensions.is_suspended(source="a")
        assert s is not None and s.reason.startswith("listed in bl.test")
        policy_time.advance(3601)
        await asyncio.sleep(1.5)  # a hold poll or two: nothing to clear
        assert not _names(events, "blocklist_reply_cleared")
        assert shaper.suspensions.is_suspended(source="a") is not None

        # Delisted: back, ramping.
        await asyncio.to_thread(dns.set_zones, BASE)
        await watch.check()
        assert _names(events, "dnsbl_delisted")
        assert shaper.suspensions.is_suspended(source="a") is None
        assert shaper.egress.explain("a")["blocklist"] is None
        assert "a" in shaper.egress.ramping
    finally:
        watch.cancel()


async def test_a_reply_hold_ends_by_itself(dns_server_factory):
    dns = dns_server_factory(BASE)
    cfg = _cfg(dns.nameserver)
    events = EventLog(None, keep_recent=200)
    shaper = Shaper(cfg)
    policy_time = ManualClock(1_900_000_000)
    watch = DnsblWatch(cfg, shaper, LiveLookup(cfg.dns.nameservers), events,
                       hold_clock=policy_time)
    try:
        await _bounce(watch, "s1.test")
        policy_time.advance(601)  # out of the window: this one no longer counts
        await _bounce(watch, "s2.test")
        assert not _names(events, "blocklist_reply")
        await _bounce(watch, "s3.test")
        assert _names(events, "blocklist_reply")
        await watch.check()  # DNS says clean: the hold stays
        assert shaper.suspensions.is_suspended(source="a") is not None
        policy_time.advance(3600)
        await _wait(lambda: _names(events, "blocklist_reply_cleared"))
        (ev,) = _names(events, "blocklist_reply_cleared")
        assert ev["source"] == "a" and ev["list"] == "bl.test"
        assert shaper.suspensions.is_suspended(source="a") is None
        assert "a" in shaper.egress.ramping
    finally:
        watch.cancel()


@pytest.mark.parametrize(("extra", "message"), [
    ("reply_threshold = -1", "dnsbl: reply_threshold: must be 0 (off) or a number of sites"),
    ('reply_window = "0s"', "dnsbl: reply_window: must be positive"),
    ('reply_hold = "soon"', "dnsbl.reply_hold: invalid duration 'soon'"),
])
def test_config_errors_name_the_key(extra, message):
    base = """
[dnsbl]
zones = ["bl.test"]
"""
    with pytest.raises(ConfigError) as e:
        parse_config(base + extra + "\n")
    assert message in str(e.value)


async def test_replies_arriving_together_make_one_hold(dns_server_factory):
    dns = dns_server_factory(BASE)
    cfg = _cfg(dns.nameserver)
    events = EventLog(None, keep_recent=200)
    watch = DnsblWatch(cfg, Shaper(cfg), LiveLookup(cfg.dns.nameservers), events,
                       hold_clock=ManualClock(1_900_000_000))
    try:
        for i in range(6):  # no waiting in between: the counts overlap
            events.emit("bounced", id=f"m{i}", tenant="acme", recipient=f"x@s{i}.test",
                        site=f"s{i}.test", source="a", reply=REPLY, attempt=1)
        await watch.settle()
        assert len(_names(events, "blocklist_reply")) == 1
    finally:
        watch.cancel()
