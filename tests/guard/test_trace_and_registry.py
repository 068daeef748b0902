"""Forged trace removal on its own, and the domain registry's verification and re-check
(zones answered by the project's TestResolver; kv in policy.db)."""

from __future__ import annotations

from mta.config.identity import IdentityConfig
from mta.dns.resolver import TestResolver
from mta.policy.dnscheck import uncached_txt
from mta.policy.domains import DomainRegistry
from mta.policy.kv import kv_for
from mta.policy.sqlite_store import SqliteStore
from mta.policy.trace import strip_forged_trace

OURS = b"Received: from c.test ([127.0.0.1])\r\n\tby mta.test (mta) with ESMTP; now\r\n"


def test_only_fields_claiming_us_are_removed():
    data = (OURS + b"Received: from evil.test by MTA.test with SMTP; x\r\n"
            b"Received: from relay.test by mx.other.test; y\r\n"
            b"Received: from mta.test.evil.test by z.test; y\r\n"
            b"Authentication-Results: mta.test 1; dkim=pass\r\n"
            b"Authentication-Results: mta.testing; dkim=pass\r\n"
            b"Subject: by mta.test\r\n\r\nReceived: from x by mta.test\r\n")
    out, removed = strip_forged_trace(data, "mta.test", "mta.test")
    assert len(removed) == 2
    assert out == (OURS + b"Received: from relay.test by mx.other.test; y\r\n"
                   b"Received: from mta.test.evil.test by z.test; y\r\n"
                   b"Authentication-Results: mta.testing; dkim=pass\r\n"
                   b"Subject: by mta.test\r\n\r\nReceived: from x by mta.test\r\n")


def test_a_clean_message_is_returned_as_it_is():
    data = OURS + b"Subject: hi\r\n\r\nbody\r\n"
    out, removed = strip_forged_trace(data, "mta.test", "mta.test")
    assert out is data and removed == []


async def test_verification_and_a_recheck_that_finds_the_record_gone(tmp_path):
    store = await SqliteStore.open(tmp_path / "policy.db")
    try:
        now = [1000.0]
        zones = {"acme.test": "@ TXT \"v=spf1 -all\"\n"}
        events: list[dict] = []

        class Events:
            def emit(self, name, **f):
                events.append({"event": name, **f})

        def registry(z):
            return DomainRegistry(kv_for(store), uncached_txt(TestResolver(z)),
                                  IdentityConfig(verify_label="_mta", recheck_interval=60),
                                  clock=lambda: now[0], events=Events())
        reg = registry(zones)
        rec = await reg.add("acme", "Acme.Test.")
        assert rec.domain == "acme.test" and reg.record_name(rec.domain) == "_mta.acme.test"
        assert (await reg.verify("acme", "acme.test")).verified is False
        zones["acme.test"] += f"_mta TXT \"mta-verify={rec.token}\"\n"
        reg = registry(zones)
        await reg.load()
        assert (await reg.verify("acme", "acme.test")).verified
        assert reg.allowed("acme", "mail.acme.test") and not reg.allowed("acme", "acme.tes")
        assert not reg.allowed("other", "acme.test")

        # The record is withdrawn: the next re-check (after the interval) unverifies.
        reg = registry({"acme.test": "@ TXT \"v=spf1 -all\"\n"})
        assert await reg.recheck() == 0  # not due yet
        now[0] += 61
        assert await reg.recheck() == 1
        assert reg.allowed("acme", "acme.test") is None
        assert [e["event"] for e in events] == ["domain_added", "domain_verified",
                                                "domain_unverified"]
    finally:
        await store.aclose()
