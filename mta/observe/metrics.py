"""Prometheus metrics: counters from the events stream, gauges at scrape time, histograms.

Owns every metric mta exports and the rules that keep their label sets small.

Where the numbers come from:
- Counters are derived from the events log (`Metrics.attach(events)` subscribes to
  `EventLog.listeners`), so the metrics and the log the operator reads can never disagree,
  and no other module keeps counters of its own.
- Gauges are computed when Prometheus scrapes: the daemon registers callbacks
  (`add_gauge`, `watch_queue`) and `/metrics` awaits `render()`, which calls each of them
  (async ones with a deadline, so a slow spool query cannot hang a scrape).
- Histograms are fed by hooks other packages call: `observe_ingest` (end of DATA -> 250),
  `observe_commit` (spool group commit: seconds and batch size), `observe_dns`,
  `observe_dkim`; delivery latency (acceptance -> delivered) comes from the `delivered`
  event: the queue id encodes the acceptance time (`mta.queue.ids.id_time`, re-implemented
  here as one line because observe must not import queue).

Bounded label cardinality (a metric series per tenant or per site would otherwise grow
with the customer base and the Internet):
- `tenant`: only tenants named at construction (the configured ones plus "default") or
  added with `add_tenant`; any other value is reported as "other", and a missing tenant
  (refused before AUTH) as "none".
- `site`: a site gets its own series once it has seen `site_promote_after` delivery
  outcomes, and at most `top_sites` sites ever get one (so the big receivers, which reach
  the threshold first, are named); every other outcome counts under site="other".
  Counts from before a site's promotion stay under "other", which `rate()` tolerates.
- Every other label taken from event data (reason, category, event) is a code constant,
  but is still capped at `max_label_values` distinct values per metric, the rest "other".

One `Metrics` owns one `CollectorRegistry` (never the process-global one), so a test can
hold two daemons' metrics side by side.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter as _Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger("mta.observe.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OTHER = "other"
NONE = "none"

# Buckets, in seconds. Ingest is dominated by one fsync (sub-ms on NVMe, ~10 ms on disks,
# more under a batch); delivery spans the retry schedule, from seconds up to [delivery]
# max_age (5 days by default).
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Batch sizes up to [spool] max_batch (512 by default).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DELIVERY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600,
                    12 * 3600, 86400, 2 * 86400, 5 * 86400)
DNS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
THROTTLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DKIM_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

# A scrape must answer even if a callback is stuck (Prometheus' default timeout is 10s).
CALLBACK_TIMEOUT = 5.0

# A gauge callback returns one value, or values by label values (a tuple, one per label).
GaugeValue = float | int | Mapping[tuple[str, ...], float | int]
GaugeCallback = Callable[[], GaugeValue | Awaitable[GaugeValue]]


def _id_time(queue_id: str) -> float | None:
    """Acceptance time encoded in a queue id (see mta.queue.ids): 12 hex digits of ms."""
    try:
        return int(queue_id[:12], 16) / 1000.0 if len(queue_id) == 18 else None
    except ValueError:
        return None


class _Bounded:
    """A label whose values are capped: the first `limit` distinct values, then "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        v = str(value) if value not in (None, "") else NONE
        if v in self.seen:
            return v
        if len(self.seen) < self.limit:
            self.seen.add(v)
            return v
        return OTHER


class _Sites:
    """Top-N sites: promoted after `threshold` outcomes, at most `top` of them."""

    def __init__(self, top: int, threshold: int) -> None:
        self.top = top
        self.threshold = threshold
        self.named: set[str] = set()
        # Pre-promotion tallies, bounded: when full, the smallest half is forgotten (the
        # sites that matter come back quickly).
        self._tally: _Tally[str] = _Tally()

    def __call__(self, site: object) -> str:
        s = str(site) if site else NONE
        if s in self.named:
            return s
        if len(self.named) >= self.top:
            return OTHER
        self._tally[s] += 1
        if self._tally[s] >= self.threshold:
            self.named.add(s)
            del self._tally[s]
            return s
        if len(self._tally) > 10_000:
            for name, _ in self._tally.most_common()[5_000:]:
                del self._tally[name]
        return OTHER


@dataclass(slots=True)
class _Gauge:
    name: str
    help: str
    labels: tuple[str, ...]
    callback: GaugeCallback
    kind: str  # "gauge" | "counter"


class _ScrapeCollector(Collector):
    """Yields the values the last `Metrics.refresh()` computed."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class Metrics:
    """Every metric of one daemon, in its own registry."""

    def __init__(self, *, tenants: Iterable[str] = ("default",), top_sites: int = 20,
                 site_promote_after: int = 100, max_label_values: int = 50,
                 clock: Callable[[], float] = time.time,
                 callback_timeout: float = CALLBACK_TIMEOUT) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.callback_timeout = callback_timeout
        self._tenants = set(tenants)
        self._site = _Sites(top_sites, max(1, site_promote_after))
        self._max_label_values = max_label_values
        self._bounded: dict[str, _Bounded] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._last_received_id: str | None = None
        self._gauges: list[_Gauge] = []
        self._scrape = _ScrapeCollector()
        self.registry.register(self._scrape)
        r = self.registry

        # --- ingress -----------------------------------------------------------------
        self.messages_received = Counter(
            "mta_messages_received", "Messages accepted (queued), by tenant.",
            ["tenant"], registry=r)
        self.recipients_received = Counter(
            "mta_recipients_received", "Recipients accepted (queued), by tenant.",
            ["tenant"], registry=r)
        self.received_bytes = Counter(
            "mta_received_bytes", "Size of accepted messages, by tenant.",
            ["tenant"], registry=r)
        self.rejected = Counter(
            "mta_rejected", "Ingress refusals (connection, command, recipient or message), "
            "by tenant and reason.", ["tenant", "reason"], registry=r)
        self.suppressed = Counter(
            "mta_recipients_suppressed", "Recipients dropped by policy (suppression list, "
            "duplicates), by tenant.", ["tenant"], registry=r)
        # --- delivery ----------------------------------------------------------------
        self.delivered = Counter(
            "mta_recipients_delivered", "Recipients delivered, by tenant and site.",
            ["tenant", "site"], registry=r)
        self.deferred = Counter(
            "mta_recipients_deferred", "Temporary delivery failures (each attempt), by "
            "tenant, site and category.", ["tenant", "site", "category"], registry=r)
        self.bounced = Counter(
            "mta_recipients_bounced", "Recipients bounced, by tenant, site and category.",
            ["tenant", "site", "category"], registry=r)
        self.expired = Counter(
            "mta_recipients_expired", "Recipients expired in the queue, by tenant.",
            ["tenant", "category"], registry=r)
        self.delivered_tls = Counter(
            "mta_delivered_tls", "Recipients delivered, by the TLS version of the session "
            "(\"none\": in the clear).", ["tls"], registry=r)
        self.delivery_tls = Counter(
            "mta_delivery_tls", "Delivery attempts (per recipient: delivered, deferred or "
            "bounced), by the TLS policy applied (a [delivery] tls mode, mta-sts-enforce, "
            "mta-sts-testing) and whether the MX certificate was verified.",
            ["policy", "verified"], registry=r)
        self.feedback_reports = Counter(
            "mta_feedback_reports", "Inbound reports and unsubscribes for the bounce "
            "domains (dsn, arf, unsubscribe, other), by outcome (recorded, ignored, "
            "refused).", ["kind", "outcome"], registry=r)
        self.throttle_delay = Histogram(
            "mta_throttle_delay_seconds", "Time a message waited for a rate limit before "
            "delivery, by limit name.", ["limit"], buckets=THROTTLE_BUCKETS, registry=r)
        self.content_verdicts = Counter(
            "mta_content_verdicts", "Content checks in which a rule matched, an action was "
            "taken or the scanner failed, by tenant and action (none, tag, hold, tempfail, "
            "reject).", ["tenant", "action"], registry=r)
        self.content_rule_hits = Counter(
            "mta_content_rule_hits", "Messages each content rule matched, by rule name.",
            ["rule"], registry=r)
        self.shaping_changes = Counter(
            "mta_shaping_changes", "Adaptive shaping changes (decrease, increase, suspend, "
            "resume) on delivery paths, by kind.", ["kind"], registry=r)
        self.events = Counter(
            "mta_events", "Every event written to the events log, by event name.",
            ["event"], registry=r)
        self.callback_errors = Counter(
            "mta_metrics_callback_errors", "Scrape-time gauge callbacks that failed or "
            "timed out.", ["metric"], registry=r)
        # --- latencies ---------------------------------------------------------------
        self.ingest_latency = Histogram(
            "mta_ingest_latency_seconds", "End of message data to the positive reply "
            "(policy, signing, spool commit), by protocol.", ["protocol"],
            buckets=INGEST_BUCKETS, registry=r)
        self.commit_latency = Histogram(
            "mta_spool_commit_seconds", "Duration of one spool group commit (with fsync).",
            buckets=COMMIT_BUCKETS, registry=r)
        self.commit_batch = Histogram(
            "mta_spool_commit_batch_size", "Operations written by one spool group commit.",
            buckets=BATCH_BUCKETS, registry=r)
        self.delivery_latency = Histogram(
            "mta_delivery_latency_seconds", "Acceptance to delivery of a recipient, by "
            "tenant.", ["tenant"], buckets=DELIVERY_BUCKETS, registry=r)
        self.dns_latency = Histogram(
            "mta_dns_lookup_seconds", "DNS lookups sent to a server (cache misses), by "
            "record type and outcome.", ["type", "outcome"], buckets=DNS_BUCKETS, registry=r)
        self.dkim_latency = Histogram(
            "mta_dkim_sign_seconds", "Time to compute one DKIM signature, by algorithm.",
            ["algorithm"], buckets=DKIM_BUCKETS, registry=r)

    # --- labels --------------------------------------------------------------------------

    def add_tenant(self, name: str) -> None:
        """Give a tenant created at run time (admin API) its own series."""
        self._tenants.add(name)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client validates and locks on
        every `labels()` call, which cost more than the rest of counting an event. Label
        values are bounded (see the module doc), so this map is too."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def tenant(self, value: object) -> str:
        if value in (None, ""):
            return NONE
        return str(value) if value in self._tenants else OTHER

    def _label(self, metric: str, value: object) -> str:
        b = self._bounded.get(metric)
        if b is None:
            b = self._bounded[metric] = _Bounded(self._max_label_values)
        return b(value)

    # --- the events stream ---------------------------------------------------------------

    def _tls(self, record: Mapping[str, Any]) -> None:
        """mta_delivery_tls_total: attempts that carry the TLS policy applied."""
        policy = record.get("tls_policy")
        if policy:
            verified = "true" if record.get("tls_verified") is True else "false"
            self._child(self.delivery_tls, self._label("tls_policy", policy),
                        verified).inc()

    def attach(self, events: Any) -> None:
        """Count every record of an `EventLog` from now on."""
        events.listeners.append(self.on_event)

    def on_event(self, record: Mapping[str, Any]) -> None:
        """One events-log record. Never raises: metrics must not break the mail flow."""
        try:
            self._on_event(record)
        except Exception:  # a malformed record is logged, not propagated into emit()
            log.exception("metrics: cannot count event %r", record.get("event"))

    def _on_event(self, record: Mapping[str, Any]) -> None:
        event = str(record.get("event", ""))
        self._child(self.events, self._label("event", event)).inc()
        get = record.get
        if event == "received":
            tenant = self.tenant(get("tenant"))
            self._child(self.recipients_received, tenant).inc()
            # Ingress writes one `received` line per recipient, one message's lines in a
            # row: a new id is a new message.
            msg_id = get("id")
            if msg_id != self._last_received_id:
                self._last_received_id = msg_id
                self._child(self.messages_received, tenant).inc()
                size = get("size")
                if isinstance(size, int) and size >= 0:
                    self._child(self.received_bytes, tenant).inc(size)
        elif event == "rejected":
            self._child(self.rejected, self.tenant(get("tenant")),
                                 self._label("reason", get("reason"))).inc()
        elif event in ("suppressed", "duplicate"):
            self._child(self.suppressed, self.tenant(get("tenant"))).inc()
        elif event == "delivered":
            tenant = self.tenant(get("tenant"))
            self._child(self.delivered, tenant, self._site(get("site"))).inc()
            if get("tls"):
                self._child(self.delivered_tls, self._label("tls", get("tls"))).inc()
            self._tls(record)
            accepted = _id_time(str(get("id", "")))
            when = get("time")
            if accepted is not None and isinstance(when, int | float):
                self._child(self.delivery_latency, tenant).observe(max(0.0, when - accepted))
        elif event == "deferred":
            self._tls(record)
            self._child(self.deferred, self.tenant(get("tenant")), self._site(get("site")),
                                 self._label("category", get("category"))).inc()
        elif event == "bounced":
            self._tls(record)
            self._child(self.bounced, self.tenant(get("tenant")), self._site(get("site")),
                                self._label("category", get("category"))).inc()
        elif event == "feedback":
            self._child(self.feedback_reports, self._label("kind", get("kind")),
                        self._label("outcome", get("outcome"))).inc()
        elif event == "content":
            self._child(self.content_verdicts, self.tenant(get("tenant")),
                        self._label("content_action", get("action"))).inc()
            for rule in get("rules") or ():
                self._child(self.content_rule_hits, self._label("content_rule", rule)).inc()
        elif event == "shaping":
            self._child(self.shaping_changes, self._label("kind", get("kind"))).inc()
        elif event == "expired":
            self._child(self.expired, self.tenant(get("tenant")),
                                self._label("category", get("category"))).inc()

    # --- hooks other packages call -------------------------------------------------------

    def observe_ingest(self, seconds: float, protocol: str = "smtp") -> None:
        """End of DATA (or of the HTTP request body) to the positive reply."""
        self._child(self.ingest_latency, self._label("protocol", protocol)).observe(seconds)

    def observe_commit(self, seconds: float, batch: int) -> None:
        """One spool group commit: its duration (fsync included) and operations in it."""
        self.commit_latency.observe(seconds)
        self.commit_batch.observe(batch)

    def observe_dns(self, seconds: float, rtype: str = "MX", outcome: str = "ok") -> None:
        """One DNS query sent to a server: rtype "MX"/"A"/"AAAA"/"TXT", outcome "ok",
        "nxdomain", "nodata", "servfail", "timeout"."""
        self.dns_latency.labels(self._label("dns_type", rtype),
                                self._label("dns_outcome", outcome)).observe(seconds)

    def observe_throttle(self, seconds: float, limit: str) -> None:
        """A message waited `seconds` for the rate limit named `limit`."""
        self._child(self.throttle_delay, self._label("limit", limit)).observe(seconds)

    def observe_dkim(self, seconds: float, algorithm: str = "rsa-sha256") -> None:
        self.dkim_latency.labels(self._label("dkim_algorithm", algorithm)).observe(seconds)

    # --- scrape-time gauges --------------------------------------------------------------

    def add_gauge(self, name: str, help: str, callback: GaugeCallback,
                  labels: Iterable[str] = (), *, kind: str = "gauge") -> None:
        """Register a value computed at each scrape. `callback` (sync or async) returns a
        number, or {label values tuple: number} when `labels` are given. `kind="counter"`
        exports a monotonic count kept elsewhere (e.g. the spool's commit counter)."""
        if kind not in ("gauge", "counter"):
            raise ValueError("kind must be 'gauge' or 'counter'")
        self._gauges.append(_Gauge(name, help, tuple(labels), callback, kind))

    def watch_queue(self, spool: Any, scheduler: Any, *, cost_factor: float = 10.0) -> None:
        """The queue gauges, from a `Spool` and a `Scheduler` (duck-typed: observe sits
        below queue). Scheduler counts are in memory. The spool's GROUP BY queries are
        reused for `cost_factor` times as long as they took, so a large spool (slow
        queries) is counted less often, and a small one is always current."""
        cache: dict[str, Any] = {"until": 0.0, "stats": None}

        async def stats() -> dict[str, dict[str, int]]:
            now = time.monotonic()
            if cache["stats"] is None or now >= cache["until"]:
                cache["stats"] = await spool.stats()
                done = time.monotonic()
                cache["until"] = done + cost_factor * (done - now)
            return cache["stats"]

        async def by_state() -> dict[tuple[str, ...], int]:
            return {(state,): n for state, n in (await stats())["recipients"].items()}

        async def oldest() -> float:
            # Ids sort by acceptance time: the first queued message is the oldest.
            first = await spool.list(state="queued", limit=1)
            return max(0.0, self.clock() - first[0].received_at) if first else 0.0

        self.add_gauge("mta_queue_recipients", "Recipients in the spool, by state.",
                       by_state, ["state"])
        self.add_gauge("mta_scheduler_recipients", "Work items in the delivery schedule: "
                       "ready now, or deferred until a retry time.",
                       lambda: {("ready",): scheduler.ready_total,
                                ("deferred",): scheduler.deferred_total}, ["state"])
        self.add_gauge("mta_queue_oldest_message_age_seconds",
                       "Age of the oldest message with recipients still queued.", oldest)
        if hasattr(spool, "commits"):
            self.add_gauge("mta_spool_commits", "Spool group commits.",
                           lambda: spool.commits, kind="counter")
            self.add_gauge("mta_spool_committed_operations",
                           "Operations (puts, outcome records) written by group commits.",
                           lambda: spool.committed_ops, kind="counter")

    async def refresh(self) -> None:
        """Compute every scrape-time value (called by `render`)."""
        families: list[Metric] = []
        for g in self._gauges:
            try:
                value = g.callback()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, self.callback_timeout)
            except Exception:
                log.warning("metrics: callback for %s failed", g.name, exc_info=True)
                self.callback_errors.labels(g.name).inc()
                continue
            family_type = CounterMetricFamily if g.kind == "counter" else GaugeMetricFamily
            family = family_type(g.name, g.help, labels=g.labels)
            if isinstance(value, Mapping):
                for label_values, v in value.items():
                    family.add_metric([str(x) for x in label_values], float(v))
            else:
                family.add_metric([], float(value))
            families.append(family)
        self._scrape.families = families

    async def render(self) -> bytes:
        """The text exposition format (what `GET /metrics` returns)."""
        await self.refresh()
        return generate_latest(self.registry)
