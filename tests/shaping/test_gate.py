"""Shaper.gate: the one place that says why mail waits. Workers pass it (each rate taken
once per message, in order); `holds()` reads the same checks without taking anything,
including the cross-path [rate_limits] and the licence's connection cap. Both stores."""

from __future__ import annotations

from mta.clock import ManualClock
from mta.config import parse_config
from mta.shaping.shaper import LICENCE_WAIT, Shaper, Stores, Ticket

CFG = parse_config('''
[rate_limits]
tenant_message_rate = "1/s"

[shaping.default]
max_message_rate = "2/s burst 2"
''', "t.toml")


def shaper_for(stores: Stores) -> tuple[Shaper, ManualClock]:
    clock = ManualClock()
    return Shaper(CFG, stores=stores, clock=clock), clock


async def test_gate_takes_each_rate_once_and_says_which_one_holds(stores: Stores) -> None:
    sh, clock = shaper_for(stores)
    path = sh.path("default", "mx.dest.test")
    assert await sh.gate(Ticket(path, "acme")) == []
    second = Ticket(path, "acme")
    [hold] = await sh.gate(second)
    assert hold.limit == "tenant_message_rate"
    assert abs(hold.until - (clock.now() + 1.0)) < 1e-6
    assert "[rate_limits] tenant_message_rate" in hold.detail
    # Another tenant is not held by acme's counter; the path's rate (burst 2) lets it go.
    assert await sh.gate(Ticket(path, "other")) == []
    clock.advance(1.0)
    assert await sh.gate(second) == []  # tenant rate passed once, then the path's rate


async def test_a_wait_on_the_path_rate_never_counts_the_tenant_rate_twice(
        stores: Stores) -> None:
    sh, clock = shaper_for(stores)
    path = sh.path("default", "mx.dest.test")
    assert await sh.gate(Ticket(path, "a")) == []
    assert await sh.gate(Ticket(path, "b")) == []
    t = Ticket(path, "c")
    [hold] = await sh.gate(t)  # burst of 2 used: the path's rate holds c
    assert hold.limit == "max_message_rate" and t.passed == 1
    clock.advance(0.5)
    assert await sh.gate(t) == []
    # c's tenant counter was taken once: a second message of c waits a full second.
    [again] = await sh.gate(Ticket(path, "c"))
    assert again.limit == "tenant_message_rate"


async def test_holds_report_the_rate_limits_and_take_nothing(stores: Stores) -> None:
    sh, _ = shaper_for(stores)
    path = sh.path("default", "mx.dest.test")
    assert await sh.holds(path, "acme") == []
    assert await sh.gate(Ticket(path, "acme")) == []
    holds = await sh.holds(path, "acme")
    assert [h.limit for h in holds] == ["tenant_message_rate"]
    assert await sh.holds(path, "acme") == holds  # explain took nothing
    explained = await sh.explain(path, "acme")
    assert [h["limit"] for h in explained["holds"]] == ["tenant_message_rate"]


async def test_the_licence_connection_cap_holds_new_connections_and_shows(
        stores: Stores) -> None:
    sh, _ = shaper_for(stores)
    path = sh.path("default", "mx.dest.test")
    open_now = [1]
    sh.connection_cap = lambda: (1, open_now[0])
    [hold] = await sh.holds(path)
    assert hold.limit == "licence_connections" and hold.until is None
    assert "1 of the licence's 1 outbound connection(s)" in hold.detail
    # The pool counts the slot a new connection asks for: 2 open of a cap of 1 waits.
    open_now[0] = 2
    assert await sh.admit_connection(path) == LICENCE_WAIT
    open_now[0] = 1
    lease = await sh.admit_connection(path)
    assert not isinstance(lease, float)
    await lease.release()
    sh.connection_cap = lambda: (0, 5)  # no licence cap
    assert await sh.holds(path) == []
