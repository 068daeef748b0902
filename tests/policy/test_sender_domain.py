"""Sender-domain suspensions in the engine: the subject "@domain" in the policy store,
refused at MAIL FROM for every tenant, exact domain only, with the tenant-suspension codes
(554 5.7.1 until lifted, 451 4.7.1 while an end is set)."""

from __future__ import annotations

from datetime import datetime

import pytest

from mta.policy import PolicyAdmin, PolicyEngine, PolicyError, Tenant
from mta.policy.sender_domain import normalise_domain, sender_domain
from tests.policy.conftest import PARIS


async def _mail(engine: PolicyEngine, tenant: str, sender: str) -> str | None:
    txn = engine.transaction(tenant, sender)
    reply = await engine.check_mail(txn)
    if reply is None:
        await engine.abort(txn)
    return None if reply is None else str(reply)


@pytest.mark.parametrize(("address", "domain"), [
    ("a@Example.COM", "example.com"), ("<a@example.com.>", "example.com"),
    ("a@bücher.example", "xn--bcher-kva.example"), ("", None), ("<>", None),
    ("postmaster", None), ("a@[192.0.2.1]", None)])
def test_the_mail_from_domain_is_normalised_for_comparison(address, domain):
    assert sender_domain(address) == domain


@pytest.mark.parametrize("bad", ["com", "-x.example", "a..example", "exa mple.com", ""])
def test_a_suspension_needs_a_domain_name_of_two_labels_or_more(bad):
    with pytest.raises(ValueError, match="not a domain name"):
        normalise_domain(bad)


async def test_suspended_sender_domain_is_refused_for_every_tenant(engine, admin):
    await admin.suspend_sender_domain("Spam.Example", "phishing reports")
    for tenant in ("acme", "news", "default"):
        assert await _mail(engine, tenant, "x@spam.example") == (
            "554 5.7.1 Sender domain spam.example is suspended: phishing reports")
    # Exact domain: a subdomain, a parent and another domain still send.
    for sender in ("x@mail.spam.example", "x@example", "x@ham.example", ""):
        assert await _mail(engine, "news", sender) is None


async def test_suspension_with_an_end_is_temporary_and_ends(engine, admin, clock):
    await admin.suspend_sender_domain("spam.example", "investigating", duration=3600)
    assert await _mail(engine, "news", "x@spam.example") == (
        "451 4.7.1 Sender domain spam.example is suspended until 2026-11-22 11:30 CET: "
        "investigating")
    clock.advance(3600)
    assert await _mail(engine, "news", "x@spam.example") is None


async def test_resume_lifts_and_is_announced(engine, admin, events):
    await admin.suspend_sender_domain("spam.example", "r", until=datetime(2026, 12, 1,
                                                                          tzinfo=PARIS))
    assert [s.tenant for s in await admin.sender_domain_suspensions("SPAM.example")] == [
        "@spam.example"]
    assert await admin.resume_sender_domain("spam.example") == 1
    assert await admin.resume_sender_domain("spam.example") == 0
    assert await _mail(engine, "news", "x@spam.example") is None
    assert [e["event"] for e in events.recent if "domain" in e] == [
        "sender_domain_suspended", "sender_domain_unsuspended"]


async def test_the_tenant_suspension_is_named_before_the_domain(engine, admin):
    await admin.suspend_sender_domain("spam.example", "domain reason")
    await admin.suspend("news", "account reason")
    reply = await _mail(engine, "news", "x@spam.example")
    assert reply == "554 5.7.1 Tenant news is suspended: account reason"


async def test_a_domain_suspension_is_not_a_message_class_suspension(engine, admin):
    await admin.suspend("news", "no marketing", msg_class="marketing")
    await admin.suspend_sender_domain("other.example", "r")
    txn = engine.transaction("news", "x@news.example")
    assert await engine.check_mail(txn) is None
    assert set(txn.class_suspensions) == {"marketing"}
    await engine.abort(txn)


async def test_tenant_names_cannot_start_with_at(admin: PolicyAdmin):
    with pytest.raises(PolicyError, match="cannot start with '@'"):
        await admin.create_tenant(Tenant("@spam.example", source="store"))


async def test_end_in_the_past_and_two_ends_are_refused(admin):
    with pytest.raises(PolicyError, match="in the past"):
        await admin.suspend_sender_domain("spam.example", "r",
                                          until=datetime(2020, 1, 1, tzinfo=PARIS))
    with pytest.raises(PolicyError, match="not both"):
        await admin.suspend_sender_domain("spam.example", "r", duration=60,
                                          until=datetime(2027, 1, 1, tzinfo=PARIS))
    with pytest.raises(PolicyError, match="not a domain name"):
        await admin.suspend_sender_domain("com", "r")
