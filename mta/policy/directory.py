"""Tenant lookup: config tenants first, then tenants created at run time in the store.

The `default` tenant (clients in [smtp] relay_networks) exists even when not configured,
with no plan and no limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from mta.policy.store import PolicyStore
from mta.policy.tenants import Tenant, tenant_from_config

__all__ = ["MAX_DEPTH", "PolicyError", "TenantDirectory"]

# Account -> sub-account -> sub-sub-account is already more than platforms offer.
MAX_DEPTH = 4


class PolicyError(Exception):
    """An administrative request that cannot be done (unknown tenant, bad amount...)."""


class TenantDirectory:
    def __init__(self, configured: Mapping[str, object], store: PolicyStore) -> None:
        self._config = {name: tenant_from_config(name, tc) for name, tc in configured.items()}
        self._store = store
        # Chains made only of configured tenants never change (MAIL FROM asks each time).
        self._config_chains: dict[str, tuple[Tenant, ...]] = {}
        # The last chain built from the store's cache, per tenant: handed out again while
        # its links are the same objects, so the engine's memo of limits sees the same
        # tuple (hashing a chain costs more than building it).
        self._cached_chains: dict[str, tuple[Tenant, ...]] = {}
        self._cached_tenant = getattr(store, "cached_tenant", None)
        self._default = Tenant("default")

    def configured(self) -> list[Tenant]:
        return list(self._config.values())

    async def get(self, name: str) -> Tenant | None:
        t = self._config.get(name)
        if t is None:
            t = await self._store.get_tenant(name)
        if t is None and name == "default":
            t = self._default
        return t

    def known_chain(self, name: str) -> tuple[Tenant, ...] | None:
        """`chain` without awaiting, when every link is configured or in the store's
        cache (the usual case at MAIL FROM); None when one must be read, or the chain is
        wrong (ask `chain`, which reads and says why)."""
        known = self._config_chains.get(name)
        if known is not None:
            return known
        if self._cached_tenant is None:
            return None
        out: list[Tenant] = []
        cur: str = name
        while cur:
            if len(out) > MAX_DEPTH or any(t.name == cur for t in out):
                return None
            t = self._config.get(cur)
            if t is None:
                hit, t = self._cached_tenant(cur)
                if not hit:
                    return None
                if t is None and cur == "default":
                    t = self._default
                if t is None:
                    return None
            out.append(t)
            cur = t.parent
        last = self._cached_chains.get(name)
        if last is not None and len(last) == len(out) and all(
                a is b for a, b in zip(last, out, strict=True)):
            return last
        if len(self._cached_chains) >= 1024:
            self._cached_chains.clear()
        chain = self._cached_chains[name] = tuple(out)
        return chain

    async def chain(self, name: str) -> tuple[Tenant, ...]:
        """The tenant and its ancestors, nearest first. PolicyError if unknown or cyclic."""
        known = self._config_chains.get(name)
        if known is not None:
            return known
        out: list[Tenant] = []
        cur: str = name
        while cur:
            if len(out) > MAX_DEPTH or any(t.name == cur for t in out):
                raise PolicyError(f"tenant {name!r}: parent chain loops or is deeper "
                                  f"than {MAX_DEPTH}")
            t = await self.get(cur)
            if t is None:
                if not out:
                    raise PolicyError(f"unknown tenant {name!r}")
                raise PolicyError(f"tenant {out[-1].name!r}: unknown parent {cur!r}")
            out.append(t)
            cur = t.parent
        chain = tuple(out)
        if all(self._config.get(t.name) is t for t in chain):
            self._config_chains[name] = chain
        return chain

    async def create(self, tenant: Tenant) -> None:
        if tenant.name in self._config:
            raise PolicyError(f"tenant {tenant.name!r} is defined in the configuration file")
        if tenant.parent:
            await self.chain(tenant.parent)  # the parent must exist
        await self._store.put_tenant(tenant)

    async def delete(self, name: str) -> bool:
        if name in self._config:
            raise PolicyError(f"tenant {name!r} is defined in the configuration file")
        return await self._store.delete_tenant(name)

    async def all(self) -> list[Tenant]:
        return [*self._config.values(), *await self._store.list_tenants()]
