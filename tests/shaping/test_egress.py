"""Egress sources, weighted pools and IP warm-up caps by UTC day."""

import datetime as dt
import random

import pytest

from mta.clock import ManualClock
from mta.config import parse_config
from mta.shaping.egress import Egress

CFG = parse_config('''
[[egress.source]]
name = "ip1"
address = "192.0.2.1"
ehlo_name = "mta1.example.com"

[[egress.source]]
name = "ip2"
address = "2001:db8::2"
warmup = [2, 5, 10]
warmup_start = "2026-11-01"

[egress.pool.default]
sources = { ip1 = 3, ip2 = 1 }

[egress.pool.new]
sources = { ip2 = 1 }
''', "test.toml")


def clock_on(day: str, hour: int = 12) -> ManualClock:
    return ManualClock(dt.datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp())


def test_warmup_cap_by_day_from_start() -> None:
    clock = clock_on("2026-10-31")
    eg = Egress(CFG.egress, clock)
    caps = []
    for _ in range(5):
        caps.append(eg.cap_today("ip2"))
        clock.advance(86400)
    assert caps == [0, 2, 5, 10, None]  # before start, days 1-3, then no cap
    assert eg.cap_today("ip1") is None


def test_weighted_choice_is_deterministic_and_follows_weights() -> None:
    eg = Egress(CFG.egress, clock_on("2026-12-01"))
    picks = [eg.choose("default", random.Random(7)).name for _ in range(3)]
    assert len(set(picks)) == 1  # same random source, same pick
    rng = random.Random(1)
    counts = {"ip1": 0, "ip2": 0}
    for _ in range(4000):
        counts[eg.choose("default", rng).name] += 1
    assert counts["ip1"] / 4000 == pytest.approx(0.75, abs=0.03)  # weights 3:1, ±3 points


def test_capped_source_is_skipped_until_the_next_day() -> None:
    clock = clock_on("2026-11-01", hour=23)
    eg = Egress(CFG.egress, clock)
    rng = random.Random(0)
    assert eg.choose("new", rng).name == "ip2"
    eg.record_sent("ip2", 2)
    assert eg.choose("new", rng) is None  # day 1 cap of 2 reached
    assert eg.choose("default", rng).name == "ip1"
    clock.advance(3600)  # midnight UTC: day 2, cap 5, count restarts
    assert eg.sent_today("ip2") == 0
    assert eg.choose("new", rng).name == "ip2"


def test_skip_callback_excludes_suspended_sources() -> None:
    eg = Egress(CFG.egress, clock_on("2026-12-01"))
    rng = random.Random(0)
    assert all(eg.choose("default", rng, skip=lambda n: n == "ip1").name == "ip2"
               for _ in range(20))
    assert eg.choose("default", rng, skip=lambda n: True) is None


def test_no_sources_configured_means_one_default_source() -> None:
    eg = Egress(parse_config("", "t.toml").egress, ManualClock())
    src = eg.choose("default", random.Random(0))
    assert (src.name, src.address) == ("default", "")


def test_unknown_pool_is_an_error() -> None:
    eg = Egress(CFG.egress, ManualClock())
    with pytest.raises(KeyError, match="unknown egress pool 'nope'"):
        eg.choose("nope", random.Random(0))


def test_a_reload_takes_new_sources_and_pools_and_keeps_todays_counts() -> None:
    clock = clock_on("2026-11-01")
    eg = Egress(CFG.egress, clock)
    eg.record_sent("ip2", 2)
    assert eg.choose("new", random.Random(0)) is None  # day 1 cap of 2 reached
    new = parse_config('''
[[egress.source]]
name = "ip2"
address = "2001:db8::9"
warmup = [2, 5, 10]
warmup_start = "2026-11-01"

[[egress.source]]
name = "ip3"
address = "192.0.2.3"

[egress.pool.new]
sources = { ip2 = 1, ip3 = 1 }
''', "test.toml")
    eg.reload(new.egress)
    assert eg.sources["ip2"].address == "2001:db8::9" and "ip1" not in eg.sources
    assert eg.sent_today("ip2") == 2  # the day's count is the address's history: kept
    assert {eg.choose("new", random.Random(i)).name for i in range(10)} == {"ip3"}
    assert eg.pools["default"] == (("ip2", 1.0), ("ip3", 1.0))  # every source, as at start
