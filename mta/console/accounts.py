"""Console accounts: who may sign in, with which role, and the run-time account management
that the `admin` role is for.

Two sources, looked up in this order:

- the config file's [console.accounts.NAME]: listed everywhere, never changed at run time
  (edit the file and reload with SIGHUP; every run-time change of such a name is refused
  with `config_account`);
- run-time accounts (the console's Accounts page, `mta console accounts`, the admin API
  /api/v1/admin/console/accounts): records in the policy store's keyed records
  (mta.policy.kv, namespace "console_accounts": policy.db, or the cluster's Redis), so
  every worker and node sharing the store sees an account, its role, its password and its
  removal at the next request: a lookup reads the store, nothing is cached.

Record: key = account name, value = JSON {"role", "tenant", "password" (the scrypt hash
`mta passwd` prints), "disabled", "created", "by", "stamp"}. `stamp` is drawn afresh at
creation and at each password reset; a session remembers the stamp it signed in with, so
a new password, a removed account (or one removed and made again) ends every session of
the old one, on every node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mta.config.console import ROLES, ConsoleAccountConfig
from mta.smtp.auth import DEFAULT_LN, hash_password, verify_password

__all__ = ["MIN_PASSWORD", "NAMESPACE", "Account", "AccountError", "Accounts"]

NAMESPACE = "console_accounts"
MIN_PASSWORD = 8  # for a password given in clear (a hash given as such is taken as is)
MAX_ACCOUNTS = 10_000  # a console is for people, not a directory
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Checked for unknown names, so "no such account" costs as long as "wrong password".
_DUMMY_HASH = f"$scrypt$ln={DEFAULT_LN},r=8,p=1${'A' * 22}${'A' * 43}"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str  # viewer | operator | admin
    tenant: str | None  # a tenant portal account sees this tenant only
    source: str = "config"  # config | runtime
    stamp: str = ""  # changes with the password: sessions of an older stamp are void

    @property
    def can_act(self) -> bool:
        """Hold, release, delete, flush, bounce, suspend: operators and admins, never a
        viewer and never a tenant's portal account."""
        return self.tenant is None and self.role in ("operator", "admin")

    @property
    def can_manage(self) -> bool:
        """Create, change and remove console accounts: admins only."""
        return self.tenant is None and self.role == "admin"


class AccountError(ValueError):
    """Refused: `status` and `code` are the admin API's answer (the console shows the
    message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AccountError(400, "bad_account", f"not an account name: {name!r} (letters, "
                           "digits and _.@-, at most 64)")
    return name


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise AccountError(400, "bad_role", f"role: must be one of {', '.join(ROLES)}")
    return str(role)


async def password_hash(hashed: Any = None, plain: Any = None) -> str:
    """The scrypt hash to store: `hashed` as `mta passwd` prints it, else `plain` hashed
    here (in a thread: ~50 ms of CPU)."""
    if isinstance(hashed, str) and hashed.startswith("$scrypt$") and hashed.count("$") == 4:
        return hashed
    if isinstance(plain, str) and plain:
        if len(plain) < MIN_PASSWORD:
            raise AccountError(400, "weak_password",
                               f"the password must have at least {MIN_PASSWORD} characters")
        return await asyncio.to_thread(hash_password, plain)
    raise AccountError(400, "bad_field", "password_hash (as `mta passwd` prints) or "
                       "password is required")


def _config_stamp(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()[:16]


class Accounts:
    def __init__(self, accounts: Mapping[str, ConsoleAccountConfig], *, kv: Any = None,
                 events: Any = None) -> None:
        self.kv = kv  # mta.policy.kv.PolicyKV, or None: config accounts only
        self.events = events
        # Does a tenant exist (the policy's tenants)? Set by attach().
        self.tenant_exists: Callable[[str], Awaitable[bool]] | None = None
        # Called with an account name whose sessions must end now (this process).
        self.on_ended: list[Callable[[str], None]] = []
        self.reload(accounts)

    def attach(self, kv: Any, tenant_exists: Callable[[str], Awaitable[bool]] | None) -> None:
        self.kv, self.tenant_exists = kv, tenant_exists

    def reload(self, accounts: Mapping[str, ConsoleAccountConfig]) -> None:
        self.config = dict(accounts)

    def __len__(self) -> int:
        return len(self.config)

    # --- lookups ---------------------------------------------------------------------

    def _from_config(self, name: str) -> Account | None:
        a = self.config.get(name)
        if a is None:
            return None
        return Account(name, "viewer" if a.tenant else a.role, a.tenant or None, "config",
                       _config_stamp(a.password))

    async def record(self, name: str) -> dict[str, Any] | None:
        if self.kv is None:
            return None
        raw = await self.kv.get(NAMESPACE, name)
        return None if raw is None else dict(json.loads(raw))

    async def records(self) -> dict[str, dict[str, Any]]:
        if self.kv is None:
            return {}
        return {k: json.loads(v) for k, v in (await self.kv.items(NAMESPACE)).items()}

    @staticmethod
    def _from_record(name: str, rec: dict[str, Any]) -> Account:
        tenant = rec.get("tenant") or None
        return Account(name, "viewer" if tenant else rec["role"], tenant, "runtime",
                       str(rec.get("stamp", "")))

    async def get(self, name: str) -> Account | None:
        """The account as it is now (a role changed anywhere applies at the next
        request); None when unknown or disabled."""
        account = self._from_config(name)
        if account is not None:
            return account
        rec = await self.record(name)
        if rec is None or rec.get("disabled"):
            return None
        return self._from_record(name, rec)

    async def check(self, name: str, password: str) -> Account | None:
        a = self.config.get(name)
        hashed = a.password if a is not None else None
        rec = None
        if hashed is None:
            rec = await self.record(name) if _NAME_RE.match(name) else None
            if rec is not None and not rec.get("disabled"):
                hashed = rec.get("password")
        # scrypt costs ~50 ms of CPU: a thread, not the loop.
        ok = await asyncio.to_thread(verify_password, password, hashed or _DUMMY_HASH)
        if not ok or hashed is None:
            return None
        return self._from_config(name) if a is not None else self._from_record(name, rec or {})

    async def describe(self) -> list[dict[str, Any]]:
        """Every account, config and run-time, as the API lists it (never a hash)."""
        out = [{"name": n, "role": "viewer" if a.tenant else a.role,
                "tenant": a.tenant or None, "source": "config", "disabled": False,
                "created": None, "by": None} for n, a in self.config.items()]
        out += [self.public(n, r) for n, r in (await self.records()).items()
                if n not in self.config]
        return sorted(out, key=lambda a: a["name"])

    @staticmethod
    def public(name: str, rec: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "role": rec["role"], "tenant": rec.get("tenant") or None,
                "source": "runtime", "disabled": bool(rec.get("disabled")),
                "created": rec.get("created"), "by": rec.get("by")}

    # --- changes (the console's Accounts page, the admin API) --------------------------

    def _store(self) -> Any:
        if self.kv is None:
            raise AccountError(503, "accounts_unavailable",
                               "run-time console accounts need the policy store")
        return self.kv

    async def _existing(self, name: str) -> dict[str, Any]:
        check_name(name)
        if name in self.config:
            raise AccountError(409, "config_account", f"{name!r} is a [console.accounts] "
                               "entry of the config file: change it there and reload "
                               "(SIGHUP)")
        rec = await self.record(name)
        if rec is None:
            raise AccountError(404, "not_found", f"no run-time console account {name!r}")
        return rec

    async def _put(self, name: str, rec: dict[str, Any]) -> None:
        await self._store().put(NAMESPACE, name, json.dumps(rec, sort_keys=True))

    def _emit(self, event: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit(event, **fields)

    def _end_sessions(self, name: str) -> None:
        for listener in self.on_ended:
            listener(name)

    async def add(self, name: Any, *, role: Any = "viewer", tenant: Any = None,
                  password: str, by: str) -> dict[str, Any]:
        """A new run-time account; `password` is the scrypt hash (see password_hash)."""
        kv = self._store()
        name = check_name(name)
        tenant = tenant or None
        if tenant is not None:
            if not isinstance(tenant, str) or not _NAME_RE.match(tenant):
                raise AccountError(400, "bad_tenant", f"not a tenant name: {tenant!r}")
            if self.tenant_exists is not None and not await self.tenant_exists(tenant):
                raise AccountError(404, "not_found", f"no tenant {tenant!r}")
            role = "viewer"  # a portal account reads its own tenant, nothing else
        role = check_role(role)
        if name in self.config or await self.record(name) is not None:
            raise AccountError(409, "account_exists", f"there is a console account "
                               f"{name!r} already")
        if len(await kv.items(NAMESPACE)) >= MAX_ACCOUNTS:
            raise AccountError(409, "too_many_accounts",
                               f"at most {MAX_ACCOUNTS} run-time accounts")
        rec = {"role": role, "tenant": tenant, "password": password, "disabled": False,
               "created": round(time.time(), 3), "by": by, "stamp": secrets.token_hex(8)}
        await self._put(name, rec)
        self._emit("console_account_added", account=name, role=role, tenant=tenant, by=by)
        return self.public(name, rec)

    async def set_role(self, name: str, role: Any, *, by: str) -> dict[str, Any]:
        rec = await self._existing(name)
        role = check_role(role)
        if rec.get("tenant"):
            raise AccountError(409, "tenant_account", f"{name!r} is tenant "
                               f"{rec['tenant']}'s portal account: it has no role")
        rec["role"] = role
        await self._put(name, rec)
        self._emit("console_account_changed", account=name, change="role", role=role, by=by)
        return self.public(name, rec)

    async def set_password(self, name: str, password: str, *, by: str) -> dict[str, Any]:
        rec = await self._existing(name)
        rec["password"], rec["stamp"] = password, secrets.token_hex(8)
        await self._put(name, rec)
        self._end_sessions(name)  # elsewhere: the stamp no longer matches
        self._emit("console_account_changed", account=name, change="password", by=by)
        return self.public(name, rec)

    async def set_disabled(self, name: str, disabled: bool, *, by: str) -> dict[str, Any]:
        rec = await self._existing(name)
        rec["disabled"] = disabled
        await self._put(name, rec)
        if disabled:
            self._end_sessions(name)
        self._emit("console_account_changed", account=name,
                   change="disabled" if disabled else "enabled", by=by)
        return self.public(name, rec)

    async def remove(self, name: str, *, by: str) -> dict[str, Any]:
        rec = await self._existing(name)
        await self._store().delete(NAMESPACE, name)
        self._end_sessions(name)
        self._emit("console_account_removed", account=name, by=by)
        return self.public(name, rec)
