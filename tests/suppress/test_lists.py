"""Suppressions on a real policy.db (made by the real policy store): lookup through a
tenant chain, domains, expiry on the injectable policy clock, automatic entries from the
events stream, and an import/export round trip of 100,000 entries."""

from __future__ import annotations

import inspect
import io

import pytest

from mta.config import Config
from mta.config.suppression import SuppressionConfig
from mta.observe.events import EventLog
from mta.policy.clock import ManualClock
from mta.policy.sqlite_store import SqliteStore
from mta.suppress import GLOBAL, Entry, Suppressions
from mta.suppress.entry import dump_csv, dump_jsonl, parse_lines
from mta.suppress.sqlite import SqliteBackend

T0 = 1_800_000_000.0


@pytest.fixture
async def lists(tmp_path):
    store = await SqliteStore.open(tmp_path / "policy.db")
    clock = ManualClock(T0)
    events = EventLog(None, keep_recent=100)
    s = await Suppressions.open(Config(), tmp_path, clock=clock, events=events)
    s.listen(events)
    yield s
    await s.aclose()
    await store.aclose()


async def test_the_nearest_scope_answers_and_a_domain_entry_covers_its_addresses(lists):
    await lists.add(lists.entry(GLOBAL, "bad@dest.test", "manual"))
    await lists.add(lists.entry("parent", "@spam.test", "complaint"))
    await lists.add(lists.entry("child", "Bad@Dest.test", "unsubscribe"))
    chain = ["child", "parent", GLOBAL]
    hit = await lists.check(chain, "<BAD@dest.test>")
    assert (hit.scope, hit.reason) == ("child", "unsubscribe")
    assert (await lists.check(["parent", GLOBAL], "bad@dest.test")).scope == GLOBAL
    hit = await lists.check(chain, "anyone@spam.test")
    assert (hit.scope, hit.address) == ("parent", "@spam.test")
    assert await lists.check(["other", GLOBAL], "anyone@spam.test") is None
    assert await lists.check(chain, "good@dest.test") is None


async def test_a_hard_bounce_expires_after_30_days_on_the_policy_clock(lists):
    e = lists.entry("shop", "gone@dest.test", "hard_bounce")
    assert e.expires_at == T0 + 30 * 86400
    await lists.add(e)
    await lists.add(lists.entry("shop", "no@dest.test", "complaint"))
    lists.clock.advance(30 * 86400 - 1)
    assert await lists.check(["shop"], "gone@dest.test") is not None
    lists.clock.advance(1)
    assert await lists.check(["shop"], "gone@dest.test") is None
    assert await lists.check(["shop"], "no@dest.test") is not None  # never expires
    page, _ = await lists.list("shop")
    assert [x.address for x in page] == ["no@dest.test"]
    # The daemon's hourly maintenance frees the expired row; the lasting one stays.
    assert await lists.prune() == 1
    assert await lists.prune() == 0
    assert await lists.check(["shop"], "no@dest.test") is not None


async def test_events_add_entries_and_a_bounce_never_shortens_a_complaint(lists):
    events = lists.events
    events.emit("complained", tenant="shop", recipient="c@dest.test", id="q1")
    events.emit("bounced", tenant="shop", recipient="c@dest.test", id="q2",
                category="invalid_recipient")
    events.emit("bounced", tenant="shop", recipient="full@dest.test", id="q3",
                category="mailbox_full")
    events.emit("unsubscribed", tenant="shop", recipient="u@dest.test")
    await lists.settle()
    page, _ = await lists.list("shop")
    got = {e.address: (e.reason, e.expires_at, e.source) for e in page}
    assert got == {"c@dest.test": ("complaint", None, "complained q1"),
                   "u@dest.test": ("unsubscribe", None, "unsubscribed")}


async def test_hard_bounce_count_needs_that_many_bounces_within_the_window(tmp_path):
    store = await SqliteStore.open(tmp_path / "policy.db")
    clock = ManualClock(T0)
    cfg = SuppressionConfig(hard_bounce_count=2, hard_bounce_window=3600)
    s = Suppressions(await SqliteBackend.open(tmp_path / "policy.db"), cfg, clock)
    try:
        assert await s.record("bounced", "shop", "x@dest.test", "q1") is None
        clock.advance(3601)  # the first one is out of the window
        assert await s.record("bounced", "shop", "x@dest.test", "q2") is None
        clock.advance(60)
        e = await s.record("bounced", "shop", "x@dest.test", "q3")
        assert e is not None and e.reason == "hard_bounce"
        assert await s.check(["shop"], "x@dest.test") is not None
    finally:
        await s.aclose()
        await store.aclose()


async def test_import_and_export_of_100000_entries_round_trip_and_import_is_idempotent(
        lists):
    now = lists.clock.now()
    rows = "".join(f"user{i}@dest{i % 97}.test\n" for i in range(100_000))
    parsed = [e for _, e in parse_lines(io.StringIO(rows), "csv", scope="shop", now=now)]
    assert all(isinstance(e, Entry) for e in parsed)
    assert await lists.import_entries(parsed) == 100_000
    exported = [e async for page in lists.export("shop") for e in page]
    assert len(exported) == 100_000
    text = dump_csv(exported)
    again = [e for _, e in parse_lines(io.StringIO(text), "csv", scope=None, now=now + 5)]
    assert await lists.import_entries(again) == 100_000  # the same file twice
    assert [e async for page in lists.export("shop") for e in page] == exported
    lines = dump_jsonl(exported[:3]).splitlines()
    back = [e for _, e in parse_lines(lines, "jsonl", scope=None, now=now)]
    assert back == exported[:3]
    assert (await lists.check(["shop"], "USER77@dest77.test")).reason == "import"


async def test_a_page_cursor_walks_every_scope_in_order(lists):
    for scope in ("b", "a", GLOBAL):
        for i in range(3):
            await lists.add(lists.entry(scope, f"r{i}@dest.test", "manual"))
    seen, cursor = [], None
    while True:
        page, cursor = await lists.list(None, cursor, 2)
        seen += [(e.scope, e.address) for e in page]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 9


def test_the_address_filter_never_misses_an_address_it_was_given():
    from mta.suppress.bloom import Bloom

    b = Bloom(2000)
    b.update(f"a{i}@dest.test" for i in range(1500))
    b.add("@domain.test")
    assert all(f"a{i}@dest.test" in b for i in range(1500)) and "@domain.test" in b
    false = sum(f"z{i}@dest.test" in b for i in range(10_000))
    assert false < 500  # about 1% at capacity; far fewer below it
    assert not b.full


async def test_rcpt_screen_finds_what_the_filter_holds_and_grows_past_capacity(
        lists, monkeypatch):
    from mta.policy.engine import PolicyTxn
    from mta.policy.tenants import Tenant
    from mta.suppress import bloom

    monkeypatch.setattr(lists, "_bloom", bloom.Bloom(1024))
    txn = PolicyTxn("shop", "a@shop.test", chain=(Tenant(name="shop"),))
    await lists.import_entries(lists.entry("shop", f"r{i}@dest.test", "import")
                               for i in range(3000))  # past the filter's capacity
    await lists._growing
    assert lists._bloom.capacity > 3000
    for i in (0, 1024, 2999):
        assert (await lists.screen_rcpt(txn, f"r{i}@dest.test", lambda: None)).code == 550
    answer = lists.screen_rcpt(txn, "never@else.test", lambda: "charged")
    if inspect.isawaitable(answer):  # a false positive of the filter: looked up
        answer = await answer
    assert answer == "charged"  # not listed: policy answers


async def test_rcpt_hashes_a_recipient_only_once_an_erased_address_is_listed(lists):
    from mta.gdpr.key import PREFIX
    from mta.policy.engine import PolicyTxn
    from mta.policy.tenants import Tenant
    from mta.suppress import bloom

    assert bloom.HASHED == PREFIX
    hashed: list[str] = []

    def token(address: str) -> str:
        hashed.append(address)
        return PREFIX + "x" + address  # stands in for the HMAC

    lists.hasher = token
    txn = PolicyTxn("shop", "a@shop.test", chain=(Tenant(name="shop"),))
    assert lists.screen_rcpt(txn, "clean@dest.test", lambda: "charged") == "charged"
    assert hashed == []  # no erased address listed: nothing to probe for
    await lists.write_hashed([lists.entry("shop", token("gone@dest.test"), "manual")])
    answer = lists.screen_rcpt(txn, "gone@dest.test", lambda: "charged")
    assert (await answer).code == 550 and hashed[-1] == "gone@dest.test"
