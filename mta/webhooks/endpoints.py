"""Webhook endpoints: where a tenant's (or the operator's) events are posted.

Kept in the policy store's keyed records (namespace "webhooks", mta/policy/kv.py), so they
survive restarts and every node of a cluster posts to the same endpoints. `Endpoints` is
the registry; each node re-reads it every `REFRESH` seconds and at once after a change it
made itself.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import urllib.parse
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mta.policy.kv import PolicyKV
from mta.webhooks.sign import new_secret

__all__ = ["ALL", "Endpoint", "EndpointError", "Endpoints", "check_url"]

NS = "webhooks"
ALL = "*"
_EVENT = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
MAX_URL = 2048


class EndpointError(ValueError):
    """A URL, filter or tenant an endpoint cannot have; the message says which."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    secret: str
    # None: the operator's endpoint, every tenant's events. A tenant's endpoint also gets
    # its sub-accounts' events.
    tenant: str | None = None
    events: tuple[str, ...] = (ALL,)
    enabled: bool = True
    created_at: float = 0.0
    description: str = ""
    disabled_reason: str = ""
    # Who added it: a tenant's endpoint is held to the private-address rule when posted.
    added_by_tenant: bool = False

    def wants(self, event: str) -> bool:
        return ALL in self.events or event in self.events

    def public(self) -> dict[str, Any]:
        """What list/get show: everything but the secret."""
        d = asdict(self)
        del d["secret"]
        d["events"] = list(self.events)
        return d

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        d = json.loads(text)
        d["events"] = tuple(d.get("events") or (ALL,))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def check_url(url: Any, *, allow_private: bool = True) -> str:
    """An http(s) URL with a host; with allow_private=False, not an IP literal (or
    "localhost") in loopback, private, link-local or unspecified space."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise EndpointError(f"url: must be an http or https URL of at most {MAX_URL} "
                            "characters")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise EndpointError(f"url: must be an http or https URL with a host, not {url!r}")
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise EndpointError(f"url: {e}") from None
    if not allow_private and not public_host(u.hostname):
        raise EndpointError(f"url: {u.hostname} is a local or private address; a "
                            "tenant's endpoint must be reachable on the internet")
    return url


def public_host(host: str) -> bool:
    """False for localhost and for loopback, private, link-local, reserved or
    unspecified IP literals; True for any other name (resolved later, at connect)."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain") or \
            host.lower().endswith(".localhost"):
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return public_ip(ip)


def public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                or ip.is_unspecified or ip.is_multicast)


def check_events(events: Any) -> tuple[str, ...]:
    if events is None:
        return (ALL,)
    if isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    if not isinstance(events, list | tuple) or not events:
        raise EndpointError('events: must be a list of event names, or ["*"]')
    for e in events:
        if not isinstance(e, str) or not (e == ALL or _EVENT.match(e)):
            raise EndpointError(f"events: not an event name: {e!r}")
    return tuple(dict.fromkeys(events))


@dataclass
class Endpoints:
    """The registry of one process, over the store's keyed records."""

    kv: PolicyKV
    REFRESH: float = 5.0
    _all: dict[str, Endpoint] = field(default_factory=dict)
    _read_at: float = 0.0

    async def refresh(self, *, force: bool = False) -> dict[str, Endpoint]:
        now = time.monotonic()
        if force or now - self._read_at >= self.REFRESH:
            items = await self.kv.items(NS)
            out: dict[str, Endpoint] = {}
            for key, text in items.items():
                try:
                    out[key] = Endpoint.from_json(text)
                except (ValueError, TypeError):
                    continue  # a record this version cannot read is left alone
            self._all, self._read_at = out, now
        return self._all

    @property
    def cached(self) -> dict[str, Endpoint]:
        return self._all

    async def add(self, url: str, *, tenant: str | None, events: Any = None,
                  description: str = "", added_by_tenant: bool = False,
                  allow_private: bool = True) -> Endpoint:
        from mta.webhooks.sign import new_webhook_id

        ep = Endpoint(id="ep_" + new_webhook_id()[4:20], url=check_url(
                          url, allow_private=allow_private or not added_by_tenant),
                      secret=new_secret(), tenant=tenant, events=check_events(events),
                      created_at=round(time.time(), 3), description=str(description)[:200],
                      added_by_tenant=added_by_tenant)
        await self.kv.put(NS, ep.id, ep.to_json())
        await self.refresh(force=True)
        return ep

    async def get(self, ep_id: str) -> Endpoint | None:
        text = await self.kv.get(NS, ep_id)
        return Endpoint.from_json(text) if text else None

    async def remove(self, ep_id: str) -> bool:
        done = await self.kv.delete(NS, ep_id)
        await self.refresh(force=True)
        return done

    async def set_enabled(self, ep_id: str, enabled: bool, reason: str = "") -> Endpoint | None:
        ep = await self.get(ep_id)
        if ep is None:
            return None
        ep = replace(ep, enabled=enabled, disabled_reason="" if enabled else reason)
        await self.kv.put(NS, ep.id, ep.to_json())
        await self.refresh(force=True)
        return ep
