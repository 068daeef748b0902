"""Egress paths: one table of (egress source, site) with each path's frozen config and its
connection pool, and the tenant -> egress pool fallback.

A path's settings (`PathSettings`: the shaping rules of mta.shaping.rules, the SMTP client
settings, connection limit, deliveries per connection, port, idle timeout) are resolved
once, when the path is first used, and again only when its rules change: a reload, or a
[shaping."domain"] key learnt to govern the site. Pools keep their connections across a
refresh. Nothing here runs per message.

Routing is decided once, by policy at acceptance (`Envelope.pool`); `config_pool` is the
fallback for messages that carry no decision (queued before the spool had the column, or
accepted without policy): the tenant's configured pool, else its nearest configured
ancestor's, else "default" - what policy decides for configured tenants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from mta.config import Config, TenantConfig
from mta.delivery.client import ClientSettings
from mta.delivery.pool import Admit, ConnectionPool, MxHost
from mta.queue.names import ready_queue_name
from mta.shaping import EgressSource, PathConfig, Shaper

__all__ = ["EgressPath", "PathSettings", "PathTable", "config_pool", "path_settings"]

# Deeper than any platform's account tree (mta.policy.directory.MAX_DEPTH is 4).
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class PathSettings:
    """The frozen config of one path."""

    config: PathConfig
    client: ClientSettings
    port: int
    idle_timeout: float

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def connection_limit(self) -> int:
        return self.config.connection_limit

    @property
    def max_deliveries(self) -> int:
        return self.config.max_deliveries_per_connection


def path_settings(cfg: Config, config: PathConfig, source: EgressSource) -> PathSettings:
    """A path's settings: the shaping rules of (source, site), the client settings they
    imply (the source's EHLO name, else [delivery] ehlo_name / [server] hostname)."""
    base = cfg.delivery.ehlo_name or cfg.server.hostname
    client = ClientSettings(
        ehlo_name=source.ehlo_name or base, tls=config.tls,
        tls_ca_file=cfg.tls.ca_file or cfg.delivery.tls_ca_file, chunking=cfg.delivery.chunking,
        connect_timeout=config.connect_timeout, greeting_timeout=config.greeting_timeout,
        command_timeout=config.command_timeout, data_timeout=config.data_timeout,
        max_recipients_per_transaction=config.max_recipients_per_transaction)
    return PathSettings(config, client, cfg.delivery.port, cfg.delivery.idle_timeout)


@dataclass(slots=True)
class EgressPath:
    """One (source, site) path: its settings and its connections."""

    source: EgressSource
    settings: PathSettings
    pool: ConnectionPool

    @property
    def config(self) -> PathConfig:
        return self.settings.config


@dataclass(slots=True)
class _SitePaths:
    hosts: list[MxHost]
    by_source: dict[str, EgressPath] = field(default_factory=dict)


class PathTable:
    """Every path this process has used, by site, then by source name. `admit(path)`
    makes the pool's hook that admits each new connection (the dispatcher's, through the
    shaper's gate)."""

    def __init__(self, cfg: Config, shaper: Shaper,
                 admit: Callable[[EgressPath], Admit]) -> None:
        self.cfg = cfg
        self.shaper = shaper
        self._admit = admit
        self._sites: dict[str, _SitePaths] = {}

    def set_hosts(self, site: str, hosts: list[MxHost]) -> None:
        """The site's MX hosts (new or re-resolved); its pools dial them from now on."""
        sp = self._sites.get(site)
        if sp is None:
            self._sites[site] = _SitePaths(hosts)
            return
        sp.hosts = hosts
        for p in sp.by_source.values():
            p.pool.hosts = hosts

    def of_site(self, site: str) -> Mapping[str, EgressPath]:
        sp = self._sites.get(site)
        return sp.by_source if sp is not None else {}

    def get(self, site: str, source: EgressSource) -> EgressPath:
        """The path from `source` to `site` (whose hosts are set), made on first use."""
        sp = self._sites[site]
        p = sp.by_source.get(source.name)
        if p is None:
            s = path_settings(self.cfg, self.shaper.path(source.name, site), source)
            pool = ConnectionPool(
                sp.hosts, s.client, port=s.port, source=source.address or None,
                connection_limit=s.connection_limit, max_deliveries_per_connection=(
                    s.max_deliveries), idle_timeout=s.idle_timeout,
                name=ready_queue_name(source.name, site))
            p = sp.by_source[source.name] = EgressPath(source, s, pool)
            pool.admit = self._admit(p)
        return p

    def refresh(self, site: str) -> None:
        """The site's rules changed: resolve its paths' settings again."""
        sp = self._sites.get(site)
        for p in (sp.by_source.values() if sp is not None else ()):
            # The source as configured now (a reload may have moved its address or EHLO
            # name; one no longer configured keeps its last, and is no longer chosen).
            p.source = self.shaper.egress.sources.get(p.source.name, p.source)
            p.settings = path_settings(self.cfg, self.shaper.path(p.source.name, site),
                                       p.source)
            pool = p.pool
            pool.settings = p.settings.client
            pool.max_deliveries = p.settings.max_deliveries
            pool.idle_timeout = p.settings.idle_timeout
            address = p.source.address or None
            if (pool.source, pool.port) != (address, p.settings.port):
                # Sessions from the old address or to the old port are not reused.
                pool.source, pool.port = address, p.settings.port
                pool.renew()
            self.fit_window(p)

    def reload(self, cfg: Config) -> None:
        """A new config (after `Shaper.reload`): every path resolves again."""
        self.cfg = cfg
        for site in self._sites:
            self.refresh(site)

    def fit_window(self, path: EgressPath) -> None:
        """The adaptive window (Postfix-style feedback) caps the pool's connections."""
        path.pool.connection_limit = max(1, min(
            path.settings.connection_limit, self.shaper.adaptive.window(path.config)))

    def capacity(self, site: str) -> int:
        """Connections the site may have at once over every source (its workers' cap)."""
        return max(1, sum(self.shaper.path(src, site).connection_limit
                          for src in self.shaper.egress.sources))

    def keys(self, sites: list[str] | None = None) -> list[str]:
        """Shaping keys ("source->site") of the paths to `sites` (every path if None)."""
        names = self._sites if sites is None else [s for s in sites if s in self._sites]
        return [p.config.key for s in names for p in self._sites[s].by_source.values()]

    def __iter__(self) -> Iterator[EgressPath]:
        for sp in self._sites.values():
            yield from sp.by_source.values()

    @property
    def connection_count(self) -> int:
        """Outbound SMTP connections open now, over every path."""
        return sum(p.pool.open_count for p in self)

    async def aclose(self) -> None:
        for p in self:
            await p.pool.aclose()


def config_pool(tenants: Mapping[str, TenantConfig], tenant: str) -> str:
    """The egress pool of a configured tenant: its own, else its nearest ancestor's, else
    "default" (the fallback for envelopes that carry no routing decision)."""
    name, seen = tenant, 0
    while name and seen < _MAX_DEPTH:
        t = tenants.get(name)
        if t is None:
            break
        if t.pool:
            return t.pool
        name, seen = t.parent, seen + 1
    return "default"
