"""Policy decisions are plans (plan.py) that both stores apply: the same refusal order on
each, a settle plan applied once however often it is asked for, and on Redis one script
loaded once and reloaded when the server forgets it."""

from __future__ import annotations

import asyncio

import pytest

from mta.policy import PolicyAdmin, PolicyEngine

from .conftest import BASE_TOML, Backend, send

BASE_DELIVERED = BASE_TOML.replace('[policy]\n', '[policy]\ncharge = "delivered"\n')


async def test_redis_reloads_the_plan_script_after_it_forgets_it(
        make_engine, backend: Backend):
    """Redis restarted without persistence, or SCRIPT FLUSH: EVALSHA answers NOSCRIPT, the
    store loads apply.lua again, and RCPT is answered as before (no 451)."""
    if backend.name != "redis":
        pytest.skip("Redis scripts")
    import redis.asyncio as aioredis

    engine: PolicyEngine = await make_engine()
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 3, paid=True)
    assert await send(engine, "shop", ["a@example.net"]) == ["ok"]
    r = aioredis.from_url(backend.redis_url)
    try:
        await r.script_flush()
    finally:
        await r.aclose()
    out = await send(engine, "shop", ["b@example.net", "c@example.net", "d@example.net"])
    assert out[:2] == ["ok", "ok"]
    assert out[2].startswith("452 4.7.1"), out
    assert (await admin.credits("shop")).balance == 0


async def test_a_recipient_over_a_quota_and_out_of_credit_is_told_the_quota(make_engine):
    """A recipient over several limits at once is refused for the first the plan checks:
    the quota window before the credit, on either store."""
    engine: PolicyEngine = await make_engine(
        "[tenants.both]\nprepaid = true\nmessages_per_hour = 1\n")
    await PolicyAdmin(engine).add_credits("both", 1, paid=True)
    # The first takes the hour's only message and the only credit.
    out = await send(engine, "both", ["a@example.net", "b@example.net"])
    assert out[0] == "ok"
    assert out[1].startswith("451 4.7.1 Hourly message limit of 1 reached"), out


async def test_an_outcome_reported_many_times_at_once_refunds_once(
        make_engine, tmp_path, backend: Backend):
    """Delivery reports at least once: reports of one bounce racing each other give the
    credit back once. On Redis, from two processes: each reads the held record, and the
    plan built from it applies only while the record is still as read."""
    state = tmp_path / "state"
    engine: PolicyEngine = await make_engine(base=BASE_DELIVERED, state=state)
    engines = [engine]
    if backend.name == "redis":
        engines.append(await make_engine(base=BASE_DELIVERED, state=state))
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 3, paid=True)
    assert await send(engine, "shop", ["b@x.example", "k@x.example"], msg_id="Q7") == [
        "ok", "ok"]
    for e in engines:  # each with a connection open, so that their reads race
        await e.store.counters(["warm"])
    await asyncio.gather(*(engines[i % len(engines)].on_outcome(
        "shop", "Q7", "b@x.example", "bounced") for i in range(4)))
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (2, 1)
    kinds = [e.kind for e in await admin.history("shop")]
    assert kinds.count("refund") == 1, kinds
    assert sum(e.delta for e in await admin.history("shop")) == 2


async def test_a_lot_paid_twice_at_once_is_paid_once(make_engine, tmp_path, backend: Backend):
    """Two operators (on Redis, two processes) mark the same lot paid at the same moment:
    its credits enter the balance once, with one "paid" row."""
    state = tmp_path / "state"
    engines = [await make_engine(state=state)]
    if backend.name == "redis":
        engines.append(await make_engine(state=state))
    lot = await PolicyAdmin(engines[0]).add_credits("shop", 5)
    for e in engines:  # each with a connection open, so that their reads race
        await e.store.counters(["warm"])
    paid = await asyncio.gather(*(PolicyAdmin(engines[i % len(engines)]).mark_paid(lot.id)
                                  for i in range(4)))
    assert all(p.paid for p in paid)
    s = await PolicyAdmin(engines[0]).credits("shop")
    assert (s.balance, s.unpaid) == (5, 0)
    history = await PolicyAdmin(engines[0]).history("shop")
    assert [(e.kind, e.delta) for e in history] == [("add", 0), ("paid", 5)]
