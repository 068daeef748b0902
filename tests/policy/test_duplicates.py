"""Duplicate suppression: same Message-ID, same recipient, same tenant, within the window,
is accepted once; the repeat gets 250 but is not sent and not charged."""

from __future__ import annotations

from mta.policy import PolicyEngine


async def deliver(engine: PolicyEngine, tenant: str, message_id: str,
                  rcpts: list[str]) -> list[str]:
    """End of DATA: returns the recipients to queue (duplicates dropped)."""
    txn = engine.transaction(tenant, "s@example.com")
    assert await engine.check_mail(txn) is None
    for r in rcpts:
        assert await engine.check_rcpt(txn, r) is None
    assert await engine.check_data(txn, None) is None
    keep = [r for r in rcpts if not await engine.is_duplicate(txn, message_id, r)]
    await engine.commit(txn, f"Q-{txn.id[:8]}")
    return keep


async def test_repeat_of_the_same_message_is_accepted_once(engine, admin, events):
    await admin.add_credits("shop", 10, paid=True)
    assert await deliver(engine, "shop", "<m1@shop>", ["a@x.example", "b@x.example"]) == [
        "a@x.example", "b@x.example"]
    # The client lost our 250 and sends again, with one more recipient.
    assert await deliver(engine, "shop", "<m1@shop>",
                         ["A@x.example", "b@x.example", "c@x.example"]) == ["c@x.example"]
    assert (await admin.credits("shop")).balance == 7  # the repeats were not charged
    assert [e["recipient"] for e in events.recent if e["event"] == "duplicate"] == [
        "a@x.example", "b@x.example"]


async def test_other_tenant_or_message_id_is_not_a_duplicate(engine):
    await deliver(engine, "news", "<m2@x>", ["a@x.example"])
    assert await deliver(engine, "acme", "<m2@x>", ["a@x.example"]) == ["a@x.example"]
    assert await deliver(engine, "news", "<m3@x>", ["a@x.example"]) == ["a@x.example"]
    assert await deliver(engine, "news", "", ["a@x.example"]) == ["a@x.example"]


async def test_window_ends(engine, clock):
    await deliver(engine, "news", "<m4@x>", ["a@x.example"])
    clock.advance(86400 - 1)  # duplicate_window = 1 day; tolerance: 1 s either side
    assert await deliver(engine, "news", "<m4@x>", ["a@x.example"]) == []
    clock.advance(2)
    assert await deliver(engine, "news", "<m4@x>", ["a@x.example"]) == ["a@x.example"]


async def test_aborted_attempt_does_not_make_its_retry_a_duplicate(engine):
    txn = engine.transaction("news", "s@example.com")
    await engine.check_mail(txn)
    await engine.check_rcpt(txn, "a@x.example")
    assert not await engine.is_duplicate(txn, "<m5@x>", "a@x.example")
    await engine.abort(txn)  # e.g. the spool write failed: 451 to the client
    assert await deliver(engine, "news", "<m5@x>", ["a@x.example"]) == ["a@x.example"]
