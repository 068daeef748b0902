"""TLS-RPT (RFC 8460) for tests: the report schema, checked field by field, and an HTTPS
report receiver (aiohttp on a 127.0.0.x address, certificate from a test CA).

    check_report(report, domain="a.test", day=date(2026, 12, 7))   # AssertionError if not
    rx = ReportReceiver(ca.server_context("rua.b.test"), "127.0.0.11")
    await rx.start()       # rx.port; rx.posts: [(path, content type, body bytes)]
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from typing import Any

from aiohttp import web

__all__ = ["RESULT_TYPES", "ReportReceiver", "check_report"]

# RFC 8460 4.3 (and the IANA registry it creates).
RESULT_TYPES = {
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_FAILURE_KEYS = {"result-type", "sending-mta-ip", "receiving-mx-hostname",
                 "receiving-mx-helo", "receiving-ip", "failed-session-count",
                 "additional-information", "failure-reason-code"}


def _ip(value: Any) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_report(report: Any, *, domain: str, day: dt.date) -> None:
    """RFC 8460 4.4: every required field, with its JSON type; the date range is the
    UTC day; the summary adds up to the failure details."""
    assert isinstance(report, dict), report
    for key in ("organization-name", "date-range", "contact-info", "report-id", "policies"):
        assert key in report, f"missing {key}"
    assert set(report) <= {"organization-name", "date-range", "contact-info", "report-id",
                           "policies"}, set(report)
    for key in ("organization-name", "contact-info", "report-id"):
        assert isinstance(report[key], str) and report[key], key
    rng = report["date-range"]
    assert set(rng) == {"start-datetime", "end-datetime"}, rng
    assert all(_RFC3339.fullmatch(v) for v in rng.values()), rng
    start = dt.datetime.fromisoformat(rng["start-datetime"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(rng["end-datetime"].replace("Z", "+00:00"))
    assert start == dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), start
    assert dt.timedelta(hours=23, minutes=59) <= end - start <= dt.timedelta(days=1), end
    assert isinstance(report["policies"], list) and report["policies"]
    for entry in report["policies"]:
        assert set(entry) <= {"policy", "summary", "failure-details"}, set(entry)
        policy = entry["policy"]
        assert policy["policy-type"] in ("sts", "tlsa", "no-policy-found"), policy
        assert policy["policy-domain"] == domain, policy
        if "policy-string" in policy:
            assert isinstance(policy["policy-string"], list)
            assert all(isinstance(s, str) for s in policy["policy-string"])
        if "mx-host" in policy:
            assert isinstance(policy["mx-host"], list)
            assert all(isinstance(s, str) for s in policy["mx-host"])
        summary = entry["summary"]
        assert set(summary) == {"total-successful-session-count",
                                "total-failure-session-count"}, summary
        assert all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in summary.values()), summary
        details = entry.get("failure-details", [])
        assert isinstance(details, list)
        for d in details:
            assert set(d) <= _FAILURE_KEYS, set(d) - _FAILURE_KEYS
            assert d["result-type"] in RESULT_TYPES, d
            assert isinstance(d["failed-session-count"], int) and d["failed-session-count"] > 0
            for key in ("sending-mta-ip", "receiving-ip"):
                if key in d:
                    assert _ip(d[key]), d
            for key in ("receiving-mx-hostname", "receiving-mx-helo", "failure-reason-code",
                        "additional-information"):
                if key in d:
                    assert isinstance(d[key], str) and d[key], d
        assert summary["total-failure-session-count"] == sum(
            d["failed-session-count"] for d in details), entry


class ReportReceiver:
    """An https rua: takes POSTs at any path, answers `status` (200 by default)."""

    def __init__(self, tls_context: ssl.SSLContext, host: str = "127.0.0.11") -> None:
        self.tls_context = tls_context
        self.host = host
        self.port = 0
        self.status = 200
        self.posts: list[tuple[str, str, bytes]] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append((request.path, request.headers.get("Content-Type", ""), body))
        return web.Response(status=self.status, text="thanks")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
