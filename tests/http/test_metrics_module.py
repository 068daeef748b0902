"""mta.observe.metrics on its own: counters derived from events-log records, bounded
labels, scrape-time gauges, histograms. Events go through a real EventLog (in memory)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from mta.observe.events import EventLog
from mta.observe.metrics import Metrics
from mta.queue import Envelope, Recipient, Spool

# 2023-11-14T22:13:20Z in ms, as a queue id: 12 hex of ms, 4 of counter, 2 of shard.
ACCEPTED = 1_700_000_000.0
MSG_ID = f"{int(ACCEPTED * 1000):012x}000100"


async def samples(m: Metrics) -> dict[tuple[str, frozenset], float]:
    text = (await m.render()).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(s: dict, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def wired(**kw) -> tuple[Metrics, EventLog]:
    m = Metrics(tenants=["default", "acme"], **kw)
    log = EventLog(None)
    m.attach(log)
    return m, log


async def test_received_counts_messages_once_and_recipients_each():
    m, log = wired()
    for rcpt in ("a@x.test", "b@x.test", "c@x.test"):
        log.emit("received", id=MSG_ID, tenant="acme", recipient=rcpt, size=1000)
    log.emit("received", id=MSG_ID[:-2] + "01", tenant="acme", recipient="d@x.test", size=10)
    s = await samples(m)
    assert value(s, "mta_messages_received_total", tenant="acme") == 2
    assert value(s, "mta_recipients_received_total", tenant="acme") == 4
    assert value(s, "mta_received_bytes_total", tenant="acme") == 1010
    assert value(s, "mta_events_total", event="received") == 4


async def test_unconfigured_tenants_are_other_and_missing_tenant_is_none():
    m, log = wired()
    log.emit("received", id=MSG_ID, tenant="stranger", recipient="a@x.test", size=1)
    log.emit("rejected", reason="relay_denied", client_ip="192.0.2.1")
    m.add_tenant("newcomer")
    log.emit("rejected", reason="policy_rcpt", tenant="newcomer")
    s = await samples(m)
    assert value(s, "mta_recipients_received_total", tenant="other") == 1
    assert value(s, "mta_rejected_total", tenant="none", reason="relay_denied") == 1
    assert value(s, "mta_rejected_total", tenant="newcomer", reason="policy_rcpt") == 1
    assert not any(dict(k[1]).get("tenant") == "stranger" for k in s)


async def test_delivery_outcomes_by_tenant_site_and_category():
    m, log = wired(site_promote_after=1)
    base = {"id": MSG_ID, "tenant": "acme", "site": "mx.dest.test"}
    log.emit("delivered", **base, recipient="a@dest.test", reply="250 ok")
    log.emit("deferred", **base, recipient="b@dest.test", category="greylisted")
    log.emit("bounced", **base, recipient="c@dest.test", category="invalid_recipient")
    log.emit("expired", **base, recipient="d@dest.test", category="connection_failure")
    s = await samples(m)
    assert value(s, "mta_recipients_delivered_total", tenant="acme", site="mx.dest.test") == 1
    assert value(s, "mta_recipients_deferred_total", tenant="acme", site="mx.dest.test",
                 category="greylisted") == 1
    assert value(s, "mta_recipients_bounced_total", tenant="acme", site="mx.dest.test",
                 category="invalid_recipient") == 1
    assert value(s, "mta_recipients_expired_total", tenant="acme",
                 category="connection_failure") == 1


async def test_delivery_latency_is_event_time_minus_the_acceptance_time_in_the_id():
    m = Metrics(tenants=["acme"])
    # 90 s after acceptance: lands in the le=300 bucket, not in le=60 (exact: ms ids).
    m.on_event({"time": ACCEPTED + 90, "event": "delivered", "id": MSG_ID, "tenant": "acme",
                "site": "s"})
    s = await samples(m)
    assert value(s, "mta_delivery_latency_seconds_count", tenant="acme") == 1
    assert abs(value(s, "mta_delivery_latency_seconds_sum", tenant="acme") - 90) < 0.01
    assert value(s, "mta_delivery_latency_seconds_bucket", tenant="acme", le="60.0") == 0
    assert value(s, "mta_delivery_latency_seconds_bucket", tenant="acme", le="300.0") == 1


async def test_only_the_top_sites_get_their_own_series():
    m, log = wired(top_sites=2, site_promote_after=3)
    for site, n in (("big.test", 5), ("mid.test", 3), ("small.test", 2), ("late.test", 4)):
        for _ in range(n):
            log.emit("delivered", id=MSG_ID, tenant="acme", site=site)
    s = await samples(m)
    sites = {dict(k[1])["site"]: v for k, v in s.items()
             if k[0] == "mta_recipients_delivered_total"}
    # big and mid reached 3 first; late.test came after both slots were taken. Counts
    # before promotion (2 each for big and mid) stay in "other".
    assert sites == {"big.test": 3, "mid.test": 1, "other": 2 + 2 + 2 + 4}


async def test_labels_from_event_data_are_capped():
    m, log = wired(max_label_values=3)
    for i in range(10):
        log.emit("rejected", tenant="acme", reason=f"reason{i}")
    s = await samples(m)
    reasons = {dict(k[1])["reason"] for k in s if k[0] == "mta_rejected_total"}
    assert reasons == {"reason0", "reason1", "reason2", "other"}


async def test_a_malformed_record_does_not_break_emit():
    m, log = wired()
    log.emit("received", id=None, tenant=object(), size="big")  # odd types: counted or skipped
    log.emit("received", id=MSG_ID, tenant="acme", recipient="a@x.test", size=5)
    s = await samples(m)
    assert value(s, "mta_recipients_received_total", tenant="acme") == 1


async def test_scrape_time_gauges_sync_async_failing_and_slow():
    m = Metrics(callback_timeout=0.2)
    m.add_gauge("mta_test_plain", "a number", lambda: 7)
    m.add_gauge("mta_test_by_state", "by label", lambda: {("a",): 1, ("b",): 2}, ["state"])

    async def later() -> float:
        await asyncio.sleep(0)
        return 3.5

    async def stuck() -> float:
        await asyncio.sleep(10)
        return 0.0

    m.add_gauge("mta_test_async", "awaited", later)
    m.add_gauge("mta_test_broken", "raises", lambda: 1 / 0)
    m.add_gauge("mta_test_stuck", "times out", stuck)
    m.add_gauge("mta_test_count", "a counter kept elsewhere", lambda: 41, kind="counter")
    s = await asyncio.wait_for(samples(m), 5)  # the stuck callback is cut at 0.2 s
    assert value(s, "mta_test_plain") == 7
    assert value(s, "mta_test_by_state", state="b") == 2
    assert value(s, "mta_test_async") == 3.5
    assert value(s, "mta_test_count_total") == 41
    assert ("mta_test_broken", frozenset()) not in s
    assert value(s, "mta_metrics_callback_errors_total", metric="mta_test_broken") == 1
    assert value(s, "mta_metrics_callback_errors_total", metric="mta_test_stuck") == 1


async def test_two_instances_do_not_share_a_registry():
    a, log_a = wired()
    b, _ = wired()
    log_a.emit("received", id=MSG_ID, tenant="acme", recipient="x@y.test", size=1)
    assert value(await samples(a), "mta_recipients_received_total", tenant="acme") == 1
    assert value(await samples(b), "mta_recipients_received_total", tenant="acme") == 0


async def test_hook_histograms():
    m = Metrics()
    m.observe_ingest(0.004, "smtp")
    m.observe_commit(0.002, 37)
    m.observe_dns(0.03, "MX", "nxdomain")
    m.observe_dkim(0.0008, "rsa-sha256")
    s = await samples(m)
    assert value(s, "mta_ingest_latency_seconds_count", protocol="smtp") == 1
    assert value(s, "mta_spool_commit_seconds_count") == 1
    assert value(s, "mta_spool_commit_batch_size_bucket", le="32.0") == 0
    assert value(s, "mta_spool_commit_batch_size_bucket", le="64.0") == 1
    assert value(s, "mta_dns_lookup_seconds_count", type="MX", outcome="nxdomain") == 1
    assert value(s, "mta_dkim_sign_seconds_count", algorithm="rsa-sha256") == 1


async def test_queue_gauges_from_a_real_spool(tmp_path):
    from mta.queue import Scheduler

    spool = await Spool.open(tmp_path / "spool")
    try:
        env = Envelope(tenant="acme", mail_from="s@x.test",
                       recipients=[Recipient("a@dest.test"), Recipient("b@dest.test")],
                       received_at=ACCEPTED)
        await spool.put(env, b"Subject: x\r\n\r\nbody\r\n")
        m = Metrics(clock=lambda: ACCEPTED + 600)
        m.watch_queue(spool, Scheduler())
        s = await samples(m)
        assert value(s, "mta_queue_recipients", state="queued") == 2
        assert value(s, "mta_scheduler_recipients", state="ready") == 0
        assert abs(value(s, "mta_queue_oldest_message_age_seconds") - 600) < 1
        assert value(s, "mta_spool_commits_total") >= 1
    finally:
        await spool.close()
