"""The in-memory schedule: ready queues per (tenant, site) and the retry heap."""

from __future__ import annotations

from mta.queue.records import PendingRecipient
from mta.queue.scheduler import Scheduler, WorkItem


def item(msg: str, *idx: int) -> WorkItem:
    return WorkItem(msg, idx or (0,))


def test_ready_queues_are_fifo_per_tenant_and_site() -> None:
    s = Scheduler()
    s.enqueue(item("m1"), "gmail", "acme")
    s.enqueue(item("m2"), "yahoo", "acme")
    s.enqueue(item("m3"), "gmail", "acme")
    s.enqueue(item("m4"), "gmail", "other")
    assert s.counts() == {("acme", "gmail"): 2, ("acme", "yahoo"): 1, ("other", "gmail"): 1}
    assert [w.msg_id for w in s.take(("acme", "gmail"), 10)] == ["m1", "m3"]
    assert ("acme", "gmail") not in s.ready_keys()  # drained queues disappear
    assert s.ready_total == 2


def test_take_returns_at_most_n() -> None:
    s = Scheduler()
    for i in range(5):
        s.enqueue(item(f"m{i}"), "site", "t")
    assert len(s.take(("t", "site"), 3)) == 3
    assert len(s.take(("t", "site"), 3)) == 2
    assert s.take(("t", "site"), 3) == []


def test_deferred_items_become_ready_in_time_order_when_due() -> None:
    s = Scheduler()
    s.defer(WorkItem("late", (0,), "t", "site"), at=300.0)
    s.defer(WorkItem("early", (0,), "t", "site"), at=100.0)
    s.defer(WorkItem("other", (1,), "t", "site2"), at=200.0)
    assert s.next_due() == 100.0
    assert sum(s.due_by_key(now=99.0).values()) == 0
    assert sum(s.due_by_key(now=250.0).values()) == 2
    assert s.counts() == {("t", "site"): 1, ("t", "site2"): 1}
    assert s.next_due() == 300.0 and s.deferred_total == 1
    sum(s.due_by_key(now=300.0).values())
    assert [w.msg_id for w in s.take(("t", "site"), 10)] == ["early", "late"]


def test_cancel_drops_ready_and_deferred_items_of_a_message() -> None:
    s = Scheduler()
    s.enqueue(item("held", 0), "site", "t")
    s.enqueue(item("kept", 0), "site", "t")
    s.defer(WorkItem("held", (1,), "t", "site"), at=10.0)
    s.cancel("held")
    assert s.next_due() is None  # the stale deferred item is dropped on sight
    assert [w.msg_id for w in s.take(("t", "site"), 10)] == ["kept"]


def test_release_after_cancel_schedules_fresh_items_only_once() -> None:
    s = Scheduler()
    s.enqueue(item("m", 0), "site", "t")
    s.cancel("m")  # hold
    s.enqueue(item("m", 0), "site", "t")  # release re-enqueues
    assert [w.msg_id for w in s.take(("t", "site"), 10)] == ["m"]
    # the cancel mark is gone with the last stale item: a later item is live
    s.enqueue(item("m", 0), "site", "t")
    assert len(s.take(("t", "site"), 10)) == 1


def pending(msg: str, idx: int, site: str | None, at: float = 0.0,
            address: str = "user@example.com") -> PendingRecipient:
    return PendingRecipient(msg, idx, "acme", address, site, 0, at, 0.0)


def test_restore_groups_recipients_by_message_site_and_time() -> None:
    s = Scheduler()
    rows = [
        pending("m1", 0, "gmail"), pending("m1", 1, "gmail"),
        pending("m1", 2, None, address="x@Yahoo.com"),
        pending("m2", 0, "gmail", at=500.0), pending("m2", 1, "gmail", at=500.0),
        pending("m3", 0, "gmail", at=50.0),  # retry time already passed: ready now
    ]
    assert s.restore(rows, now=100.0) == 4
    got = {(w.msg_id, w.indexes) for w in s.take(("acme", "gmail"), 10)}
    assert got == {("m1", (0, 1)), ("m3", (0,))}
    assert s.take(("acme", "yahoo.com"), 10) == [WorkItem("m1", (2,), "acme", "yahoo.com")]
    assert s.next_due() == 500.0
    sum(s.due_by_key(now=500.0).values())
    assert s.take(("acme", "gmail"), 10) == [WorkItem("m2", (0, 1), "acme", "gmail")]


def test_bounded_load_keeps_order_across_many_items() -> None:
    s = Scheduler()
    n = 20_000
    for i in range(n):
        s.defer(WorkItem(f"m{i:05d}", (0,), "t", f"site{i % 7}"), at=float(n - i))
    assert sum(s.due_by_key(now=float(n)).values()) == n
    assert sum(s.counts().values()) == n
    first = s.take(("t", "site0"), 2)
    assert [w.msg_id for w in first] == ["m19999", "m19992"]  # earliest retry first
