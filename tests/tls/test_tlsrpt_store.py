"""TLS-RPT counting and the daily job against the real stores: policy.db (SQLite) over a
restart, and one Redis (DB 41) shared by several workers or nodes; reports posted to a
real HTTPS receiver on 127.0.0.11 with a test CA, sent once whatever the number of nodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import secrets
from types import SimpleNamespace

import pytest
import pytest_asyncio

from mta.clock import ManualClock
from mta.config import parse_config
from mta.dns import TestResolver, TlsaAnswer
from mta.policy.kv import MemoryKV, kv_for
from mta.policy.redis_store import RedisStore
from mta.policy.sqlite_store import SqliteStore
from mta.tls import StsPolicy, TlsRequirement, TlsSessions, choose, dane_host
from mta.tls.report import FailureDetail, ReportPolicy
from mta.tls.reporting import DONE_NS, TlsReporter
from mta.tls.rpt_store import SessionCounts
from tests.support.tls import TestCA
from tests.support.tlsrpt import ReportReceiver, check_report

DAY = dt.date(2026, 12, 7)
NOON = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC).timestamp()
STS = ReportPolicy("sts", "a.test", ("version: STSv1", "mode: enforce", "mx: mx.a.test",
                                     "max_age: 86400"), ("mx.a.test",))
BAD = FailureDetail("certificate-host-mismatch", receiving_mx_hostname="mx.a.test",
                    receiving_ip="127.0.0.3")


@pytest_asyncio.fixture
async def redis_kv(redis_url):
    """A policy store in Redis DB 41, under a prefix of this test's own."""
    stores = []

    async def open_kv():
        store = await RedisStore.open(redis_url.rsplit("/", 1)[0] + "/41",
                                      prefix=f"t{prefix}:")
        stores.append(store)
        return kv_for(store)

    prefix = secrets.token_hex(4)
    yield open_kv
    for s in stores:
        await s.aclose()


async def _totals(counts: SessionCounts) -> dict:
    out = {}
    for (day, domain), records in (await counts.days()).items():
        for pc in await counts.load(records):
            out[(day, domain, pc.policy.type)] = (pc.successes, dict(pc.failures))
    return out


async def test_counts_survive_a_restart_in_policy_db(tmp_path):
    store = await SqliteStore.open(tmp_path / "policy.db")
    counts = SessionCounts(kv_for(store))
    for _ in range(3):
        counts.add(DAY, STS, None)
    counts.add(DAY, STS, BAD)
    assert counts.pending == 4
    await counts.flush()
    assert counts.pending == 0
    counts.add(DAY, STS, None)
    await counts.flush()
    await store.aclose()

    store = await SqliteStore.open(tmp_path / "policy.db")  # a new process
    try:
        assert await _totals(SessionCounts(kv_for(store))) == {
            (DAY, "a.test", "sts"): (4, {BAD: 1})}
    finally:
        await store.aclose()


async def test_workers_and_nodes_add_up_in_one_redis(redis_kv):
    """Four processes (workers of two nodes) count the same day concurrently."""
    procs = [SessionCounts(await redis_kv()) for _ in range(4)]
    for i, c in enumerate(procs):
        for _ in range(10 + i):
            c.add(DAY, STS, None)
        c.add(DAY, STS, BAD, n=i)
    await asyncio.gather(*(c.flush() for c in procs))
    for c in procs:  # a second round: records already written, counters only
        c.add(DAY, STS, None)
    await asyncio.gather(*(c.flush() for c in procs))
    reader = SessionCounts(await redis_kv())
    assert await _totals(reader) == {(DAY, "a.test", "sts"): (10 + 11 + 12 + 13 + 4,
                                                              {BAD: 0 + 1 + 2 + 3})}


class _Down(MemoryKV):
    broken = True

    async def add_many(self, ns, items):
        if self.broken:
            raise ConnectionError("store down")
        await super().add_many(ns, items)


async def test_counts_wait_out_a_store_outage():
    kv = _Down()
    counts = SessionCounts(kv)
    counts.add(DAY, STS, None, n=2)
    with pytest.raises(ConnectionError):
        await counts.flush()
    assert counts.pending == 2
    kv.broken = False
    counts.add(DAY, STS, None)
    await counts.flush()
    assert await _totals(counts) == {(DAY, "a.test", "sts"): (3, {})}


# --- what a session counts as ---------------------------------------------------------------

class _Client:
    """The fields of a delivery session TlsSessions reads (mta.delivery.client)."""

    def __init__(self, host: str, address: str, *, verified: bool, error: str = "") -> None:
        self.host, self.address = host, address
        self.tls_active, self.tls_verified, self.tls_error = True, verified, error

    @property
    def local_address(self):
        return ("127.0.0.1", 40000)


def _sessions(policy: StsPolicy | None, **kw) -> tuple[TlsSessions, SessionCounts]:
    counts = SessionCounts(MemoryKV())
    return TlsSessions(counts, ManualClock(NOON), lambda d: policy, **kw), counts


async def test_a_reused_connection_counts_once_per_policy_domain():
    policy = StsPolicy("enforce", 86400, ("mx.a.test",))
    sessions, counts = _sessions(policy)
    req = choose("a.test", "opportunistic", policy)
    conn = _Client("mx.a.test", "127.0.0.2", verified=True)
    for _ in range(3):
        sessions.used(req, conn)  # three messages over one connection
    sessions.used(req, _Client("mx.a.test", "127.0.0.2", verified=True))
    other = choose("b.test", "opportunistic", policy)
    sessions.used(other, conn)  # the same connection carries b.test's mail too
    await counts.flush()
    totals = await _totals(counts)
    assert totals[(DAY, "a.test", "sts")] == (2, {})
    assert totals[(DAY, "b.test", "sts")] == (1, {})


async def test_testing_failure_and_enforce_refusals():
    testing = StsPolicy("testing", 86400, ("mx.a.test",))
    sessions, counts = _sessions(testing)
    req = choose("a.test", "opportunistic", testing)
    sessions.used(req, _Client("mx.a.test", "127.0.0.3", verified=False, error=(
        "TLS handshake with mx.a.test[127.0.0.3] failed: [SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: Hostname mismatch, certificate is not valid for "
        "'mx.a.test'. (_ssl.c:1010)")))
    enforce = choose("a.test", "opportunistic", StsPolicy("enforce", 86400, ("mx.a.test",)))
    attempts = [
        SimpleNamespace(host="mx.other.test", address="", policy=True, reply=SimpleNamespace(
            text="MTA-STS policy of a.test (enforce): MX host mx.other.test does not match "
                 "the policy (mx: mx.a.test)")),
        SimpleNamespace(host="mx.a.test", address="127.0.0.9", policy=False,
                        reply=SimpleNamespace(text="connection refused")),  # no TLS session
    ]
    sessions.refused(enforce, attempts, "127.0.0.1")
    await counts.flush()
    [(_, failures)] = (await _totals(counts)).values()
    assert {(f.result_type, f.receiving_mx_hostname, f.receiving_ip): n
            for f, n in failures.items()} == {
        ("certificate-host-mismatch", "mx.a.test", "127.0.0.3"): 1,
        ("validation-failure", "mx.other.test", ""): 1}


async def test_dane_sessions_are_tlsa_policies_with_the_host_s_records():
    # RFC 8461 2: where DANE decides for an MX host, its session is reported under the
    # "tlsa" policy with that host's records, whatever the domain's MTA-STS policy says.
    sts = StsPolicy("enforce", 86400, ("*.a.test",))
    sessions, counts = _sessions(sts)
    tlsa = "3 1 1 " + "ab" * 32
    hosts = (dane_host(TlsaAnswer("mx1.a.test", "secure", (tlsa,), ("mx1.a.test",))),
             dane_host(TlsaAnswer("mx2.a.test", "none")))
    req = choose("a.test", "opportunistic", sts, dane=True, dane_hosts=hosts)
    sessions.used(req, _Client("mx1.a.test", "127.0.0.2", verified=True))
    sessions.used(req, _Client("mx2.a.test", "127.0.0.3", verified=True))  # MTA-STS's
    sessions.refused(req, [SimpleNamespace(
        host="mx1.a.test", address="127.0.0.2", policy=True, result_type="validation-failure",
        reply=SimpleNamespace(text="DANE for MX host mx1.a.test of a.test: TLSA records "
                                   "of mx1.a.test[127.0.0.2] do not match its certificate"))],
        "127.0.0.1")
    await counts.flush()
    totals = await _totals(counts)
    assert totals[(DAY, "a.test", "sts")] == (1, {})
    ok, failures = totals[(DAY, "a.test", "tlsa")]
    assert ok == 1
    assert {(f.result_type, f.receiving_mx_hostname): n for f, n in failures.items()} == {
        ("validation-failure", "mx1.a.test"): 1}
    [records] = (await counts.days()).values()
    [policy] = [pc.policy for pc in await counts.load(records) if pc.policy.type == "tlsa"]
    assert (policy.strings, policy.mx_hosts) == ((tlsa,), ("mx1.a.test",))
    assert policy.to_json()["policy-string"] == [tlsa]


async def test_no_policy_counts_only_when_asked():
    sessions, counts = _sessions(None)
    req = TlsRequirement("opportunistic", "opportunistic", "plain.test")
    sessions.used(req, _Client("mx.plain.test", "127.0.0.5", verified=False))
    sessions.no_policy = True
    sessions.used(req, _Client("mx.plain.test", "127.0.0.5", verified=False))
    await counts.flush()
    assert await _totals(counts) == {(DAY, "plain.test", "no-policy-found"): (1, {})}


# --- the daily job --------------------------------------------------------------------------

@pytest_asyncio.fixture
async def receiver(tmp_path):
    ca = TestCA(tmp_path / "ca")
    rx = ReportReceiver(ca.server_context("rua.a.test"), "127.0.0.11")
    await rx.start()
    yield ca, rx
    await rx.stop()


def _reporter(kv, ca: TestCA, rx: ReportReceiver, clock: ManualClock, events: list,
              mails: list) -> TlsReporter:
    cfg = parse_config(f"""
[server]
hostname = "mta.test"
[tls]
ca_file = "{ca.ca_file}"
[tls.reports]
enabled = true
organization = "Test Platform"
contact = "mailto:tlsrpt@mta.test"
report_from = "tlsrpt@mta.test"
send_after = "0s"
flush_interval = "50ms"
http_attempts = 2
http_retry = "10ms"
""")
    resolver = TestResolver({
        "a.test": f'_smtp._tls IN TXT "v=TLSRPTv1; rua=https://rua.a.test:{rx.port}/r,'
                  'mailto:tlsrpt@rua.a.test"\nrua IN A 127.0.0.11\n',
        "quiet.test": "@ IN MX 10 mx\nmx IN A 127.0.0.2\n",
    })

    async def submit(envelope, body):
        mails.append((envelope, body))
        return f"Q{len(mails)}"

    return TlsReporter(cfg, kv, resolver, clock=clock,
                       emit=lambda event, **f: events.append({"event": event, **f}),
                       submit=submit, sts_policy=lambda d: None, leader=True)


async def _run_until_sent(reporters) -> int:
    async with asyncio.timeout(10):
        while True:
            sent = sum(await asyncio.gather(*(r.run_once() for r in reporters)))
            if sent:
                return sent
            await asyncio.sleep(0.05)


async def test_each_day_is_reported_once_by_one_of_many_nodes(redis_kv, receiver):
    ca, rx = receiver
    clock, events, mails = ManualClock(NOON), [], []
    nodes = [_reporter(await redis_kv(), ca, rx, clock, events, mails) for _ in range(3)]
    try:
        for node in nodes:
            node.counts.add(DAY, STS, None, n=2)
        nodes[0].counts.add(DAY, STS, BAD)
        nodes[1].counts.add(DAY, ReportPolicy("sts", "quiet.test"), None)  # no TLSRPT record
        # Before the day is over nothing goes.
        assert sum(await asyncio.gather(*(n.run_once() for n in nodes))) == 0
        clock.set(dt.datetime(2026, 12, 8, 0, 0, 1, tzinfo=dt.UTC))
        assert await _run_until_sent(nodes) == 1
        for _ in range(3):  # and never again, on any node
            assert sum(await asyncio.gather(*(n.run_once() for n in nodes))) == 0
    finally:
        for n in nodes:
            await n.aclose()
    [(path, ctype, body)] = rx.posts
    assert path == "/r" and ctype == "application/tlsrpt+gzip"
    report = json.loads(gzip.decompress(body))
    check_report(report, domain="a.test", day=DAY)
    [entry] = report["policies"]
    assert entry["summary"] == {"total-successful-session-count": 6,
                                "total-failure-session-count": 1}
    # The mailto rua got the same report, as a message for the local queue.
    [(envelope, raw)] = mails
    assert envelope.mail_from == "tlsrpt@mta.test"
    assert [r.address for r in envelope.recipients] == ["tlsrpt@rua.a.test"]
    assert b"TLS-Report-Domain: a.test" in raw
    sent = sorted((e["method"], e["rua"]) for e in events if e["event"] == "tls_report_sent")
    assert sent == [("https", f"https://rua.a.test:{rx.port}/r"),
                    ("mailto", "mailto:tlsrpt@rua.a.test")]
    done = await (await redis_kv()).items(DONE_NS)
    assert json.loads(done["2026-12-07|a.test"])["status"] == "sent"
    assert json.loads(done["2026-12-07|quiet.test"])["status"] == "no-record"


async def test_https_failure_is_retried_then_reported_failed(receiver):
    ca, rx = receiver
    rx.status = 503
    clock, events, mails = ManualClock(NOON), [], []
    node = _reporter(MemoryKV(), ca, rx, clock, events, mails)
    try:
        node.counts.add(DAY, STS, None)
        clock.set(dt.datetime(2026, 12, 8, 1, tzinfo=dt.UTC))
        assert await _run_until_sent([node]) == 1  # the mailto one went
    finally:
        await node.aclose()
    assert len(rx.posts) == 2  # http_attempts
    [failed] = [e for e in events if e["event"] == "tls_report_failed"]
    assert failed["method"] == "https" and failed["reason"] == "HTTP 503"


async def test_a_policy_that_could_not_be_fetched_is_a_failed_session():
    sessions, counts = _sessions(None)
    for detail in ("https://mta-sts.a.test/.well-known/mta-sts.txt: HTTP 404",
                   "https://mta-sts.a.test/.well-known/mta-sts.txt: certificate: "
                   "Hostname mismatch, certificate is not valid for 'mta-sts.a.test'"):
        sessions.on_event({"event": "mta_sts", "domain": "a.test", "outcome": "failed",
                           "id": "1", "detail": detail})
    sessions.on_event({"event": "mta_sts", "domain": "a.test", "outcome": "fetched"})
    await counts.flush()
    [(_, failures)] = (await _totals(counts)).values()
    assert sorted(f.result_type for f in failures) == ["sts-policy-fetch-error",
                                                       "sts-webpki-invalid"]


async def test_the_sessions_of_reports_are_not_counted():
    policy = StsPolicy("enforce", 86400, ("mx.a.test",))
    sessions, counts = _sessions(policy)
    sessions.report_from = "tlsrpt@mta.test"
    req = choose("a.test", "opportunistic", policy)
    conn = _Client("mx.a.test", "127.0.0.2", verified=True)
    sessions.used(req, conn, sender="tlsrpt@mta.test")
    assert counts.pending == 0
    sessions.used(req, conn, sender="someone@tenant.test")  # the same connection, later
    assert counts.pending == 1


async def test_done_records_are_pruned_after_their_days(receiver):
    ca, rx = receiver
    kv = MemoryKV()
    clock = ManualClock(NOON)
    node = _reporter(kv, ca, rx, clock, [], [])
    try:
        await kv.put(DONE_NS, "2026-11-01|a.test", "{}")
        await kv.put(DONE_NS, "2026-12-06|a.test", "{}")
        await node.run_once()
    finally:
        await node.aclose()
    assert list(await kv.items(DONE_NS)) == ["2026-12-06|a.test"]
