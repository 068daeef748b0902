"""Queue ids, queue names and the retry schedule: pure values, no I/O."""

from __future__ import annotations

import pytest

from mta.config import DeliveryConfig
from mta.queue.ids import ID_LENGTH, IdGenerator, id_time, is_queue_id
from mta.queue.names import ReadyQueueName, ScheduledQueueName
from mta.queue.retry import RetrySchedule


class FakeClock:
    """A clock source the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- ids ---------------------------------------------------------------------------------

def test_ids_are_short_url_safe_and_sort_by_time() -> None:
    clock = FakeClock(1_700_000_000.0)
    gen = IdGenerator(shard=3, clock=clock)
    ids = []
    for step in range(50):
        clock.now += 0.0005 * (step % 3)  # several ids share a millisecond
        ids.append(gen.next())
    assert all(len(i) == ID_LENGTH and is_queue_id(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0].endswith("03")  # the shard is part of the id
    assert id_time(ids[0]) == pytest.approx(1_700_000_000.0, abs=0.001)


def test_ids_never_go_backwards_when_the_clock_steps_back() -> None:
    clock = FakeClock(1_700_000_000.0)
    gen = IdGenerator(clock=clock)
    first = gen.next()
    clock.now -= 60  # NTP step
    assert gen.next() > first


def test_ids_borrow_the_next_millisecond_when_the_counter_runs_out() -> None:
    gen = IdGenerator(clock=FakeClock(1_700_000_000.0))
    ids = [gen.next() for _ in range(0x10000 + 2)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)


def test_ids_continue_after_the_newest_id_on_disk() -> None:
    clock = FakeClock(1_700_000_000.0)
    before = IdGenerator(clock=clock).next()
    clock.now -= 3600  # restarted with a clock an hour behind
    assert IdGenerator(clock=clock, after=before).next() > before


def test_is_queue_id_rejects_what_is_not_safe_in_a_path() -> None:
    assert not is_queue_id("../../etc/passwd")
    assert not is_queue_id("0" * 17)
    assert not is_queue_id("G" * 18)


# --- queue names -------------------------------------------------------------------------

@pytest.mark.parametrize("name, parts", [
    ("example.com", ScheduledQueueName("example.com")),
    ("acme@example.com", ScheduledQueueName("example.com", tenant="acme")),
    ("spring:acme@example.com", ScheduledQueueName("example.com", "acme", "spring")),
    ("spring:example.com", ScheduledQueueName("example.com", campaign="spring")),
    ("acme@example.com!relay.example.net",
     ScheduledQueueName("example.com", "acme", routing_domain="relay.example.net")),
    ("spring:acme@example.com!relay.example.net",
     ScheduledQueueName("example.com", "acme", "spring", "relay.example.net")),
])
def test_scheduled_queue_names_round_trip(name: str, parts: ScheduledQueueName) -> None:
    assert ScheduledQueueName.parse(name) == parts
    assert str(parts) == name
    assert ScheduledQueueName.parse(str(parts)) == parts


def test_scheduled_queue_names_lowercase_domains() -> None:
    assert str(ScheduledQueueName("Example.COM", "Acme")) == "Acme@example.com"


@pytest.mark.parametrize("kwargs", [
    {"domain": ""},
    {"domain": "example.com", "tenant": "a@b"},
    {"domain": "example.com", "campaign": "x:y"},
    {"domain": "example.com", "tenant": "a!b"},
    {"domain": "example.com", "tenant": ""},
    {"domain": "exa mple.com"},
])
def test_scheduled_queue_names_refuse_parts_that_would_not_round_trip(
        kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="queue name"):
        ScheduledQueueName(**kwargs)


@pytest.mark.parametrize("name, source, site", [
    ("ip-1->(alt1|alt2)?.aspmx.l.google.com", "ip-1", "(alt1|alt2)?.aspmx.l.google.com"),
    ("unspecified->mx.example.com", "unspecified", "mx.example.com"),
])
def test_ready_queue_names_round_trip(name: str, source: str, site: str) -> None:
    parsed = ReadyQueueName.parse(name)
    assert (parsed.source, parsed.site) == (source, site)
    assert str(parsed) == name


@pytest.mark.parametrize("name", ["no-arrow", "->site", "source->", "a->b->c"])
def test_ready_queue_names_reject_malformed(name: str) -> None:
    with pytest.raises(ValueError):
        ReadyQueueName.parse(name)


# --- retry schedule ----------------------------------------------------------------------

def test_retry_follows_the_configured_steps_and_repeats_the_last() -> None:
    sched = RetrySchedule([300.0, 600.0, 1800.0], 86400.0, rand=lambda: 0.5)  # no jitter
    assert [sched.next_retry(a, 1000.0) - 1000.0 for a in (1, 2, 3, 4, 9)] == [
        300.0, 600.0, 1800.0, 1800.0, 1800.0]


def test_retry_jitter_stays_within_ten_percent() -> None:
    low = RetrySchedule([600.0], 86400.0, rand=lambda: 0.0)
    high = RetrySchedule([600.0], 86400.0, rand=lambda: 0.999999)
    assert low.delay(1) == pytest.approx(540.0)
    assert high.delay(1) == pytest.approx(660.0, abs=0.01)


def test_retry_schedule_comes_from_the_delivery_section() -> None:
    cfg = DeliveryConfig(retry=[60.0, 120.0], max_age=3600.0)
    sched = RetrySchedule.from_config(cfg, rand=lambda: 0.5)
    assert sched.delay(2) == 120.0
    assert not sched.expired(received_at=1000.0, now=1000.0 + 3599.0)
    assert sched.expired(received_at=1000.0, now=1000.0 + 3600.0)
