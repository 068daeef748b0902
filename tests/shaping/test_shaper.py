"""The Shaper as the dispatcher uses it, on both stores, and `explain` of a path."""

import json
import random

from mta.clock import ManualClock
from mta.config import parse_config
from mta.rfc5321.reply import Reply
from mta.shaping.adaptive import Change
from mta.shaping.shaper import Shaper, Stores

CFG = parse_config('''
[shaping.default]
connection_limit = 4
max_message_rate = "10/s burst 2"
max_connection_rate = "2/m"
suspend_after = 2

[shaping."gmail.com"]
connection_limit = 2

[[egress.source]]
name = "ip1"
address = "127.0.0.2"
[[egress.source]]
name = "ip2"
address = "127.0.0.3"
''', "t.toml")
SITE = "l.google.com"


def shaper_for(stores: Stores) -> tuple[Shaper, ManualClock, list[Change]]:
    clock, changes = ManualClock(), []
    return Shaper(CFG, stores=stores, clock=clock, on_change=changes.append), clock, changes


async def test_connections_obey_window_and_connection_rate(stores: Stores) -> None:
    sh, clock, _ = shaper_for(stores)
    path = sh.path("ip1", SITE, domain="gmail.com")
    assert path.connection_limit == 2
    a, b = await sh.try_connect(path), await sh.try_connect(path)
    assert a is not None and b is not None
    await a.release()
    assert await sh.try_connect(path) is None  # "2/m": both connection tokens used
    clock.advance(30)
    c = await sh.try_connect(path)
    assert c is not None
    assert await sh.try_connect(path) is None  # window of 2 full (b and c)


async def test_message_rate_slows_after_a_slow_down_reply(stores: Stores) -> None:
    sh, clock, changes = shaper_for(stores)
    path = sh.path("ip1", "mx.example.net")
    assert [await sh.message_wait(path) for _ in range(2)] == [0.0, 0.0]
    assert round(await sh.message_wait(path), 6) == 0.1
    sh.record(path, "rate_limited", Reply.parse("421 4.7.0 slow down"))
    assert changes[-1].kind == "decrease"
    clock.advance(0.1)
    assert round(await sh.message_wait(path), 6) == 0.1  # interval now 0.2 s


async def test_blocked_by_admin_or_dead_site(stores: Stores) -> None:
    sh, _, _ = shaper_for(stores)
    path = sh.path("ip2", "mx.example.net")
    assert sh.blocked(path) is None
    sh.suspensions.suspend("tenant", "acme", "unpaid")
    assert sh.blocked(path, "acme").reason == "unpaid"
    r = Reply.parse("421 4.7.0 too many connections")
    sh.record(path, "connection_failure", r)
    sh.record(path, "connection_failure", r)
    blocked = sh.blocked(path)
    assert blocked.scope == "path" and "421 4.7.0 too many connections" in blocked.reason
    assert await sh.try_connect(path) is None


async def test_choose_source_skips_suspended_and_counts_warmup(stores: Stores) -> None:
    sh, _, _ = shaper_for(stores)
    sh.suspensions.suspend("source", "ip1", "blocklisted")
    rng = random.Random(3)
    assert {sh.choose_source("default", rng).name for _ in range(10)} == {"ip2"}
    assert sh.egress.sent_today("ip2") == 10


async def test_explain_is_json_and_names_every_decision(stores: Stores) -> None:
    sh, _, _ = shaper_for(stores)
    path = sh.path("ip1", SITE, domain="gmail.com")
    lease = await sh.try_connect(path)
    await sh.message_wait(path)
    sh.record(path, "rate_limited", Reply.parse("421 4.7.28 rate limited"))
    out = json.loads(json.dumps(await sh.explain(path)))
    assert out["path"] == f"ip1->{SITE}"
    assert out["rules"]["connection_limit"] == {"value": 2, "from": "gmail.com"}
    assert out["rules"]["max_message_rate"] == {"value": "10/s burst 2", "from": "default"}
    assert out["throttles"]["max_message_rate"]["tokens"] == 0  # burst 2 halved to 1, used
    assert out["throttles"]["max_connection_rate"]["tokens"] == 1
    assert out["connections"] == {"in_use": 1, "limit": 2, "window": 1}
    assert out["adaptive"]["rate_scale"] == 0.5
    assert out["suspension"] is None
    assert out["egress"]["address"] == "127.0.0.2"
    await lease.release()
