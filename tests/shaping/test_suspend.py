"""Administrative suspensions of a site, a source, a path or a tenant."""

import pytest

from mta.clock import ManualClock
from mta.shaping.suspend import Suspension, Suspensions


def test_each_scope_stops_the_work_it_names() -> None:
    sus = Suspensions(ManualClock())
    sus.suspend("site", "gmail-site", "abuse desk asked us to pause", 3600)
    sus.suspend("source", "ip3", "listed on a blocklist")
    sus.suspend("path", "ip1->yahoo-site", "yahoo deferrals")
    sus.suspend("tenant", "acme", "unpaid invoice")
    assert sus.is_suspended(site="gmail-site", source="ip1").reason.startswith("abuse")
    assert sus.is_suspended(site="other", source="ip3").scope == "source"
    assert sus.is_suspended(site="yahoo-site", source="ip1").scope == "path"
    assert sus.is_suspended(site="yahoo-site", source="ip2") is None
    assert sus.is_suspended(site="x", source="ip1", tenant="acme").scope == "tenant"
    assert sus.is_suspended(site="x", source="ip1", tenant="other") is None


def test_suspension_expires_and_lift_ends_it_early() -> None:
    clock = ManualClock()
    sus = Suspensions(clock)
    sus.suspend("site", "s", "pause", 60)
    sus.suspend("source", "ip1", "until lifted")
    clock.advance(59)
    assert sus.is_suspended(site="s") is not None
    clock.advance(1)
    assert sus.is_suspended(site="s") is None
    clock.advance(10**6)
    assert sus.is_suspended(source="ip1") is not None
    assert sus.lift("source", "ip1") is not None
    assert sus.is_suspended(source="ip1") is None
    assert sus.active() == []


def test_persistence_hook_sees_every_change_and_load_restores() -> None:
    clock = ManualClock()
    log: list[tuple[str, bool]] = []
    sus = Suspensions(clock, lambda s, active: log.append((s.name, active)))
    a = sus.suspend("site", "s", "pause", 60)
    sus.suspend("tenant", "t", "stop")
    sus.lift("tenant", "t")
    clock.advance(61)
    sus.is_suspended(site="s")  # expiry noticed: persistence told to drop it
    assert log == [("s", True), ("t", True), ("t", False), ("s", False)]

    restored = Suspensions(ManualClock(a.since))
    restored.load([Suspension.from_dict(a.as_dict())])
    assert restored.is_suspended(site="s") == a


def test_bad_scope_or_duration_is_refused() -> None:
    sus = Suspensions(ManualClock())
    with pytest.raises(ValueError, match="unknown suspension scope 'domain'"):
        sus.suspend("domain", "x", "r")
    with pytest.raises(ValueError, match="positive"):
        sus.suspend("site", "x", "r", 0)
