"""TLS-RPT (RFC 8460) for mail mta sends: count every day, report once the day is over.

`TlsReporter` puts the parts together in `mta serve`:
- `sessions` (mta.tls.rpt_collect) is what delivery calls; it counts in memory and a task
  flushes the counts to the policy store every `flush_interval` and at shutdown
  (mta.tls.rpt_store: kept over restarts, shared by workers and nodes);
- on worker 0 of each node, every `check_interval`, `run_once()` reports each (UTC day,
  policy domain) that ended `send_after` ago (on the injected clock) and was not
  reported yet: it builds the report (mta.tls.report), looks up `_smtp._tls.<domain>`
  through mta's resolver and sends the gzip JSON to each rua - mailto as a message queued
  in mta's own spool (DKIM-signed, retried, bounced like any mail; mta.tls.report_mail),
  https as a POST of application/tlsrpt+gzip, tried `http_attempts` times.

Once per day and domain, whatever the number of nodes: a node takes the day's lock in
the store (a counter whose first taker gets 1, expiring if its holder dies) and, when done,
writes a "done" record that every node checks first; a crash between sending and that
record sends the report again (at least once, as mail is). Counts of a day are read
after they settle: the day must have been due for two flush intervals of real time, so
every process's last counts of it are in the store even when a test's clock jumps.

Events: `tls_report_sent` (domain, day, method, rua, report_id, the day's successful and
failed session counts; id: the queue id of a mailed one) and `tls_report_failed` (the
same and `reason`); metric mta_tls_reports_total{method, outcome}.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from mta.clock import Clock
from mta.dns import DnsTemporaryError, Resolver
from mta.queue import Envelope, Recipient
from mta.tls.fetch import _MtaResolver
from mta.tls.policy import StsPolicy
from mta.tls.report import (
    MEDIA_TYPE_GZIP,
    TlsRptRecord,
    build_report,
    encode,
    report_filename,
    select_record,
)
from mta.tls.report_mail import report_message
from mta.tls.rpt_collect import TlsSessions
from mta.tls.rpt_store import SessionCounts

if TYPE_CHECKING:
    from mta.config import Config
    from mta.policy.kv import PolicyKV

__all__ = ["DONE_NS", "LOCK_NS", "TlsReporter"]

log = logging.getLogger("mta.tls")

DONE_NS = "tlsrpt-done"  # "<day>|<domain>" -> {"time", "status", "report_id"}
LOCK_NS = "tlsrpt-lock"  # counter "<day>|<domain>": 1 while a node reports it
_KEEP_DONE = 12  # days a "done" record is kept (longer than the counts live)
_GIVE_UP = 3  # days after which a day whose rua could not be looked up is dropped

# Queues a message (envelope, body) in mta's own spool: the queue id, "" if refused.
Submit = Callable[[Envelope, bytes], Awaitable[str]]


class TlsReporter:
    def __init__(self, cfg: Config, kv: PolicyKV, resolver: Resolver, *, clock: Clock,
                 emit: Callable[..., Any], submit: Submit | None,
                 sts_policy: Callable[[str], StsPolicy | None], leader: bool) -> None:
        self.kv = kv
        self.resolver = resolver
        self.clock = clock
        self.emit = emit
        self.submit = submit
        self.leader = leader  # runs the daily job (worker 0 of its node)
        self.counts = SessionCounts(kv)
        self.sessions = TlsSessions(self.counts, clock, sts_policy)
        self._due_since: dict[tuple[dt.date, str], float] = {}  # monotonic
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._counter: Any = None
        self._pruned: dt.date | None = None  # the day old "done" records were last pruned
        self.reload(cfg)

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rc = cfg.tls.reports
        self.sessions.no_policy = self.rc.no_policy
        self.sessions.report_from = self.rc.report_from
        self.ca_file = cfg.tls.ca_file or cfg.delivery.tls_ca_file
        self.hostname = cfg.server.hostname

    def register_metrics(self, metrics: Any) -> None:
        from prometheus_client import Counter

        self._counter = Counter(
            "mta_tls_reports", "TLS-RPT aggregate reports (RFC 8460) sent or given up, by "
            "method (mailto, https) and outcome (sent, failed).", ["method", "outcome"],
            registry=metrics.registry)

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> TlsReporter:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flusher(), name="tls-rpt flush"))
        if self.leader:
            self._tasks.append(loop.create_task(self._checker(), name="tls-rpt reports"))
        return self

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        try:
            await self.counts.flush()  # the last counts of this process
        except Exception:
            log.exception("TLS-RPT: could not store the last %d session count(s)",
                          self.counts.pending)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.rc.flush_interval)
            try:
                await self.counts.flush()
            except Exception:
                log.exception("TLS-RPT: storing session counts failed; trying again")

    async def _checker(self) -> None:
        while True:
            await asyncio.sleep(self.rc.check_interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("TLS-RPT: the report run failed; trying again later")

    # --- the daily job ---------------------------------------------------------------
    async def run_once(self) -> int:
        """Report every (day, domain) that is due; the number of reports sent."""
        await self.counts.flush()
        now = self.clock.now()
        settle = 2 * self.rc.flush_interval
        sent = 0
        for (day, domain), records in sorted((await self.counts.days()).items()):
            end = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() + 86400
            if now < end + self.rc.send_after:
                continue
            first = self._due_since.setdefault((day, domain), time.monotonic())
            if time.monotonic() - first < settle:
                continue  # other processes' last counts of that day may be on their way
            if await self._report_once(day, domain, records, now):
                sent += 1
            self._due_since.pop((day, domain), None)
        await self._prune_done(now)
        return sent

    async def _report_once(self, day: dt.date, domain: str, records: dict[str, str],
                           now: float) -> bool:
        key = f"{day.isoformat()}|{domain}"
        if await self.kv.get(DONE_NS, key) is not None:
            await self.counts.forget(records)  # reported (by another node, maybe)
            return False
        if await self.kv.count(LOCK_NS, key) > 0:
            return False
        if await self.kv.incr(LOCK_NS, key, 1, self._lock_ttl()) != 1:
            return False  # another node took it first
        try:
            record = select_record(await self.resolver.resolve_txt(f"_smtp._tls.{domain}"))
        except DnsTemporaryError as e:
            if (dt.datetime.fromtimestamp(now, dt.UTC).date() - day).days <= _GIVE_UP:
                log.info("TLS-RPT: _smtp._tls.%s: %s; trying again later", domain, e)
                await self.kv.incr(LOCK_NS, key, -1, self._lock_ttl())  # released
                return False
            record = None
        status, report_id, sent = "no-record", "", False
        if record is not None:
            report_id, sent = await self._send(day, domain, record, records, now)
            status = "sent" if sent else "failed"
        else:
            log.debug("TLS-RPT: %s publishes no TLSRPT record; nothing sent", domain)
        await self.kv.put(DONE_NS, key, json.dumps(
            {"time": now, "status": status, "report_id": report_id}))
        await self.counts.forget(records)
        return sent

    def _lock_ttl(self) -> float:
        rc = self.rc
        return max(600.0, rc.http_attempts * (rc.http_timeout + rc.http_retry) + 120)

    async def _prune_done(self, now: float) -> None:
        """Old "done" records go, once a day (reading them all costs one full scan)."""
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        if self._pruned == today:
            return
        self._pruned = today
        oldest = (today - dt.timedelta(days=_KEEP_DONE)).isoformat()
        for key in await self.kv.items(DONE_NS):
            if key < oldest:
                await self.kv.delete(DONE_NS, key)

    # --- one report --------------------------------------------------------------------
    async def _send(self, day: dt.date, domain: str, record: TlsRptRecord,
                    records: dict[str, str], now: float) -> tuple[str, bool]:
        rc = self.rc
        submitter = rc.domain()
        token = secrets.token_hex(6)
        report_id = f"{day.isoformat()}.{token}.{domain}@{submitter}"
        report = build_report(organization=rc.organization, contact=rc.contact,
                              report_id=report_id, day=day,
                              policies=await self.counts.load(records))
        data = encode(report)
        filename = report_filename(submitter, domain, day, token)
        totals = {"successful": sum(p["summary"]["total-successful-session-count"]
                                    for p in report["policies"]),
                  "failed": sum(p["summary"]["total-failure-session-count"]
                                for p in report["policies"])}
        base = {"domain": domain, "day": day.isoformat(), "report_id": report_id, **totals}
        any_sent = False
        for address in record.mailto:
            msg_id, reason = await self._mail(address, domain, submitter, report_id,
                                              filename, data, day, now)
            any_sent |= self._outcome("mailto", f"mailto:{address}", base, reason, id=msg_id)
        for url in record.https:
            reason = await self._post(url, data)
            any_sent |= self._outcome("https", url, base, reason)
        return report_id, any_sent

    def _outcome(self, method: str, rua: str, base: dict[str, Any], reason: str,
                 **extra: Any) -> bool:
        if self._counter is not None:
            self._counter.labels(method, "failed" if reason else "sent").inc()
        if reason:
            log.warning("TLS-RPT: report for %s to %s not sent: %s", base["domain"], rua,
                        reason)
            self.emit("tls_report_failed", **base, method=method, rua=rua, reason=reason)
            return False
        self.emit("tls_report_sent", **base, method=method, rua=rua, **extra)
        return True

    async def _mail(self, address: str, domain: str, submitter: str, report_id: str,
                    filename: str, data: bytes, day: dt.date, now: float) -> tuple[str, str]:
        if self.submit is None:
            return "", "no local queue to send mail through"
        body = report_message(sender=self.rc.report_from, to=address, domain=domain,
                              submitter=submitter, report_id=report_id, filename=filename,
                              data=data, day=day, now=now)
        envelope = Envelope(tenant="default", mail_from=self.rc.report_from,
                            recipients=[Recipient(address)], client_ip="127.0.0.1",
                            helo="localhost")
        msg_id = await self.submit(envelope, body)
        return (msg_id, "") if msg_id else ("", "the spool did not accept the report")

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
            connector = aiohttp.TCPConnector(resolver=_MtaResolver(self.resolver), ssl=ctx,
                                             limit=8, use_dns_cache=False)
            self._http = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                headers={"User-Agent": f"mta ({self.hostname})"})
        return self._http

    async def _post(self, url: str, data: bytes) -> str:
        """POST the report (RFC 8460 5.4); "" when a 2xx came back, else the last reason."""
        rc = self.rc
        reason = ""
        for attempt in range(rc.http_attempts):
            if attempt:
                await asyncio.sleep(rc.http_retry)
            try:
                async with asyncio.timeout(rc.http_timeout):
                    async with self._session().post(
                            url, data=data, allow_redirects=False,
                            headers={"Content-Type": MEDIA_TYPE_GZIP}) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            return ""
                        reason = f"HTTP {resp.status}"
            except TimeoutError:
                reason = f"no answer within {rc.http_timeout:g}s"
            except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
                reason = str(e) or type(e).__name__
            log.info("TLS-RPT: POST %s (try %d of %d): %s", url, attempt + 1,
                     rc.http_attempts, reason)
        return reason
