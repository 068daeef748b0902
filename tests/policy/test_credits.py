"""Prepaid credits: lots, FIFO by expiry, payment, expiry, exact spending, refunds."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date, datetime

import pytest

from mta.policy import PolicyAdmin, PolicyEngine

from .conftest import BASE_TOML, PARIS, send

BASE_DELIVERED = BASE_TOML.replace('[policy]\n', '[policy]\ncharge = "delivered"\n')


async def ledger_sum(admin: PolicyAdmin, tenant: str) -> int:
    return sum(e.delta for e in await admin.history(tenant, limit=100_000))


async def test_prepaid_tenant_without_credit_gets_452_4_7_1_at_rcpt(engine, admin):
    # C: MAIL FROM:<a@shop.example>   S: 250
    # C: RCPT TO:<x@example.net>      S: 452 4.7.1 Insufficient prepaid credits ...
    txn = engine.transaction("shop", "a@shop.example")
    assert await engine.check_mail(txn) is None
    r = await engine.check_rcpt(txn, "x@example.net")
    assert (r.code, r.enhanced) == (452, "4.7.1")
    assert "Insufficient prepaid credits" in r.text and "shop" in r.text


async def test_unpaid_credits_are_not_usable_until_paid(engine, admin):
    lot = await admin.add_credits("shop", 5)
    assert (await send(engine, "shop", ["x@example.net"]))[0].startswith("452 4.7.1")
    s = await admin.credits("shop")
    assert (s.balance, s.unpaid) == (0, 5)
    await admin.mark_paid(lot.id)
    assert await send(engine, "shop", ["x@example.net"]) == ["ok"]
    assert (await admin.credits("shop")).balance == 4


async def test_fifty_coroutines_racing_for_the_last_100_credits(engine, admin):
    await admin.add_credits("shop", 100, paid=True)

    async def client(i: int) -> list[str]:
        return await send(engine, "shop", [f"r{i}-{j}@example.net" for j in range(4)])

    results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 30)
    flat = [r for rs in results for r in rs]
    assert flat.count("ok") == 100
    assert all(r.startswith("452 4.7.1") for r in flat if r != "ok")
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (0, 0)
    # Every movement is in the ledger: +100 bought, 100 x -1 reserved, nothing else.
    history = await admin.history("shop", limit=1000)
    assert sorted({e.kind for e in history}) == ["add", "reserve"]
    assert await ledger_sum(admin, "shop") == 0


async def test_refused_recipient_is_never_charged(engine, admin):
    # A prepaid tenant under an hourly limit: the limit refuses, the credit stays.
    eng = engine
    await admin.add_credits("shop", 10, paid=True)
    await admin.set_limit("shop", "messages_per_hour", 2, until=date(2026, 12, 1),
                          reason="test")
    out = await send(eng, "shop", ["a@x.example", "b@x.example", "c@x.example"])
    assert out[:2] == ["ok", "ok"] and out[2].startswith("451 4.7.1")
    assert (await admin.credits("shop")).balance == 8


async def test_credits_come_from_the_lot_expiring_first(engine, admin, clock):
    late = await admin.add_credits("shop", 3, paid=True, expires=date(2027, 6, 30))
    early = await admin.add_credits("shop", 2, paid=True, expires=date(2026, 12, 31))
    assert await send(engine, "shop", [f"r{i}@x.example" for i in range(3)]) == ["ok"] * 3
    lots = {lot.id: lot for lot in (await admin.credits("shop")).lots}
    assert lots[early.id].remaining == 0 and lots[late.id].remaining == 2


async def test_default_expiry_is_twelve_calendar_months(engine, admin):
    lot = await admin.add_credits("shop", 1, paid=True)
    assert datetime.fromtimestamp(lot.expires, PARIS).date() == date(2027, 11, 22)


async def test_expired_lot_is_not_spent_and_its_rest_is_written_off(engine, admin, clock):
    await admin.add_credits("shop", 5, paid=True, expires=date(2026, 11, 30))
    assert await send(engine, "shop", ["a@x.example"]) == ["ok"]
    clock.advance(9 * 86400)  # 2026-12-01 10:30 Paris: the lot ended at midnight
    assert (await send(engine, "shop", ["b@x.example"]))[0].startswith("452 4.7.1")
    s = await admin.credits("shop")
    assert s.balance == 0 and s.lots[0].expired
    kinds = [(e.kind, e.delta) for e in await admin.history("shop")]
    assert kinds == [("add", 5), ("reserve", -1), ("expire", -4)]
    assert await ledger_sum(admin, "shop") == 0


async def test_abort_releases_reserved_credit(engine, admin):
    await admin.add_credits("shop", 2, paid=True)
    txn = engine.transaction("shop", "a@shop.example")
    await engine.check_mail(txn)
    assert await engine.check_rcpt(txn, "x@example.net") is None
    assert await engine.check_rcpt(txn, "x@example.net") is None  # same rcpt: once
    assert (await admin.credits("shop")).balance == 1
    await engine.abort(txn)  # C: RSET
    assert (await admin.credits("shop")).balance == 2
    assert [e.kind for e in await admin.history("shop")] == ["add", "reserve", "release"]


async def test_charge_delivered_refunds_bounced_expired_suppressed(make_engine):
    engine: PolicyEngine = await make_engine(base=BASE_DELIVERED)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 10, paid=True)
    rcpts = ["ok@x.example", "bounce@x.example", "old@x.example", "sup@x.example"]
    assert await send(engine, "shop", rcpts, msg_id="Q1") == ["ok"] * 4
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (6, 4)
    await engine.on_outcome("shop", "Q1", "ok@x.example", "delivered")
    await engine.on_outcome("shop", "Q1", "bounce@x.example", "bounced")
    await engine.on_outcome("shop", "Q1", "old@x.example", "expired")
    await engine.on_outcome("shop", "Q1", "SUP@x.example", "suppressed")
    # At-least-once reporting: a repeated outcome changes nothing.
    await engine.on_outcome("shop", "Q1", "bounce@x.example", "bounced")
    await engine.on_outcome("shop", "Q1", "ok@x.example", "bounced")
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (9, 0)
    assert [e.kind for e in await admin.history("shop")].count("refund") == 3
    assert await ledger_sum(admin, "shop") == 9


async def test_charge_accepted_does_not_refund_bounces(engine, admin):
    await admin.add_credits("shop", 3, paid=True)
    await send(engine, "shop", ["b@x.example"], msg_id="Q2")
    await engine.on_outcome("shop", "Q2", "b@x.example", "bounced")
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (2, 0)


async def test_refund_into_a_lot_that_expired_meanwhile_is_written_off(make_engine, clock):
    engine = await make_engine(base=BASE_DELIVERED)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 2, paid=True, expires=date(2026, 11, 22))
    await send(engine, "shop", ["b@x.example"], msg_id="Q3")
    clock.advance(86400)
    await engine.maintain()
    await engine.on_outcome("shop", "Q3", "b@x.example", "bounced")
    assert [(e.kind, e.delta) for e in await admin.history("shop")] == [
        ("add", 2), ("reserve", -1), ("expire", -1), ("refund", 1), ("expire", -1)]
    assert (await admin.credits("shop")).balance == 0
    assert await ledger_sum(admin, "shop") == 0


async def test_sub_account_spends_the_prepaid_parent_wallet(make_engine):
    engine = await make_engine('[tenants.shop-eu]\nparent = "shop"\n')
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 1, paid=True)
    assert await send(engine, "shop-eu", ["a@x.example", "b@x.example"]) == [
        "ok", "452 4.7.1 Insufficient prepaid credits: shop has no paid, unexpired credit left"]


async def test_ledger_is_append_only(engine, admin, backend):
    if backend.name != "sqlite":
        pytest.skip("Redis cannot refuse writes to a list: the store only ever appends")
    await admin.add_credits("shop", 1, paid=True)
    con = sqlite3.connect(engine.store.path)  # type: ignore[attr-defined]
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("UPDATE ledger SET delta = 1000")
    finally:
        con.close()



async def test_show_and_history_read_like_the_cli_prints_them(engine, admin):
    from mta.policy import format_history
    lot = await admin.add_credits("shop", 1000, paid=True, note="invoice 42")
    await send(engine, "shop", ["a@x.example"], msg_id="Q7")
    shown = (await admin.credits("shop")).format(engine.tz)
    assert shown.splitlines() == [
        "tenant shop: balance 999, held 0, unpaid 0",
        f"  lot {lot.id}: 999/1,000 paid, expires 2027-11-22 (invoice 42)"]
    hist = format_history(await admin.history("shop"), engine.tz).splitlines()
    assert hist[0].endswith("+1000 add      invoice 42")
    assert "-1 reserve  a@x.example txn " in hist[1]
