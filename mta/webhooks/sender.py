"""Posting one batch to one endpoint: signed (mta.webhooks.sign), bounded in time, never
following redirects, and for a tenant's endpoint never to a private address (the resolver
below refuses names that resolve there, so DNS cannot point a tenant at the admin API).

`post()` returns a `Result` instead of raising: the outbox decides what a failure means.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from mta.webhooks.endpoints import Endpoint, public_ip
from mta.webhooks.sign import headers

__all__ = ["Result", "Sender"]

USER_AGENT = "mta-webhooks/1"
_READ_LIMIT = 64 * 1024  # of a receiver's reply body, kept for the error text


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int = 0  # 0: no HTTP answer (refused, timed out, reset)
    error: str = ""
    retry_after: float = 0.0  # what a 429 or 503 asked for
    seconds: float = 0.0

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint no longer exists (Standard Webhooks)."""
        return self.status == 410


class PublicResolver(AbstractResolver):
    """The threaded (getaddrinfo) resolver, keeping only public addresses."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if public_ip(ipaddress.ip_address(r["host"]))]
        if not kept:
            raise OSError(f"{host} resolves only to local or private addresses")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        return max(0.0, when.timestamp() - time.time())


class Sender:
    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._open: aiohttp.ClientSession | None = None
        self._public: aiohttp.ClientSession | None = None

    def _session(self, ep: Endpoint) -> aiohttp.ClientSession:
        if ep.added_by_tenant and not self.allow_private:
            if self._public is None:
                self._public = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(resolver=PublicResolver(), limit=100))
            return self._public
        if self._open is None:
            self._open = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        return self._open

    async def post(self, ep: Endpoint, webhook_id: str, body: bytes) -> Result:
        hdrs = headers(ep.secret, webhook_id, int(time.time()), body)
        hdrs["user-agent"] = USER_AGENT
        start = time.monotonic()
        try:
            async with self._session(ep).post(
                    ep.url, data=body, headers=hdrs, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                text = (await resp.content.read(_READ_LIMIT)).decode("utf-8", "replace")
                took = time.monotonic() - start
                if 200 <= resp.status < 300:
                    return Result(True, resp.status, seconds=took)
                retry = (_retry_after(resp.headers.get("Retry-After"))
                         if resp.status in (429, 503) else 0.0)
                return Result(False, resp.status, f"HTTP {resp.status} {resp.reason or ''}"
                              f"{': ' + text.strip()[:200] if text.strip() else ''}".strip(),
                              retry, took)
        except TimeoutError:
            return Result(False, 0, f"no answer within {self.timeout:g} s",
                          seconds=time.monotonic() - start)
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return Result(False, 0, f"{type(e).__name__}: {e}"[:300],
                          seconds=time.monotonic() - start)

    async def aclose(self) -> None:
        for s in (self._open, self._public):
            if s is not None:
                await s.close()
        self._open = self._public = None
