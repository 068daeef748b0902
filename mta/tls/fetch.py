"""Fetching an MTA-STS policy file over HTTPS (RFC 8461 3.3), with aiohttp.

Owns the one HTTP client of MTA-STS: `PolicyFetcher.fetch(domain)` GETs
https://mta-sts.<domain>/.well-known/mta-sts.txt and answers its body as text, or raises
`FetchError` saying why. The web server's certificate must chain to the configured CA
bundle (or the system's) and name mta-sts.<domain>; redirects are not followed, only 200
with text/plain counts, and a body over the size limit is refused as soon as it grows
past it. The name is resolved through mta's own resolver ([dns] nameservers), never the
system's, so a test world (or an operator's split view) is the only DNS ever asked.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mta.dns import DnsTemporaryError, Resolver

__all__ = ["FetchError", "PolicyFetcher", "policy_url"]

WELL_KNOWN = "/.well-known/mta-sts.txt"


class FetchError(Exception):
    """No policy came back (DNS, connection, TLS, HTTP status, type, size or timeout)."""


def policy_url(domain: str, port: int = 443) -> str:
    host = f"mta-sts.{domain}"
    return f"https://{host}{'' if port == 443 else f':{port}'}{WELL_KNOWN}"


class _MtaResolver(AbstractResolver):
    """aiohttp's name lookups through mta's resolver (cached, and the configured servers)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            addresses = await self._resolver.resolve_addresses(host)
        except DnsTemporaryError as e:
            raise OSError(f"DNS lookup of {host} failed: {e}") from None
        if not addresses:
            raise OSError(f"{host} has no address")
        out: list[ResolveResult] = []
        for a in addresses:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            out.append({"hostname": host, "host": a, "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST})
        if not out:
            raise OSError(f"{host} has no address of the family asked for")
        return out

    async def close(self) -> None:
        return None


class PolicyFetcher:
    """One aiohttp session for every policy fetch of the process; `aclose()` at the end."""

    def __init__(self, resolver: Resolver, *, ca_file: str = "", timeout: float = 20.0,
                 max_size: int = 64 * 1024, port: int = 443, user_agent: str = "mta") -> None:
        self.resolver = resolver
        self.ca_file = ca_file
        self.timeout = timeout
        self.max_size = max_size
        self.port = port
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Verified TLS (RFC 8461 3.3: a certificate valid for mta-sts.<domain>).
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
            connector = aiohttp.TCPConnector(resolver=_MtaResolver(self.resolver), ssl=ctx,
                                             limit=32, use_dns_cache=False)
            # trust_env=False: no proxy from the environment sees which domains we mail.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                headers={"User-Agent": self.user_agent})
        return self._session

    async def fetch(self, domain: str) -> str:
        url = policy_url(domain, self.port)
        session = self._open()
        try:
            async with asyncio.timeout(self.timeout):
                # RFC 8461 3.3: no redirects, no HTTP caching.
                async with session.get(url, allow_redirects=False,
                                       headers={"Cache-Control": "no-cache"}) as resp:
                    if resp.status != 200:
                        raise FetchError(f"{url}: HTTP {resp.status}")
                    if resp.content_type != "text/plain":
                        raise FetchError(f"{url}: media type {resp.content_type!r}, "
                                         "not text/plain")
                    if (resp.content_length or 0) > self.max_size:
                        raise FetchError(f"{url}: body of {resp.content_length} bytes, "
                                         f"over the limit of {self.max_size}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(16384):
                        body += chunk
                        if len(body) > self.max_size:
                            raise FetchError(f"{url}: body over the limit of {self.max_size} "
                                             "bytes")
        except TimeoutError:
            raise FetchError(f"{url}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise FetchError(f"{url}: certificate: {_cert_reason(e)}") from None
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            raise FetchError(f"{url}: {e or type(e).__name__}") from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError(f"{url}: body is not UTF-8") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _cert_reason(e: Any) -> str:
    err = getattr(e, "certificate_error", None)
    return str(getattr(err, "verify_message", None) or err or e)
