"""AIMD feedback: halve on "slow down", grow by 1/window on success, dead-site timer."""

import pytest

from mta.clock import ManualClock
from mta.config import parse_config
from mta.rfc5321.reply import Reply
from mta.shaping.adaptive import Adaptive, Change
from mta.shaping.rules import resolve_path

CFG = parse_config('''
[shaping.default]
connection_limit = 16
max_message_rate = "100/s"
suspend_after = 4
suspend_duration = "10m"
''', "t.toml")
PATH = resolve_path(CFG.shaping, CFG.delivery, source="ip1", site="mx.example.net")
R421 = Reply.parse("421 4.7.28 Our system has detected an unusual rate of mail, try later")


def make() -> tuple[Adaptive, ManualClock, list[Change]]:
    clock, changes = ManualClock(), []
    return Adaptive(clock, changes.append), clock, changes


def test_starts_at_the_configured_values() -> None:
    ad, _, _ = make()
    assert (ad.window(PATH), ad.rate_scale(PATH)) == (16, 1.0)


def test_slow_down_halves_window_and_rate() -> None:
    ad, clock, changes = make()
    ad.record(PATH, "rate_limited", R421)
    assert (ad.window(PATH), ad.rate_scale(PATH)) == (8, 0.5)
    clock.advance(1.0)
    ad.record(PATH, "connection_failure")
    assert (ad.window(PATH), ad.rate_scale(PATH)) == (4, 0.25)
    assert [c.kind for c in changes] == ["decrease", "decrease"]
    assert changes[0].reply == R421 and changes[0].category == "rate_limited"


def test_a_burst_of_signals_is_one_decrease() -> None:
    """Ten connections all answered 421 at the same moment: one event, one halving."""
    ad, clock, _ = make()
    ad.record(PATH, "rate_limited", R421)
    clock.advance(0.2)
    ad.record(PATH, "rate_limited", R421)
    assert ad.window(PATH) == 8


def test_success_grows_additively_never_above_configured() -> None:
    ad, clock, changes = make()
    for _ in range(3):
        ad.record(PATH, "rate_limited", R421)
        clock.advance(1.0)
        ad.record(PATH, "delivered")  # breaks the streak: no dead-site timer
    assert ad.window(PATH) == 2
    # From 2, +1/window per success: 2 successes to reach 3, then 3 more to reach 4.
    for _ in range(2):
        ad.record(PATH, "delivered")
    assert ad.window(PATH) == 3
    for _ in range(3):
        ad.record(PATH, "delivered")
    assert ad.window(PATH) == 4
    for _ in range(1000):
        ad.record(PATH, "delivered")
    assert (ad.window(PATH), ad.rate_scale(PATH)) == (16, 1.0)
    assert changes[-1].kind == "increase"


def test_repeated_signals_suspend_the_path_and_keep_the_reply() -> None:
    ad, clock, changes = make()
    for _ in range(4):
        ad.record(PATH, "rate_limited", R421)
        clock.advance(0.5)
    until, category, reply = ad.dead(PATH)
    assert reply == R421 and category == "rate_limited"
    assert ad.window(PATH) == 0
    assert changes[-1].kind == "suspend" and changes[-1].until == until
    clock.advance(until - clock.now() - 0.001)
    assert ad.dead(PATH) is not None
    clock.advance(0.002)  # the dead-site timer ran out: start again from one connection
    assert ad.dead(PATH) is None
    assert ad.window(PATH) == 1
    assert changes[-1].kind == "resume"


def test_suspension_lasts_suspend_duration() -> None:
    ad, clock, _ = make()
    start = clock.now()
    for _ in range(4):
        ad.record(PATH, "connection_failure")
    assert ad.dead(PATH)[0] == pytest.approx(start + 600)


def test_other_failures_count_as_the_receiver_answering() -> None:
    """A 550 user unknown is the server working normally: it resets the streak."""
    ad, _, _ = make()
    for _ in range(3):
        ad.record(PATH, "rate_limited")
    ad.record(PATH, "bad_recipient", Reply.parse("550 5.1.1 no such user"))
    for _ in range(3):
        ad.record(PATH, "rate_limited")
    assert ad.dead(PATH) is None
