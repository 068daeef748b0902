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

    def configured(self) -> list[Tenant]:
        return list(self._config.values())

    async def get(self, name: str) -> Tenant | None:
        t = self._config.get(name)
        if t is None:
            t = await self._store.get_tenant(name)
        if t is None and name == "default":
            t = Tenant("default")
        return t

    def known_chain(self, name: str) -> tuple[Tenant, ...] | None:
        """The chain of a tenant made only of configured tenants, once `chain` has built
        it (it never changes); None otherwise (ask `chain`)."""
        return self._config_chains.get(name)

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
