"""Request limits of the HTTP API: rate and concurrency per API key and per admin token, and
the size of a request body. Two aiohttp middlewares, inside `error_middleware`:

- `ratelimit_middleware`: each principal (one API key of POST /api/v1/messages, or the admin
  token over TCP) has a token bucket, refilled at `rate` requests per second and holding
  `burst`, and at most `concurrency` requests in flight. Past either it answers

      429 {"error": {"code": "rate_limited", "message": ..., "limit": ...}}
      Retry-After: <seconds>

  Every answer to a limited principal carries the fields of the IETF draft
  (draft-ietf-httpapi-ratelimit-headers-09/-10, Structured Fields lists):

      RateLimit-Policy: "key";q=<burst>;w=<seconds to refill the burst>
      RateLimit: "key";r=<requests left now>;t=<seconds until the bucket is full again>

  Keys do not share buckets: one key past its limit leaves every other key alone. The
  local admin socket (trusted by file mode) is never limited. State is per node (each
  node's own memory): a cluster of N nodes serves a key at most N times its rate.
- `auth_failure_middleware` (outside the admin token check): each client address has a
  bucket of authentication failures (`[http] auth_fail_rate` / `auth_fail_burst`); a 401
  takes a token, and while the bucket is empty every request from that address is 429
  `auth_rate_limited` before any key or token is looked at (Postfix's anvil does the same
  for SMTP AUTH). Addresses are whole for IPv4, their /64 for IPv6.
- `body_limit_middleware`: an admin request body over `[http] max_body` (aiohttp's
  client_max_size) is a 413 in the API's JSON form naming the limit. Injection bounds its
  body itself ([smtp] max_message_size, mta.http.inject), as do the routes that stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.callers import is_local
from mta.http.errors import ApiError

__all__ = ["AUTH_FAILURES", "LIMITER", "Limit", "RateLimiter", "RequestLimits",
           "auth_failure_middleware", "body_limit_middleware", "ratelimit_middleware",
           "reload_limits"]

INJECT_PATH = "/api/v1/messages"
# The authenticated tenant of an injection request, found once by the middleware (the
# handler reuses it instead of looking the key up a second time).
REQUEST_TENANT = web.RequestKey("tenant", str)
# The bucket table is pruned past this many principals (full, idle buckets are dropped:
# a fresh bucket is the same thing).
_MAX_PRINCIPALS = 10_000


@dataclass(frozen=True, slots=True)
class Limit:
    """0 turns that part off."""

    rate: float = 0.0  # requests per second
    burst: int = 0  # bucket size; 0 with a rate: one second's worth
    concurrency: int = 0  # requests in flight

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst > 0 else max(1.0, math.ceil(self.rate))

    @property
    def limited(self) -> bool:
        return self.rate > 0 or self.concurrency > 0


@dataclass(frozen=True)
class RequestLimits:
    """What the middlewares apply, from `[http]` and `[tenants.X] api_*` (rebuilt on reload)."""

    api: Limit = Limit()
    admin: Limit = Limit()
    tenants: Mapping[str, Limit] = field(default_factory=dict)
    max_body: int = 1024 * 1024
    auth_fail: Limit = Limit()  # failed authentications per client address

    def for_tenant(self, tenant: str) -> Limit:
        return self.tenants.get(tenant, self.api)

    @classmethod
    def from_config(cls, cfg: Any) -> RequestLimits:
        h = cfg.http
        api = Limit(h.api_rate, h.api_burst, h.api_concurrency)
        tenants = {}
        for name, t in cfg.tenants.items():
            rate, burst, conc = (getattr(t, "api_rate", None), getattr(t, "api_burst", None),
                                 getattr(t, "api_concurrency", None))
            if rate is not None or burst is not None or conc is not None:
                tenants[name] = Limit(api.rate if rate is None else rate,
                                      api.burst if burst is None else burst,
                                      api.concurrency if conc is None else conc)
        return cls(api, Limit(h.admin_rate, h.admin_burst, h.admin_concurrency), tenants,
                   h.max_body, Limit(h.auth_fail_rate, h.auth_fail_burst))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    reason: str = ""  # "rate" | "concurrency" when refused
    retry_after: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Token buckets and in-flight counts per principal. `clock`: monotonic seconds."""

    def __init__(self, limits: RequestLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or RequestLimits()  # replaced on reload
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, principal: str, limit: Limit, now: float) -> _Bucket:
        b = self._buckets.get(principal)
        if b is None:
            if len(self._buckets) >= _MAX_PRINCIPALS:
                self._prune(now, limit)
            b = self._buckets[principal] = _Bucket(limit.capacity, now)
        elif limit.rate > 0:
            b.tokens = min(limit.capacity, b.tokens + (now - b.stamp) * limit.rate)
            b.stamp = now
        else:
            b.tokens, b.stamp = limit.capacity, now
        return b

    def _prune(self, now: float, limit: Limit) -> None:
        for p, b in list(self._buckets.items()):
            if b.in_flight == 0 and (limit.rate <= 0 or
                                     b.tokens + (now - b.stamp) * limit.rate >= limit.capacity):
                del self._buckets[p]

    def acquire(self, principal: str, limit: Limit) -> Decision:
        """Take one request's place, or say why not; `release` after an ok answer."""
        now = self._clock()
        b = self._bucket(principal, limit, now)
        if limit.concurrency > 0 and b.in_flight >= limit.concurrency:
            return Decision(False, "concurrency", 1, self._headers(b, limit))
        if limit.rate > 0:
            if b.tokens < 1.0:
                wait = max(1, math.ceil((1.0 - b.tokens) / limit.rate))
                return Decision(False, "rate", wait, self._headers(b, limit))
            b.tokens -= 1.0
        b.in_flight += 1
        return Decision(True, headers=self._headers(b, limit))

    def exhausted(self, principal: str, limit: Limit) -> int:
        """Seconds until `principal` has a token again (0: it has one now); takes none,
        and makes no bucket for a principal that has none (it has every token)."""
        if limit.rate <= 0 or principal not in self._buckets:
            return 0
        b = self._bucket(principal, limit, self._clock())
        return 0 if b.tokens >= 1.0 else max(1, math.ceil((1.0 - b.tokens) / limit.rate))

    def take(self, principal: str, limit: Limit) -> None:
        """Spend one token (a failure), however many are left."""
        if limit.rate > 0:
            b = self._bucket(principal, limit, self._clock())
            b.tokens = max(0.0, b.tokens - 1.0)

    def release(self, principal: str) -> None:
        b = self._buckets.get(principal)
        if b is not None and b.in_flight > 0:
            b.in_flight -= 1

    @staticmethod
    def _headers(b: _Bucket, limit: Limit) -> dict[str, str]:
        if limit.rate <= 0:
            return {}
        cap = limit.capacity
        window = max(1, math.ceil(cap / limit.rate))
        reset = max(0, math.ceil((cap - b.tokens) / limit.rate))
        return {"RateLimit-Policy": f'"key";q={int(cap)};w={window}',
                "RateLimit": f'"key";r={max(0, math.floor(b.tokens))};t={reset}'}


LIMITER = web.AppKey("rate_limiter", RateLimiter)
# Failed authentications per client address: a table of its own, because a bucket table is
# pruned by one Limit and the keys' buckets follow another.
AUTH_FAILURES = web.AppKey("auth_failures", RateLimiter)


def reload_limits(app: web.Application, cfg: Any) -> None:
    """SIGHUP: new rates for every principal from now on (buckets keep their tokens).
    max_body stays: aiohttp reads client_max_size once, when the app is made."""
    limiter = app[LIMITER]
    limiter.limits = dataclasses.replace(RequestLimits.from_config(cfg),
                                         max_body=limiter.limits.max_body)


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


async def _principal(request: web.Request, limits: RequestLimits) -> tuple[str, Limit] | None:
    """Who this request counts against, or None (not limited, or not authenticated: the
    handler or the admin middleware answers 401 then)."""
    path = request.path
    if path == INJECT_PATH and request.method == "POST":
        key = bearer(request)
        tenant = await request.app[state.API_KEYS].tenant(key)
        if tenant is None:
            return None
        request[REQUEST_TENANT] = tenant
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return "key:" + digest, limits.for_tenant(tenant)
    if path.startswith("/api/v1/admin") and not is_local(request):
        return "admin", limits.admin  # admin_auth_middleware (outside) has checked it
    return None


@web.middleware
async def ratelimit_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    limiter = request.app[LIMITER]
    found = await _principal(request, limiter.limits)
    if found is None or not found[1].limited:
        return await handler(request)
    principal, limit = found
    d = limiter.acquire(principal, limit)
    if not d.ok:
        what = (f"{limit.concurrency} requests in flight" if d.reason == "concurrency" else
                f"{limit.rate:g} requests per second (burst {int(limit.capacity)})")
        raise ApiError(429, "rate_limited", f"too many requests: the limit is {what}; "
                       f"retry after {d.retry_after}s",
                       extra={"limit": {"rate": limit.rate, "burst": int(limit.capacity),
                                        "concurrency": limit.concurrency}},
                       headers={"Retry-After": str(d.retry_after), **d.headers})
    try:
        response = await handler(request)
    except ApiError as e:
        e.headers = {**d.headers, **(e.headers or {})}
        raise
    finally:
        limiter.release(principal)
    for k, v in d.headers.items():
        response.headers.setdefault(k, v)
    return response


def _client(request: web.Request) -> str | None:
    """The bucket of the calling address: the address, or its /64 for IPv6 (one host
    has a whole /64 to pick from)."""
    remote = request.remote
    if not remote:
        return None
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "fail:" + str(ip.ipv4_mapped)
        return "fail:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "fail:" + str(ip)


@web.middleware
async def auth_failure_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    limiter = request.app[AUTH_FAILURES]
    limit = request.app[LIMITER].limits.auth_fail
    client = None if is_local(request) or limit.rate <= 0 else _client(request)
    if client is None:
        return await handler(request)
    wait = limiter.exhausted(client, limit)
    if wait:
        raise ApiError(429, "auth_rate_limited",
                       f"too many failed authentications from this address; retry after "
                       f"{wait}s", headers={"Retry-After": str(wait)})
    try:
        response = await handler(request)
    except ApiError as e:
        if e.status == 401:
            limiter.take(client, limit)
        raise
    if response.status == 401:
        limiter.take(client, limit)
    return response


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large",
                    f"the request body is over the limit of {limit} bytes ([http] max_body)",
                    extra={"limit": limit})


@web.middleware
async def body_limit_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """aiohttp's request.read()/json() stop at client_max_size ([http] max_body) with an
    HTML-ish 413; this one names the limit. Routes that stream a larger body themselves
    (injection, suppression import, content dry runs) keep their own limits and codes."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(request.app[LIMITER].limits.max_body) from None
