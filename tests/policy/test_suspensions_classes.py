"""Suspensions (whole tenant or one message class, with reason and optional end) and
message classes (header or tenant default, allowed classes, max age)."""

from __future__ import annotations

from datetime import date, datetime

from .conftest import PARIS, send


async def test_suspended_tenant_is_refused_at_mail_with_the_reason(engine, admin):
    await admin.suspend("news", "spam complaints over 0.3%")
    # C: MAIL FROM:<a@news.example>   S: 554 5.7.1 Tenant news is suspended: spam ...
    txn = engine.transaction("news", "a@news.example")
    r = await engine.check_mail(txn)
    assert str(r) == "554 5.7.1 Tenant news is suspended: spam complaints over 0.3%"
    assert await admin.unsuspend("news") == 1
    assert await engine.check_mail(engine.transaction("news", "a@news.example")) is None


async def test_suspension_with_end_date_is_temporary_and_ends(engine, admin, clock):
    await admin.suspend("news", "payment overdue", until=date(2026, 11, 23))
    r = await engine.check_mail(engine.transaction("news", "a@news.example"))
    assert str(r) == ("451 4.7.1 Tenant news is suspended until 2026-11-24 00:00 CET: "
                      "payment overdue")
    clock.set(datetime(2026, 11, 24, 0, 0, tzinfo=PARIS))
    assert await send(engine, "news", ["a@x.example"]) == ["ok"]


async def test_parent_suspension_covers_sub_accounts(make_engine):
    from mta.policy import PolicyAdmin
    engine = await make_engine('[tenants.news-b]\nparent = "news"\n')
    await PolicyAdmin(engine).suspend("news", "abuse")
    out = await send(engine, "news-b", ["a@x.example"])
    assert out == ["554 5.7.1 Tenant news is suspended: abuse"]


async def test_marketing_suspension_leaves_transactional_mail_flowing(engine, admin):
    await admin.suspend("news", "list hygiene", msg_class="marketing")
    assert await send(engine, "news", ["a@x.example"], cls="transactional") == ["ok"]
    assert await send(engine, "news", ["a@x.example"]) == ["ok"]  # default: transactional
    out = await send(engine, "news", ["a@x.example"], cls="Marketing")
    assert out == ["554 5.7.1 Tenant news is suspended for marketing mail: list hygiene"]


async def test_refused_class_releases_the_reserved_credit(engine, admin):
    await admin.add_credits("shop", 1, paid=True)
    await admin.suspend("shop", "review", msg_class="marketing")
    assert (await send(engine, "shop", ["a@x.example"], cls="marketing"))[0].startswith("554")
    assert (await admin.credits("shop")).balance == 1


async def test_class_from_tenant_default_and_allowed_classes(make_engine):
    engine = await make_engine('[tenants.promo]\ndefault_class = "marketing"\n'
                               'pool = "bulk"\n[tenants.promo-b]\nparent = "promo"\n'
                               '[tenants.bank]\nclasses = ["transactional"]\n')
    txn = engine.transaction("promo-b", "p@promo.example")
    await engine.check_mail(txn)
    assert txn.pool == "bulk"  # inherited from the parent
    await engine.check_rcpt(txn, "a@x.example")
    assert await engine.check_data(txn, None) is None
    assert txn.msg_class == "marketing" and txn.max_age == 86400.0
    await engine.abort(txn)
    assert await send(engine, "bank", ["a@x.example"], cls="marketing") == [
        "550 5.7.1 Tenant bank may not send marketing mail"]
    txn = engine.transaction("bank", "b@bank.example")
    await engine.check_mail(txn)
    await engine.check_rcpt(txn, "a@x.example")
    assert await engine.check_data(txn, None) is None
    # transactional: 0 in class_max_age means [delivery] max_age (5 days by default).
    assert txn.msg_class == "transactional" and txn.max_age == 5 * 86400.0
    await engine.abort(txn)


async def test_unknown_class_header_is_refused(engine):
    assert await send(engine, "news", ["a@x.example"], cls="newsletter") == [
        "550 5.7.1 Unknown message class 'newsletter' in X-Mta-Class "
        "(known: transactional, marketing)"]


async def test_status_suspended_in_config(make_engine):
    engine = await make_engine('[tenants.old]\nstatus = "suspended"\n')
    assert await send(engine, "old", ["a@x.example"]) == ["554 5.7.1 Tenant old is suspended"]
