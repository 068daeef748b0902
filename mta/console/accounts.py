"""Console accounts ([console.accounts.NAME]): roles, and checking a password off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from mta.config.console import ConsoleAccountConfig
from mta.smtp.auth import DEFAULT_LN, verify_password

__all__ = ["Account", "Accounts"]

# Checked for unknown names, so "no such account" costs as long as "wrong password".
_DUMMY_HASH = f"$scrypt$ln={DEFAULT_LN},r=8,p=1${'A' * 22}${'A' * 43}"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str  # viewer | operator | admin
    tenant: str | None  # a tenant portal account sees this tenant only

    @property
    def can_act(self) -> bool:
        """Hold, release, delete, flush, bounce, suspend: operators and admins, never a
        viewer and never a tenant's portal account."""
        return self.tenant is None and self.role in ("operator", "admin")


class Accounts:
    def __init__(self, accounts: Mapping[str, ConsoleAccountConfig]) -> None:
        self.reload(accounts)

    def reload(self, accounts: Mapping[str, ConsoleAccountConfig]) -> None:
        self._cfg = dict(accounts)

    def __len__(self) -> int:
        return len(self._cfg)

    def get(self, name: str) -> Account | None:
        """The account as the config says now (a role changed by SIGHUP applies at once)."""
        a = self._cfg.get(name)
        if a is None:
            return None
        return Account(name, "viewer" if a.tenant else a.role, a.tenant or None)

    async def check(self, name: str, password: str) -> Account | None:
        a = self._cfg.get(name)
        hashed = a.password if a is not None else _DUMMY_HASH
        # scrypt costs ~50 ms of CPU: a thread, not the loop.
        ok = await asyncio.to_thread(verify_password, password, hashed)
        return self.get(name) if ok and a is not None else None
