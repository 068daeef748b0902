"""Quotas and sending limits: calendar windows in the configured zone, unique recipients,
sub-accounts bounded by their parent, temporary operator limits."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

from mta.policy import PolicyAdmin

from .conftest import PARIS, send


def rcpts(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.net" for i in range(n)]


async def test_hourly_limit_refuses_with_451_naming_the_limit_and_resets_on_the_hour(
        engine, clock):
    # plan small: 5 per hour. 10:30 Paris.
    out = await send(engine, "acme", rcpts(6))
    assert out[:5] == ["ok"] * 5
    assert out[5] == ("451 4.7.1 Hourly message limit of 5 reached for acme (plan small); "
                      "resets 2026-11-22 11:00 CET")
    # The window is full: MAIL FROM is refused up front too.
    txn = engine.transaction("acme", "a@acme.example")
    assert str(await engine.check_mail(txn)).startswith("451 4.7.1 Hourly message limit")
    clock.set(datetime(2026, 11, 22, 11, 0, tzinfo=PARIS))  # tolerance: exact boundary
    assert await send(engine, "acme", rcpts(3, "s")) == ["ok"] * 3  # day: 8 of 8 now
    assert (await send(engine, "acme", ["t@example.net"]))[0].startswith(
        "451 4.7.1 Daily message limit of 8 reached for acme (plan small); "
        "resets 2026-11-23 00:00 CET")


async def test_daily_window_resets_at_local_midnight_not_utc(engine, clock):
    clock.set(datetime(2026, 11, 22, 20, 0, tzinfo=PARIS))
    assert await send(engine, "acme", rcpts(5)) == ["ok"] * 5
    clock.set(datetime(2026, 11, 22, 23, 30, tzinfo=PARIS))  # 22:30 UTC, same Paris day
    out = await send(engine, "acme", rcpts(4, "s"))
    assert out == ["ok", "ok", "ok", out[3]] and "Daily" in out[3]
    clock.set(datetime(2026, 11, 23, 0, 0, 1, tzinfo=PARIS))  # 23:00 UTC: new Paris day
    assert await send(engine, "acme", ["t@example.net"]) == ["ok"]


async def test_monthly_limit_resets_on_the_first_of_the_month(engine, clock):
    for day in (22, 23):
        clock.set(datetime(2026, 11, day, 9, 0, tzinfo=PARIS))
        assert await send(engine, "acme", rcpts(5, f"d{day}-")) == ["ok"] * 5
    clock.set(datetime(2026, 11, 24, 9, 0, tzinfo=PARIS))
    out = await send(engine, "acme", rcpts(3, "d24-"))
    assert out[:2] == ["ok", "ok"] and "Monthly message limit of 12" in out[2]
    assert "resets 2026-12-01 00:00 CET" in out[2]
    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=PARIS))
    assert await send(engine, "acme", ["x@example.net"]) == ["ok"]


async def test_free_plan_allows_2000_unique_recipients_per_month(make_engine, clock):
    engine = await make_engine('[tenants.tiny]\nplan = "free"\n')

    async def batch(start: int) -> list[str]:
        return await send(engine, "tiny", [f"u{i}@example.net" for i in range(start,
                                                                            start + 100)])
    results = await asyncio.wait_for(
        asyncio.gather(*(batch(i * 100) for i in range(20))), 60)
    assert all(r == "ok" for rs in results for r in rs)
    out = await send(engine, "tiny", ["new@example.net", "u7@example.net", "U8@EXAMPLE.NET"])
    assert out[0] == ("451 4.7.1 Monthly unique-recipient limit of 2,000 reached for tiny "
                      "(plan free); resets 2026-12-01 00:00 CET")
    # Recipients already counted this month can still be mailed (any case).
    assert out[1:] == ["ok", "ok"]
    clock.set(datetime(2026, 12, 1, 8, 0, tzinfo=PARIS))
    assert await send(engine, "tiny", ["new@example.net"]) == ["ok"]


async def test_aborted_message_does_not_use_up_unique_recipients(make_engine):
    engine = await make_engine('[tenants.two]\nunique_recipients_per_month = 2\n')
    txn = engine.transaction("two", "s@two.example")
    await engine.check_mail(txn)
    assert await engine.check_rcpt(txn, "a@x.example") is None
    assert await engine.check_rcpt(txn, "b@x.example") is None
    await engine.abort(txn)
    assert await send(engine, "two", ["c@x.example", "d@x.example"]) == ["ok", "ok"]


async def test_sub_account_has_own_limit_and_is_bounded_by_parent(make_engine):
    engine = await make_engine('[tenants.acme-eu]\nparent = "acme"\nmessages_per_hour = 3\n'
                               '[tenants.acme-us]\nparent = "acme"\n')
    out = await send(engine, "acme-eu", rcpts(4))
    assert out[:3] == ["ok"] * 3
    assert out[3].startswith("451 4.7.1 Hourly message limit of 3 reached for acme-eu "
                             "(tenant setting)")
    # acme-us has no limits of its own, but acme (plan small, 5/h) has 3 used already.
    out = await send(engine, "acme-us", rcpts(3, "us"))
    assert out[:2] == ["ok", "ok"]
    assert out[2].startswith("451 4.7.1 Hourly message limit of 5 reached for acme (plan small)")
    usage = {(u.tenant, u.name): u.used for u in await PolicyAdmin(engine).usage("acme-us")}
    assert usage[("acme-us", "messages_per_hour")] == 2
    assert usage[("acme", "messages_per_hour")] == 5


async def test_operator_limit_overrides_the_plan_until_it_ends(engine, admin, clock):
    # "news" has no plan: unlimited until the operator steps in.
    await admin.set_limit("news", "messages_per_day", 2, until=date(2026, 11, 24),
                          reason="complaint review")
    out = await send(engine, "news", rcpts(3))
    assert out[:2] == ["ok", "ok"]
    assert out[2] == ("451 4.7.1 Daily message limit of 2 reached for news (operator limit "
                      "until 2026-11-25 00:00 CET: complaint review); resets "
                      "2026-11-23 00:00 CET")
    clock.set(datetime(2026, 11, 24, 12, 0, tzinfo=PARIS))  # still in force
    assert (await send(engine, "news", rcpts(3, "b")))[2].startswith("451 4.7.1 Daily")
    clock.set(datetime(2026, 11, 25, 0, 0, tzinfo=PARIS))  # ended at midnight
    assert await send(engine, "news", rcpts(10, "c")) == ["ok"] * 10


async def test_operator_limit_can_raise_a_plan_limit_and_be_cleared(engine, admin):
    await admin.set_limit("acme", "messages_per_hour", 7, until=date(2026, 12, 1),
                          reason="launch day")
    assert await send(engine, "acme", rcpts(7)) == ["ok"] * 7
    assert await admin.clear_limit("acme", "messages_per_hour") == 1
    assert "Hourly message limit of 5" in (await send(engine, "acme", ["z@example.net"]))[0]


async def test_mail_from_is_refused_as_soon_as_a_reservation_fills_the_window(engine):
    # plan small: 5 per hour. Four sent; the fifth recipient fills the window.
    assert await send(engine, "acme", rcpts(4)) == ["ok"] * 4
    filling = engine.transaction("acme", "a@acme.example")
    assert await engine.check_mail(filling) is None
    assert await engine.check_rcpt(filling, "last@example.net") is None
    # Full without any refusal yet: the next MAIL FROM is refused up front.
    assert str(await engine.check_mail(engine.transaction("acme", "a@acme.example"))
               ).startswith("451 4.7.1 Hourly message limit of 5 reached for acme")
    # The filling transaction is abandoned (RSET): its room is given back at once.
    await engine.abort(filling)
    assert await send(engine, "acme", ["again@example.net"]) == ["ok"]


async def test_unknown_tenant_is_refused_at_mail(engine):
    txn = engine.transaction("nobody", "a@b.example")
    r = await engine.check_mail(txn)
    assert (r.code, r.enhanced, r.text) == (550, "5.7.1", "Tenant nobody is not known here")


async def test_default_tenant_exists_without_configuration(engine):
    assert await send(engine, "default", rcpts(3)) == ["ok"] * 3


async def test_runtime_tenant_from_the_store(engine, admin):
    from mta.policy import Limits, Tenant
    await admin.create_tenant(Tenant("late", limits=Limits(messages_per_hour=1)))
    out = await send(engine, "late", rcpts(2))
    assert out[0] == "ok" and "Hourly message limit of 1 reached for late" in out[1]
